"""Value gap and regret gap of a learned joint policy against an expert's (paper 004), exactly.

For a joint policy sigma (one stationary policy per robot) the metareasoner cares about two
things, both computed exactly:

* values: each robot's task value V1^{sigma_i}(s0_i) (policy evaluation) and the fleet's NSE
  penalty J_N(sigma) (the exact monitor);
* regret: what robot i gains on its own task by not following its recommendation. Its best
  deviation on its own task is its task-optimal policy (transition and reward independence:
  nothing the others do changes its task value), so regret_i = V1*(s0_i) - V1^{sigma_i}(s0_i),
  and the joint policy's regret is the largest, max_i regret_i.

The value gap of a learner L against an expert E is what following L instead of E costs: per
robot V1^{E_i} - V1^{L_i} (the paper's value gap is the largest of these) and on the shared
objective J_N(L) - J_N(E). The regret gap is max_i regret_i(L) - max_i regret_i(E): positive
when robots have more to gain by ignoring the learner's recommendations than the expert's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from planner.solvers import policy_evaluation

#: policy evaluation and value iteration agree to ~1e-12; a smaller regret is 0
REGRET_ROUNDING = 1e-9


@dataclass
class JointValues:
    """A joint policy's exact values: per robot task value and regret, and the fleet's J_N."""

    robots: list[str]
    task_values: np.ndarray  # (n,) V1^{pi_i}(s0_i)
    regrets: np.ndarray  # (n,) V1*(s0_i) - V1^{pi_i}(s0_i) >= 0
    nse: float  # J_N

    @property
    def regret(self) -> float:
        """The largest gain any one robot gets by deviating: max_i regret_i."""
        return float(self.regrets.max(initial=0.0))


def joint_values(fleet, policies: Sequence[np.ndarray]) -> JointValues:
    """Exact task values, regrets and J_N of `policies` on `fleet` (mitigation.Fleet)."""
    if len(policies) != len(fleet.plans):
        raise ValueError(f"need one policy per robot ({len(fleet.plans)}), got {len(policies)}")
    cache: dict[tuple, float] = {}
    values = np.empty(len(policies))
    for i, (plan, policy) in enumerate(zip(fleet.plans, policies)):
        policy = np.asarray(policy)
        key = (id(plan.mdp), policy.tobytes())
        if key not in cache:
            cache[key] = float(policy_evaluation(plan.mdp, policy)[plan.mdp.start])
        values[i] = cache[key]
    optimum = np.array([p.task_value for p in fleet.plans])
    regrets = optimum - values
    regrets[regrets <= REGRET_ROUNDING * np.maximum(1.0, np.abs(optimum))] = 0.0
    return JointValues([p.task.robot_id for p in fleet.plans], values, regrets,
                       fleet.exact([np.asarray(p) for p in policies]).total_penalty)


@dataclass
class Gaps:
    """A learner's joint policy against the expert's, on one fleet."""

    expert: JointValues
    learner: JointValues

    @property
    def task_value_gaps(self) -> np.ndarray:
        """(n,) V1^{E_i}(s0) - V1^{L_i}(s0): what following the learner costs each robot's task."""
        return self.expert.task_values - self.learner.task_values

    @property
    def value_gap(self) -> float:
        """The paper's value gap on the robots' own objectives: max_i of `task_value_gaps`."""
        gaps = self.task_value_gaps
        return float(gaps.max()) if len(gaps) else 0.0

    @property
    def nse_gap(self) -> float:
        """J_N(learner) - J_N(expert): the value gap on the fleet's shared NSE objective."""
        return self.learner.nse - self.expert.nse

    @property
    def robot_regret_gaps(self) -> np.ndarray:
        """(n,) regret_i(learner) - regret_i(expert)."""
        return self.learner.regrets - self.expert.regrets

    @property
    def regret_gap(self) -> float:
        """max_i regret_i(learner) - max_i regret_i(expert)."""
        return self.learner.regret - self.expert.regret

    def as_dict(self) -> dict:
        return {"value_gap": self.value_gap, "task_value_gap_total": float(self.task_value_gaps.sum()),
                "nse_gap": self.nse_gap, "nse_expert": self.expert.nse, "nse_learner": self.learner.nse,
                "regret_expert": self.expert.regret, "regret_learner": self.learner.regret,
                "regret_gap": self.regret_gap,
                "robots": [{"id": r, "task_value_gap": float(g), "regret_expert": float(re), "regret_learner": float(rl)}
                           for r, g, re, rl in zip(self.expert.robots, self.task_value_gaps, self.expert.regrets,
                                                   self.learner.regrets)]}


def gaps(fleet, learner: Sequence[np.ndarray], expert: Sequence[np.ndarray]) -> Gaps:
    """Value and regret gaps of the `learner`'s joint policy against the `expert`'s on `fleet`."""
    return Gaps(joint_values(fleet, expert), joint_values(fleet, learner))


__all__ = ["Gaps", "JointValues", "REGRET_ROUNDING", "gaps", "joint_values"]
