"""The one small interface between a domain and the planner.

A domain turns a map and a robot's task into a `RobotProblem`: factored integer
states, named actions, a vectorised transition model and a task reward. The planner
(`planner.mdp.build_mdp` and `planner.solvers`) only ever sees this interface.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

FeatureKind = Literal["local", "static_global", "dynamic_global"]
FEATURE_KINDS: tuple[str, ...] = ("local", "static_global", "dynamic_global")


@dataclass(frozen=True)
class Feature:
    """One column of a factored state.

    `values` labels each integer value. For a dynamic global feature, value 0 is the
    null value (carries nothing) and never counts towards an NSE.
    """

    name: str
    kind: FeatureKind
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if not self.values:
            raise ValueError(f"feature {self.name!r} has no values")

    def index(self, label: str) -> int:
        try:
            return self.values.index(label)
        except ValueError:
            raise KeyError(f"feature {self.name!r} has no value {label!r}; values: {list(self.values)}") from None


def job_feature(jobs: int) -> Feature:
    """The first feature of a stacked problem (`RobotProblem.stack`): which job a state is of."""
    return Feature("job", "local", tuple(str(j) for j in range(jobs)))


Outcome = tuple[np.ndarray, np.ndarray]  # (next states (B, F), probabilities (B,))


class RobotProblem(ABC):
    """A single robot's task as a factored MDP (transition and reward independent)."""

    features: tuple[Feature, ...]
    actions: tuple[str, ...]
    discount: float

    @abstractmethod
    def start_state(self) -> np.ndarray:
        """The start state as a (F,) integer vector."""

    @abstractmethod
    def transition_outcomes(self, states: np.ndarray, action: int) -> Sequence[Outcome]:
        """Every possible outcome of `action` in each of the (B, F) `states`.

        Returns a list of (next_states, probabilities) pairs; for each state the
        probabilities over the list sum to 1. Called only for non-terminal states.
        """

    @abstractmethod
    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        """R^T(s, a) for each of the (B, F) `states`, shape (B,)."""

    @abstractmethod
    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        """(B,) bool: the task is complete."""

    def stack_key(self):
        """Problems with equal non-None keys can be explored as one (`stack`); None: never."""
        return None

    @classmethod
    def stack(cls, problems: Sequence["RobotProblem"]) -> "RobotProblem":
        """One problem over the states of all `problems` (equal `stack_key`s): a state is
        (j, s) with s a state of problems[j], the job j its first feature (`job_feature`), and every
        outcome keeps j. Its `start_states()` gives each job's start, in job order. A domain
        whose problems differ only in arrays (which shelves, which items) offers it so that
        `planner.mdp.build_mdps` searches many robots' states in one pass: a layer of the
        breadth-first search costs mostly per call, not per state (warehouse: 10-21 robots'
        MDPs built 3.5-4x faster than one by one)."""
        raise NotImplementedError(f"{cls.__name__} problems cannot be stacked")

    def start_states(self) -> np.ndarray:
        """(J, F) the start of each job of a stacked problem (one row otherwise)."""
        return np.asarray(self.start_state()).reshape(1, -1)

    def feature_index(self, name: str) -> int:
        for i, f in enumerate(self.features):
            if f.name == name:
                return i
        raise KeyError(f"no feature named {name!r}")
