"""The three domains as PettingZoo parallel environments (docs/ENVS.md).

    from mase.envs import parallel_env
    env = parallel_env(map="maps/salp/salp-1.map", robots=10, seed=0)
    observations, infos = env.reset()
    while env.agents:
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)

Each robot of the scenario (`planner.scenario.generate_scenario(map, robots, seed)`) is an agent.
Its observation is its own local state (a `MultiDiscrete` vector of feature values, the
features of its task's MDP), its actions its MDP's (`Discrete`); a step samples each robot's
move from its MDP (the map's slip: stochastic moves) and its reward is its task reward (-1 a
step). An agent is terminated when its task is done (it then stands in its terminal state and
counts as null), and every agent is truncated after the monitor's horizon H. The NSE penalty
R_N of the joint state is a shared cost, `infos[agent]["nse_cost"]`: at reset for the start
state, after each step for the new joint state, so that the reset cost plus the steps' costs is
one sample of what the exact monitor's J_N is the mean of. `infos[agent]["state_index"]` is the
state's index in the robot's MDP (`env.fleet.plans[i].mdp`), for driving a planned policy.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from gymnasium import spaces
from pettingzoo import ParallelEnv

from planner.budget import DEFAULT_BUDGET


class FleetEnv(ParallelEnv):
    """A planned fleet (`metareasoner.mitigation.Fleet`) as a PettingZoo ParallelEnv.

    `seed` seeds the first reset when it is not given one; every later reset without a seed
    continues the same random stream, so a run of episodes is reproducible from `seed`.
    """

    metadata = {"name": "mase_fleet_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, fleet, seed: int | None = 0, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.fleet = fleet
        self.render_mode = render_mode
        self.seed = seed
        self.possible_agents = [p.task.robot_id for p in fleet.plans]
        if len(set(self.possible_agents)) != len(self.possible_agents):
            raise ValueError("robot ids must be distinct: they name the agents")
        self.agent_index = {a: i for i, a in enumerate(self.possible_agents)}
        self.horizon = fleet.horizon
        plans = fleet.plans
        self._observation_spaces = {a: spaces.MultiDiscrete([len(f.values) for f in p.mdp.features], seed=seed)
                                    for a, p in zip(self.possible_agents, plans)}
        self._action_spaces = {a: spaces.Discrete(p.mdp.n_actions, seed=None if seed is None else seed + i)
                               for i, (a, p) in enumerate(zip(self.possible_agents, plans))}
        # every robot's MDP in one block-diagonal transition matrix: one vectorised draw per step
        models = fleet.models([p.policy for p in plans])
        self._n_actions = np.array([p.mdp.n_actions for p in plans])
        sizes = np.array([p.mdp.n_states for p in plans])
        self._state_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._row_offset = np.concatenate([[0], np.cumsum(sizes * self._n_actions)[:-1]])
        blocks = sp.block_diag([p.mdp.transitions for p in plans], format="csr")
        self._indptr, self._indices = blocks.indptr, blocks.indices
        self._cum = np.cumsum(blocks.data)
        self._rewards = [p.mdp.rewards for p in plans]
        self._terminal = np.concatenate([p.mdp.terminal for p in plans])
        self._zone = np.concatenate([m.zone for m in models])
        self._value = np.concatenate([m.value for m in models])  # null at terminal states
        self._start = np.array([p.mdp.start for p in plans])
        self._n_values = fleet.n_values
        table = fleet.penalty.cell_table(len(plans))  # (Z+1, V, >= n+1): penalty of a cell holding k robots
        self._cell_table = table.reshape(-1, table.shape[-1])
        self._rng = np.random.default_rng(seed)
        self.agents: list[str] = []
        self._state = self._start.copy()
        self._t = 0

    # -- spaces ----------------------------------------------------------------------------------
    def observation_space(self, agent):
        return self._observation_spaces[agent]

    def action_space(self, agent):
        return self._action_spaces[agent]

    # -- dynamics --------------------------------------------------------------------------------
    def _cost(self) -> float:
        """R_N of the joint state, from its count table n_{z,v} (docs/FORMULATION.md section 3)."""
        g = self._state_offset + self._state
        counts = np.bincount(self._zone[g] * self._n_values + self._value[g], minlength=len(self._cell_table))
        return float(self._cell_table[np.arange(len(counts)), counts].sum())

    def _observe(self, agent: str) -> np.ndarray:
        i = self.agent_index[agent]
        return self.fleet.plans[i].mdp.states[self._state[i]].astype(np.int64)

    def _infos(self, agents, cost: float) -> dict:
        return {a: {"nse_cost": cost, "state_index": int(self._state[self.agent_index[a]]), "step": self._t}
                for a in agents}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            for k, a in enumerate(self.possible_agents):
                self._action_spaces[a].seed(seed + k)
                self._observation_spaces[a].seed(seed + k)
        self.agents = list(self.possible_agents)
        self._state = self._start.copy()
        self._t = 0
        cost = self._cost()
        return {a: self._observe(a) for a in self.agents}, self._infos(self.agents, cost)

    def step(self, actions: dict):
        unknown = [a for a in actions if a not in self.agent_index]
        if unknown:
            raise ValueError(f"no agent named {unknown[0]!r}; agents: {self.possible_agents}")
        done = [a for a in actions if a not in self.agents]
        if done:
            raise ValueError(f"agent {done[0]!r} is done (terminated or truncated): it takes no more actions")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agent {missing[0]!r}: every live agent acts each step")
        live = np.array([self.agent_index[a] for a in self.agents], dtype=np.int64)
        chosen = np.empty(len(live), dtype=np.int64)
        for k, a in enumerate(self.agents):
            act = actions[a]
            if isinstance(act, (bool, np.bool_)) or not isinstance(act, (int, np.integer)) \
                    or not 0 <= int(act) < self._n_actions[live[k]]:
                raise ValueError(f"agent {a!r}: action must be an integer in 0..{self._n_actions[live[k]] - 1}, "
                                 f"got {act!r}")
            chosen[k] = int(act)
        s = self._state[live]
        rewards = {a: float(self._rewards[i][s_i, c]) for a, i, s_i, c in zip(self.agents, live, s, chosen)}
        row = self._row_offset[live] + s * self._n_actions[live] + chosen
        lo, hi = self._indptr[row], self._indptr[row + 1]
        base = np.where(lo > 0, self._cum[np.maximum(lo - 1, 0)], 0.0)
        target = base + self._rng.random(len(live)) * (self._cum[hi - 1] - base)
        pos = np.clip(np.searchsorted(self._cum, target, side="right"), lo, hi - 1)
        self._state[live] = self._indices[pos] - self._state_offset[live]
        self._t += 1
        cost = self._cost()
        terminal = self._terminal[self._state_offset[live] + self._state[live]]
        truncated = self._t >= self.horizon
        acted = list(self.agents)
        observations = {a: self._observe(a) for a in acted}
        terminations = {a: bool(t) for a, t in zip(acted, terminal)}
        truncations = {a: bool(truncated and not t) for a, t in zip(acted, terminal)}
        infos = self._infos(acted, cost)
        self.agents = [a for a in acted if not (terminations[a] or truncations[a])]
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The joint state: every robot's MDP state index."""
        return self._state.copy()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        world = self.fleet.scenario.world
        grid = [list(row) for row in world.grid.astype(str)]
        for i, plan in enumerate(self.fleet.plans):
            x, y = plan.mdp.states[self._state[i], :2]
            grid[y][x] = "R" if grid[y][x] != "R" else "2"
        return f"t={self._t} nse_cost={self._cost():.3f}\n" + "\n".join("".join(r) for r in grid)

    def close(self) -> None:
        pass


def parallel_env(map: str, robots: int = 10, seed: int = 0, slack=DEFAULT_BUDGET, render_mode: str | None = None,
                 backend: str = "serial") -> FleetEnv:
    """The scenario of `map` with `robots` robots generated from `seed`, planned, as a
    FleetEnv whose first reset is seeded with `seed` too."""
    from metareasoner.mitigation import Fleet
    from planner.maps import load_map
    from planner.scenario import generate_scenario

    scenario = generate_scenario(load_map(map), robots, seed=seed, slack=slack)
    return FleetEnv(Fleet.plan(scenario, backend=backend), seed=seed, render_mode=render_mode)


__all__ = ["FleetEnv", "parallel_env"]
