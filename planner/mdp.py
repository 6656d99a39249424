"""Tabular MDPs with sparse transitions, and their construction from a factored problem.

The planner never imports a domain: it consumes any object that satisfies
`planner.problem.RobotProblem` and enumerates the states reachable from its start
with a layered, vectorised breadth-first search (one numpy batch per BFS layer and
action, never a Python loop over states).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .problem import Feature, RobotProblem

ProgressCallback = Callable[[int, int], None]


@dataclass(eq=False)
class TabularMDP:
    """A finite discounted MDP.

    `transitions` is one (S*A) x S CSR matrix whose row `s*A + a` is T(. | s, a): a
    single sparse product gives every Q-value at once. Terminal states are absorbing
    with zero reward.
    """

    transitions: sp.csr_matrix
    rewards: np.ndarray  # (S, A) task reward R^T(s, a)
    discount: float
    terminal: np.ndarray  # (S,) bool
    start: int = 0
    states: np.ndarray | None = None  # (S, F) int feature vectors, when built from a problem
    features: tuple[Feature, ...] = ()
    actions: tuple[str, ...] = ()
    _keys: np.ndarray | None = field(default=None, repr=False)  # sorted state keys
    _key_order: np.ndarray | None = field(default=None, repr=False)
    _radix: np.ndarray | None = field(default=None, repr=False)
    #: this MDP's name for worker processes that keep it between jobs (a pickled copy keeps it;
    #: another MDP, `dataclasses.replace` of this one included, gets its own)
    token: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        self.token = uuid.uuid4().hex
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount}")
        n_states, n_actions = self.rewards.shape
        if self.transitions.shape != (n_states * n_actions, n_states):
            raise ValueError(
                f"transitions shape {self.transitions.shape} does not match "
                f"{n_states} states x {n_actions} actions"
            )
        if not self.actions:
            self.actions = tuple(f"a{i}" for i in range(n_actions))

    @property
    def n_states(self) -> int:
        return self.rewards.shape[0]

    @property
    def n_actions(self) -> int:
        return self.rewards.shape[1]

    @classmethod
    def from_matrices(
        cls,
        transitions: Sequence[np.ndarray | sp.spmatrix],
        rewards: np.ndarray,
        discount: float,
        terminal: np.ndarray | None = None,
        start: int = 0,
    ) -> "TabularMDP":
        """From per-action S x S matrices (dense or sparse) and an (S, A) reward.

        Terminal states are made absorbing with zero reward, whatever the matrices say.
        """
        mats = [sp.lil_matrix(m, dtype=float) for m in transitions]
        n_actions = len(mats)
        n_states = mats[0].shape[0]
        rewards = np.asarray(rewards, dtype=float)
        if rewards.shape != (n_states, n_actions):
            raise ValueError(f"rewards must have shape {(n_states, n_actions)}, got {rewards.shape}")
        term = np.zeros(n_states, bool) if terminal is None else np.asarray(terminal, bool)
        rewards = rewards.copy()
        rewards[term] = 0.0
        for m in mats:
            for s in np.flatnonzero(term):
                m.rows[s], m.data[s] = [int(s)], [1.0]
        # interleave rows: stacked row s*A + a is action a's row s
        stacked = sp.vstack(mats, format="csr")
        order = (np.arange(n_actions)[None, :] * n_states + np.arange(n_states)[:, None]).ravel()
        stacked = stacked[order]
        return cls(stacked, rewards, float(discount), term, start)

    def derived(self, key, build: Callable[[], object]):
        """`build()`, computed once per MDP and key and kept with it: layouts of the transitions
        for the solvers. Rebuilt if `transitions` is replaced; never pickled."""
        cache = self.__dict__.setdefault("_derived", {})
        hit = cache.get(key)
        if hit is None or hit[0] is not self.transitions:
            hit = cache[key] = (self.transitions, build())
        return hit[1]

    def action_major(self) -> sp.csr_matrix:
        """The transitions with rows reordered action-major (row a * S + s), cached.

        Value iteration's inner loop uses it; each row keeps its entries' order, so its
        products are bit-identical to those of `transitions`.
        """
        def build():
            order = (np.arange(self.n_actions)[:, None] + self.n_actions * np.arange(self.n_states)[None, :]).ravel()
            return self.transitions[order]
        return self.derived("action_major", build)

    def padded_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The action-major transitions as fixed-width rows without their self-loop, cached:
        `(columns, probabilities, stay)`, the first two (A * S, K) with K the longest row (short
        rows padded with probability 0 at the row's own state, the self-loop entry zeroed),
        `stay` (A * S,) the probability of staying put. None when padding would more than
        double the storage.

        Gauss-Seidel sweeps use it: a policy's rows are one gather of (S, K) arrays, patched
        in place where the policy changes.
        """
        def build():
            t_am = self.action_major()
            lengths = np.diff(t_am.indptr)
            width = int(lengths.max(initial=0))
            n_rows = t_am.shape[0]
            if not (n_rows and width and width * n_rows <= 2 * t_am.nnz + n_rows):
                return None
            own_state = np.arange(n_rows, dtype=np.int32) % self.n_states
            columns = np.repeat(own_state, width)
            probabilities = np.zeros(n_rows * width)
            # entry e of row i goes to slot i * width + (e - indptr[i])
            target = np.arange(t_am.nnz) + np.repeat(np.arange(n_rows) * width - t_am.indptr[:-1], lengths)
            columns[target] = t_am.indices
            probabilities[target] = t_am.data
            columns, probabilities = columns.reshape(n_rows, width), probabilities.reshape(n_rows, width)
            own = columns == own_state[:, None]
            stay = (probabilities * own).sum(axis=1)
            probabilities[own] = 0.0
            return columns, probabilities, stay
        return self.derived("padded_rows", build)

    def sweep_order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(distance, order, position)`, cached: each state's breadth-first distance to the
        terminal states over every action's transitions (inf where none is reachable), the
        states sorted by it (terminal states first; ties in index order), and each state's
        position in that order. Gauss-Seidel sweeps in this order carry values from the goal
        outwards in one pass."""
        def build():
            distance = terminal_distances(self.transitions, self.n_actions, self.terminal)
            order = np.argsort(distance, kind="stable")
            position = np.empty(self.n_states, dtype=np.int32)
            position[order] = np.arange(self.n_states, dtype=np.int32)
            return distance, order, position
        return self.derived("sweep_order", build)

    def sorted_for_sweeps(self) -> "TabularMDP":
        """This MDP with its states renumbered in `sweep_order()` (state i is `order[i]`), cached;
        its own sweep order is the identity. Policy iteration runs on it, so that its sweeps
        and backups need no permutation."""
        def build():
            distance, order, position = self.sweep_order()
            n_states, n_actions = self.n_states, self.n_actions

            def renumbered_rows(matrix, rows):
                out = matrix[rows]
                out.indices = position[out.indices].astype(out.indices.dtype)
                out.has_sorted_indices = False
                return out

            transitions = renumbered_rows(self.transitions,
                                          (order[:, None] * n_actions + np.arange(n_actions)[None, :]).ravel())
            renumbered = TabularMDP(transitions, self.rewards[order], self.discount, self.terminal[order],
                                    int(position[self.start]), actions=self.actions)
            identity = np.arange(n_states)
            renumbered.derived("sweep_order", lambda: (distance[order], identity, identity.astype(np.int32)))
            action_major = renumbered_rows(self.action_major(),
                                           (np.arange(n_actions)[:, None] * n_states + order[None, :]).ravel())
            renumbered.derived("action_major", lambda: action_major)
            return renumbered
        return self.derived("sorted_for_sweeps", build)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_derived", None)  # derived data: not shipped to worker processes
        return state

    def action_matrix(self, action: int) -> sp.csr_matrix:
        """T(. | ., a) as an S x S matrix."""
        return self.transitions[action :: self.n_actions]

    def policy_matrix(self, policy: np.ndarray) -> sp.csr_matrix:
        """T(. | s, policy(s)) as an S x S matrix; a stochastic policy (S, A) of action
        probabilities gives sum_a policy(s, a) T(. | s, a)."""
        policy = np.asarray(policy)
        if policy.ndim == 2:
            weights = sp.diags(policy.reshape(-1))  # row s*A + a weighted by policy(s, a)
            fold = sp.kron(sp.identity(self.n_states, format="csr"), np.ones((1, self.n_actions)), format="csr")
            return (fold @ weights @ self.transitions).tocsr()
        return csr_rows(self.transitions, np.arange(self.n_states) * self.n_actions + policy)

    # ---- state lookup (MDPs built from a problem) ----
    def feature_index(self, name: str) -> int:
        for i, f in enumerate(self.features):
            if f.name == name:
                return i
        raise KeyError(f"no feature named {name!r}; features: {[f.name for f in self.features]}")

    def encode(self, rows: np.ndarray) -> np.ndarray:
        if self._radix is None:
            raise ValueError("this MDP was not built from a factored problem")
        return _encode(np.atleast_2d(rows), self._radix)

    def index_of_state(self, values) -> int:
        """Index of one state given as its feature values, each in its feature's range; -1 if
        it is not reachable. `index_of` for a single row without building arrays (a robot's
        query asks for one state: the array form costs tens of microseconds)."""
        if self._radix is None:
            raise ValueError("this MDP was not built from a factored problem")
        key = 0
        for value, size in zip(values, self._radix.tolist()):  # the mixed-radix key of _encode
            key = key * size + value
        pos = int(self._keys.searchsorted(key))
        return int(self._key_order[pos]) if pos < len(self._keys) and self._keys[pos] == key else -1

    def index_of(self, rows: np.ndarray) -> np.ndarray:
        """State indices of feature rows; -1 where a row is not a reachable state."""
        keys = self.encode(rows)
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        found = self._keys[pos] == keys
        return np.where(found, self._key_order[pos], -1)


def csr_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """`matrix[rows]` for a CSR matrix, entries in their stored order (the same matrix as
    scipy's fancy indexing, built by one gather: scipy's path costs up to 20x more here)."""
    rows = np.asarray(rows)
    indptr = matrix.indptr
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    new_indptr = np.zeros(len(rows) + 1, dtype=indptr.dtype)
    np.cumsum(lengths, out=new_indptr[1:])
    take = np.arange(new_indptr[-1], dtype=indptr.dtype) + np.repeat(starts - new_indptr[:-1], lengths)
    return sp.csr_matrix((matrix.data[take], matrix.indices[take], new_indptr), shape=(len(rows), matrix.shape[1]))


def terminal_distances(transitions: sp.csr_matrix, n_actions: int, terminal: np.ndarray,
                       keep: np.ndarray | None = None) -> np.ndarray:
    """Breadth-first distance (number of steps with positive probability) from each state to
    the nearest terminal state, inf where none is reachable. `transitions` is a (S*A) x S
    matrix with rows s*A + a; `keep` (S*A bool), if given, the state-action pairs to use."""
    n_states = len(terminal)
    targets = np.flatnonzero(terminal)
    if not len(targets):
        return np.full(n_states, np.inf)
    # the union over actions: state s's rows s*A .. s*A + A - 1 are contiguous. Copies of the
    # index arrays: the graph's own operations (dropping zeros) may rewrite them in place.
    data = np.ones(transitions.nnz) if keep is None else np.repeat(np.asarray(keep, float), np.diff(transitions.indptr))
    graph = sp.csr_matrix((data, transitions.indices.copy(), transitions.indptr[::n_actions].copy()),
                          shape=(n_states, n_states))
    if keep is not None:
        graph.eliminate_zeros()
    reverse = graph.T.tocsr()
    return np.atleast_1d(csgraph.dijkstra(reverse, directed=True, indices=targets, unweighted=True, min_only=True))


def _radix_of(features: Sequence[Feature]) -> np.ndarray:
    sizes = np.array([len(f.values) for f in features], dtype=np.int64)
    if np.any(sizes < 1):
        raise ValueError("every feature needs at least one value")
    if np.sum(np.log2(sizes.astype(float))) >= 62:
        raise ValueError("the factored state space is too large to index with 64-bit keys")
    return sizes


def _encode(rows: np.ndarray, radix: np.ndarray) -> np.ndarray:
    # mixed-radix key: row . strides, strides[i] = prod(radix[i+1:])
    strides = np.ones_like(radix)
    strides[:-1] = np.cumprod(radix[::-1])[::-1][1:]
    return rows.astype(np.int64) @ strides


def build_mdp(
    problem: RobotProblem,
    max_states: int = 20_000_000,
    progress: ProgressCallback | None = None,
) -> TabularMDP:
    """Enumerate the states reachable from the problem's start and build its sparse MDP."""
    radix = _radix_of(tuple(problem.features))
    start = np.asarray(problem.start_state(), dtype=np.int64).reshape(1, -1)
    states, src, act, dst_keys, prob = _explore(problem, start, radix, max_states, progress)
    mdp = _assemble(problem, states, src, act, dst_keys, prob, radix)
    if progress is not None:
        progress(mdp.n_states, mdp.n_states)
    return mdp


#: at most this many problems are searched as one (`build_mdps`): beyond it a layer's
#: arrays are large enough that one more pass costs little
MAX_STACKED = 16


def build_mdps(problems: Sequence[RobotProblem], max_states: int = 20_000_000) -> list[TabularMDP]:
    """`[build_mdp(p) for p in problems]`, the same MDPs bit for bit, with the problems of one
    `stack_key` searched together (`RobotProblem.stack`, up to MAX_STACKED at once): the
    breadth-first search then takes as many layers as its deepest problem, not their sum.

    Each job's states come out in its own order: the stacked search's layer k holds each job's
    layer k, sorted by key, and the job is the key's leading digit; every edge of a job is
    found in the order its own search finds it (layer, action, outcome, row)."""
    out: list[TabularMDP | None] = [None] * len(problems)
    groups: dict = {}
    for i, problem in enumerate(problems):
        key = problem.stack_key()
        if key is None:
            out[i] = build_mdp(problem, max_states)
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        for first in range(0, len(members), MAX_STACKED):
            chunk = members[first:first + MAX_STACKED]
            if len(chunk) == 1:
                out[chunk[0]] = build_mdp(problems[chunk[0]], max_states)
                continue
            for i, mdp in zip(chunk, _build_stacked([problems[i] for i in chunk], max_states)):
                out[i] = mdp
    return out  # type: ignore[return-value]


def _build_stacked(problems: Sequence[RobotProblem], max_states: int) -> list[TabularMDP]:
    stacked = type(problems[0]).stack(problems)
    radix = _radix_of(tuple(stacked.features))
    starts = np.asarray(stacked.start_states(), dtype=np.int64)
    if starts.shape[0] != len(problems) or np.any(starts[:, 0] != np.arange(len(problems))):
        raise ValueError("a stacked problem's start_states() must give one start per job, in job order")
    states, src, act, dst_keys, prob = _explore(stacked, starts, radix, len(problems) * max_states, None)
    job = states[:, 0]
    job_stride = int(np.prod(radix[1:]))
    # each state's index within its job (the order of the stacked search, which is the job's own)
    order = np.argsort(job, kind="stable")
    bounds = np.searchsorted(job[order], np.arange(len(problems) + 1))
    local = np.empty(len(states), dtype=np.int64)
    local[order] = np.arange(len(states)) - np.repeat(bounds[:-1], np.diff(bounds))
    edge_job = job[src]
    edge_order = np.argsort(edge_job, kind="stable")  # a job's edges keep their order
    edge_bounds = np.searchsorted(edge_job[edge_order], np.arange(len(problems) + 1))
    mdps = []
    for j, problem in enumerate(problems):
        rows = order[bounds[j]:bounds[j + 1]]
        edges = edge_order[edge_bounds[j]:edge_bounds[j + 1]]
        if bounds[j + 1] - bounds[j] > max_states:
            raise ValueError(f"more than {max_states} reachable states; raise max_states or shrink the task")
        mdps.append(_assemble(problem, states[rows, 1:], local[src[edges]], act[edges],
                              dst_keys[edges] - j * job_stride, prob[edges], radix[1:]))
    return mdps


def _explore(problem: RobotProblem, start: np.ndarray, radix: np.ndarray, max_states: int,
             progress: ProgressCallback | None):
    """Breadth-first search from the (k, F) `start` rows (sorted by key): every reachable state
    in the order found (layer by layer, each layer sorted by key), and every edge as (source
    index, action, destination key, probability)."""
    strides = np.ones_like(radix)
    strides[:-1] = np.cumprod(radix[::-1])[::-1][1:]  # as in _encode
    actions = tuple(problem.actions)
    n_actions = len(actions)
    _check_rows(start, radix, "start state")
    rows_by_layer = [start]
    keys_sorted = _encode(start, radix)  # sorted keys of every state found so far
    n_found = len(start)
    frontier = start
    edges_src: list[np.ndarray] = []  # BFS index of the source state (within all states)
    edges_act: list[np.ndarray] = []
    edges_dst: list[np.ndarray] = []  # key of the destination state
    edges_p: list[np.ndarray] = []
    frontier_offset = 0
    while len(frontier):
        src_index = frontier_offset + np.arange(len(frontier))
        live = ~np.asarray(problem.is_terminal(frontier), bool)
        live_rows, live_index = frontier[live], src_index[live]
        layer_new: list[np.ndarray] = []
        layer_src: list[np.ndarray] = []
        layer_p: list[np.ndarray] = []
        layer_act: list[int] = []  # the action of each outcome, and its number of successors
        layer_len: list[int] = []
        n_live = len(live_rows)
        if n_live:
            for a in range(n_actions):
                for nxt, p in problem.transition_outcomes(live_rows, a):
                    nxt = np.asarray(nxt, dtype=np.int64)
                    p = np.asarray(p, dtype=float)
                    if p.shape != (n_live,):
                        p = np.broadcast_to(p, (n_live,))
                    keep = p > 0
                    if keep.all():
                        layer_new.append(nxt)
                        layer_src.append(live_index)
                        layer_p.append(p)
                    else:
                        layer_new.append(nxt[keep])
                        layer_src.append(live_index[keep])
                        layer_p.append(p[keep])
                    layer_act.append(a)
                    layer_len.append(len(layer_new[-1]))
        frontier_offset += len(frontier)
        if not layer_new:
            break
        # one range check and one encoding per layer (the check names the first bad outcome's action)
        cand = np.concatenate(layer_new)
        if cand.size and (cand.min() < 0 or np.any(cand.max(axis=0) >= radix)):
            ends = np.cumsum(layer_len)
            bad = np.flatnonzero(np.any((cand < 0) | (cand >= radix[None, :]), axis=1))[0]
            a = layer_act[int(np.searchsorted(ends, bad, side="right"))]
            _check_rows(cand[bad:bad + 1], radix, f"successor under action {actions[a]!r}")
        cand_keys = cand @ strides
        edges_src.append(np.concatenate(layer_src))
        edges_act.append(np.repeat(np.array(layer_act, dtype=np.int64), layer_len))
        edges_dst.append(cand_keys)
        edges_p.append(np.concatenate(layer_p))
        cand_keys, first = np.unique(cand_keys, return_index=True)
        cand = cand[first]
        pos = np.searchsorted(keys_sorted, cand_keys)
        seen = (pos < len(keys_sorted)) & (keys_sorted[np.minimum(pos, len(keys_sorted) - 1)] == cand_keys)
        frontier = cand[~seen]
        if len(frontier):
            rows_by_layer.append(frontier)
            # the new keys are sorted and none is in keys_sorted: one merge by insertion
            keys_sorted = np.insert(keys_sorted, pos[~seen], cand_keys[~seen])
            n_found += len(frontier)
            if n_found > max_states:
                raise ValueError(f"more than {max_states} reachable states; raise max_states or shrink the task")
        if progress is not None:
            progress(n_found, 0)

    def joined(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return (np.concatenate(rows_by_layer), joined(edges_src, np.int64), joined(edges_act, np.int64),
            joined(edges_dst, np.int64), joined(edges_p, float))


def _assemble(problem: RobotProblem, states: np.ndarray, src: np.ndarray, act: np.ndarray,
              dst_keys: np.ndarray, prob: np.ndarray, radix: np.ndarray) -> TabularMDP:
    """The MDP of `problem` from its states (the start first) and edges (`_explore`)."""
    features = tuple(problem.features)
    actions = tuple(problem.actions)
    n_actions = len(actions)
    n_states = len(states)
    all_keys = _encode(states, radix)
    key_order = np.argsort(all_keys)
    keys_sorted = all_keys[key_order]

    terminal = np.asarray(problem.is_terminal(states), bool)
    dst = key_order[np.searchsorted(keys_sorted, dst_keys)]
    # terminal states: absorbing self-loops under every action
    term_idx = np.flatnonzero(terminal)
    t_src = np.repeat(term_idx, n_actions)
    t_act = np.tile(np.arange(n_actions), len(term_idx))
    rows = np.concatenate([src * n_actions + act, t_src * n_actions + t_act])
    cols = np.concatenate([dst, t_src])
    data = np.concatenate([prob, np.ones(len(t_src))])
    transitions = sp.csr_matrix((data, (rows, cols)), shape=(n_states * n_actions, n_states))
    transitions.sum_duplicates()
    row_sums = np.asarray(transitions.sum(axis=1)).ravel()
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > 1e-9)
    if len(bad):
        s, a = divmod(int(bad[0]), n_actions)
        raise ValueError(
            f"transition probabilities of state {states[s].tolist()} under {actions[a]!r} "
            f"sum to {row_sums[bad[0]]:.6g}, not 1"
        )

    rewards = np.empty((n_states, n_actions))
    for a in range(n_actions):
        rewards[:, a] = problem.task_reward(states, a)
    rewards[terminal] = 0.0
    return TabularMDP(
        transitions=transitions,
        rewards=rewards,
        discount=float(problem.discount),
        terminal=terminal,
        start=0,
        states=states,
        features=features,
        actions=actions,
        _keys=keys_sorted,
        _key_order=key_order,
        _radix=radix,
    )


def _check_rows(rows: np.ndarray, radix: np.ndarray, what: str) -> None:
    if rows.size and (np.any(rows < 0) or np.any(rows >= radix[None, :])):
        bad = np.flatnonzero(np.any((rows < 0) | (rows >= radix[None, :]), axis=1))[0]
        raise ValueError(f"{what} {rows[bad].tolist()} has a feature outside its value range {radix.tolist()}")
