"""What a run changed and why, computed by the run itself (api.jobs) and stored with it.

* The exact expected NSE penalty before and after, per step and per zone (`Fleet.exact`), and
  where in a zone it happens: per grid cell, each step's expected penalty of a (zone, value)
  cell shared among the grid cells of the zone in proportion to the robots' expected
  occupancy there (so a zone's cells add up to the zone's total).
* Why each robot was or was not replanned: its score in every round (recorded by wrapping
  the method's strategy), its rank, the round's cut-off, robots tied with the cut-off, and
  whether the acceptance step kept or refused its replan.
"""
from __future__ import annotations

import math

import numpy as np

from planner.solvers import state_distributions

TIE_TOLERANCE = 1e-12  # relative: scores this close to the cut-off are a tie


class RecordingStrategy:
    """A method's strategy that records each round's scores (it delegates everything else)."""

    def __init__(self, inner, log: list) -> None:
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        if name.startswith("_"):  # unpickling asks before _inner exists: no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    def propose(self, context):
        proposal = self._inner.propose(context)
        self._log.append(np.asarray(proposal.scores, dtype=float).copy())
        return proposal

    def __getstate__(self):
        return {"_inner": self._inner, "_log": []}  # a worker process replans; it records nothing

    def __setstate__(self, state):
        self.__dict__.update(state)


def recording(mitigation_class):
    """A subclass of `Mitigation` whose strategy records every round's scores in `.scores`."""

    class Recording(mitigation_class):
        def strategy(self):
            inner = super().strategy()
            if not hasattr(self, "scores"):
                self.scores = []
            return None if inner is None else RecordingStrategy(inner, self.scores)

    Recording.__name__ = f"Recording{mitigation_class.__name__}"
    return Recording


def _behaviours(models):
    """Robots with the same MDP, policy and start behave alike: (firsts, multiplicity)."""
    keys: dict[tuple, int] = {}
    firsts, counts = [], []
    for model in models:
        key = (id(model.mdp), model.policy.tobytes(), model.mdp.start)
        if key not in keys:
            keys[key] = len(firsts)
            firsts.append(model)
            counts.append(0)
        counts[keys[key]] += 1
    return firsts, counts


def cell_heat(fleet, policies) -> tuple[np.ndarray, np.ndarray]:
    """(zone cells (G, 2) as [x, y], expected penalty at each (G,)) of the joint policy."""
    world = fleet.scenario.world
    zone_cells = np.argwhere(world.zone_layer > 0)[:, ::-1]  # (G, 2) x, y
    G = len(zone_cells)
    counts = fleet.counts(policies)
    if G == 0 or not counts.p.size:
        return zone_cells, np.zeros(G)
    expected = counts.expected()  # (T, C): E[g_c(N_c(t))] per step and penalised (zone, value) cell
    T, C = expected.shape
    V = fleet.n_values
    column = np.full((fleet.n_zones + 1) * V, -1)
    column[counts.cells[:, 0] * V + counts.cells[:, 1]] = np.arange(C)
    grid = np.full(world.zone_layer.shape, -1)
    grid[zone_cells[:, 1], zone_cells[:, 0]] = np.arange(G)
    occupancy = np.zeros(T * C * G)  # expected robots at (t, cell c, grid cell g)
    firsts, multiplicity = _behaviours(fleet.models(policies))
    steps = np.arange(T)[:, None]
    for model, times in zip(firsts, multiplicity):
        c = column[model.zone * V + model.value]
        g = grid[model.mdp.states[:, 1], model.mdp.states[:, 0]]  # every domain's first features are x, y
        keep = (c >= 0) & (g >= 0)
        if not keep.any():
            continue
        dist = state_distributions(model.mdp, model.policy, fleet.horizon)[:T, keep]  # (T, S')
        index = (steps * C + c[keep][None, :]) * G + g[keep][None, :]
        occupancy += np.bincount(index.ravel(), weights=(dist * times).ravel(), minlength=T * C * G)
    occupancy = occupancy.reshape(T, C, G)
    total = occupancy.sum(axis=2, keepdims=True)
    share = np.divide(occupancy, total, out=np.zeros_like(occupancy), where=total > 0)
    return zone_cells, np.einsum("tc,tcg->g", expected, share)


def _finite(values) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in np.asarray(values, dtype=float).ravel()]


def rounds_explained(ids: list[str], scores: list[np.ndarray], rounds: list[dict], k: int,
                     screening: int) -> list[dict]:
    """Per round: every robot's score, those selected to replan (the k * screening highest
    positive scores, stable order), the cut-off, robots tied with it but not selected."""
    out = []
    for round_scores, report in zip(scores, rounds):
        order = np.argsort(-round_scores, kind="stable")
        ranked = [int(i) for i in order[: k * screening] if round_scores[i] > 0]
        cutoff = float(round_scores[ranked[-1]]) if ranked else None
        chosen = set(ranked)
        ties = []
        if cutoff is not None:
            close = np.abs(round_scores - cutoff) <= TIE_TOLERANCE * max(abs(cutoff), 1e-300)
            ties = [ids[i] for i in np.flatnonzero(close) if int(i) not in chosen]
        out.append({"round": report["round"], "scores": _finite(round_scores),
                    "selected": [ids[i] for i in ranked], "cutoff": cutoff, "tied_out": ties,
                    "accepted": list(report["accepted"]), "rejected": list(report["rejected"])})
    return out


def explain_run(fleet, result, start_policies, scores: list[np.ndarray], k: int, screening: int) -> dict:
    """Everything the console shows about what a run changed and why (plain data)."""
    zone_names = list(fleet.scenario.world.zone_names)
    cells, heat_before = cell_heat(fleet, start_policies)
    _, heat_after = cell_heat(fleet, result.policies)
    ids = [p.task.robot_id for p in fleet.plans]
    summary_rounds = [r.as_dict() for r in result.rounds]
    return {
        "zones": zone_names,
        "per_step_before": _finite(result.before.per_step),
        "per_step_after": _finite(result.after.per_step),
        "per_zone_before": dict(zip(zone_names, _finite(result.before.per_zone[1:]))),
        "per_zone_after": dict(zip(zone_names, _finite(result.after.per_zone[1:]))),
        "cells": cells.tolist(),
        "cell_zone": [zone_names[int(fleet.scenario.world.zone_layer[y, x]) - 1] for x, y in cells.tolist()],
        "heat_before": _finite(heat_before),
        "heat_after": _finite(heat_after),
        "k": int(k),
        "screening": int(screening),
        "rounds": rounds_explained(ids, scores, summary_rounds, k, screening),
    }


__all__ = ["RecordingStrategy", "cell_heat", "explain_run", "recording", "rounds_explained"]
