"""Backends (planner/backends.py): serial, local worker processes and Ray give identical plans,
blame and policies; the `--backend` options of `mase plan` and `mase mitigate`."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from metareasoner.mitigation import Fleet, Mitigation
from planner.backends import LocalBackend, RayBackend, SerialBackend, check_ray_address, get_backend
from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet
from conftest import MAPS, ROOT


def _square(x: int) -> int:
    return x * x


def _pid(_) -> int:
    return os.getpid()


def test_map_keeps_the_order_of_the_items():
    items = list(range(23))
    for backend in (SerialBackend(), LocalBackend(workers=2)):
        seen = []
        assert backend.map(_square, items, progress=lambda done, total: seen.append((done, total))) == \
            [x * x for x in items]
        assert seen[-1] == (23, 23) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert LocalBackend(workers=2).map(_square, []) == []


def test_local_backend_runs_jobs_in_other_processes():
    pids = LocalBackend(workers=2).map(_pid, range(8))
    assert os.getpid() not in pids
    assert SerialBackend().map(_pid, range(3)) == [os.getpid()] * 3
    # one job, or one worker: no pool at all
    assert LocalBackend(workers=1).map(_pid, range(3)) == [os.getpid()] * 3


def _resident_mdp(plan) -> tuple[int, int, bool]:
    """(worker pid, id of the MDP the worker keeps for this plan's token, whether it differs
    from the copy this job brought)."""
    from metareasoner.mitigation import _resident
    kept = _resident(plan)
    return os.getpid(), id(kept.mdp), kept.mdp is not plan.mdp


def test_a_session_keeps_its_workers_and_they_keep_each_mdp():
    """`LocalBackend.session()`: every `map` of the session runs on the same worker processes
    (one pool), which keep a job's MDP under its token, so that a later job with a copy of it
    solves on the kept one; the pool is gone after the session; other backends' sessions are
    themselves."""
    plans = plan_fleet(generate_scenario(load_map(MAPS / "salp" / "salp-1.map"), 3, seed=0), backend="serial")
    with LocalBackend(workers=2).session() as backend:
        first = backend.map(_pid, range(6))
        pool = backend._pool
        again = backend.map(_pid, range(6))
        # which worker takes a job, and when the pool starts its second, is the scheduler's choice
        workers = set(pool._processes)
        assert backend._pool is pool and os.getpid() not in first and len(workers) <= 2
        assert set(first) | set(again) <= workers
        assert backend.map(_square, range(5)) == [x * x for x in range(5)]
        seen = backend.map(_resident_mdp, [plans[0]] * 8)
        kept = {}
        for pid, mdp_id, replaced in seen:
            assert kept.setdefault(pid, mdp_id) == mdp_id  # one kept MDP per worker
        assert any(replaced for _, _, replaced in seen)  # a later copy was swapped for the kept one
        pool = backend._pool
    assert backend._pool is None and pool._shutdown_thread
    assert _resident_mdp(plans[0])[2] is False  # in the main process, the plan as it is
    serial = SerialBackend()
    with serial.session() as same:
        assert same is serial
    import dataclasses
    assert dataclasses.replace(plans[0].mdp).token != plans[0].mdp.token  # another MDP, another token


def test_get_backend_by_name():
    assert isinstance(get_backend("serial"), SerialBackend)
    local = get_backend("local", workers=3)
    assert isinstance(local, LocalBackend) and local.workers == 3 and local.n_workers == 3
    assert get_backend(None).workers is None
    ray_backend = get_backend("ray", address="10.0.0.1:6379")  # nothing connects before the first map
    assert isinstance(ray_backend, RayBackend) and ray_backend.address == "10.0.0.1:6379"
    mine = SerialBackend()
    assert get_backend(mine) is mine
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        get_backend("gpu")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        LocalBackend(workers=0)


def run(backend, map_name: str = "salp/salp-1.map", method: str = "recon"):
    scenario = generate_scenario(load_map(MAPS / map_name), 8, seed=3)
    fleet = Fleet.plan(scenario, backend=backend)
    result = Mitigation(method=method, update_fraction=0.5, episodes=30, seed=1, backend=backend).run(fleet)
    return fleet, result


def assert_identical(a, b) -> None:
    (fleet_a, result_a), (fleet_b, result_b) = a, b
    for plan_a, plan_b in zip(fleet_a.plans, fleet_b.plans, strict=True):
        assert plan_a.task.robot_id == plan_b.task.robot_id
        assert np.array_equal(plan_a.policy, plan_b.policy)
        assert np.array_equal(plan_a.task_solution.values, plan_b.task_solution.values)
        assert (plan_a.mdp.transitions != plan_b.mdp.transitions).nnz == 0
    assert np.array_equal([r.blame for r in result_a.robots], [r.blame for r in result_b.robots])
    assert result_a.updated == result_b.updated
    for pa, pb in zip(result_a.policies, result_b.policies, strict=True):
        assert np.array_equal(pa, pb)
    assert result_a.after.total_penalty == result_b.after.total_penalty
    assert [r.lvi_slack for r in result_a.robots] == [r.lvi_slack for r in result_b.robots]
    assert [r.as_dict() for r in result_a.rounds] == [r.as_dict() for r in result_b.rounds]


@pytest.fixture(scope="module")
def serial_runs():
    return {(m, meth): run("serial", m, meth) for m, meth in
            (("salp/salp-1.map", "recon"), ("warehouse/warehouse-2.map", "gen-recon-cf"))}


@pytest.mark.parametrize("map_name, method", [("salp/salp-1.map", "recon"), ("warehouse/warehouse-2.map", "gen-recon-cf")])
def test_local_and_serial_backends_give_identical_plans_blame_and_policies(serial_runs, map_name, method):
    serial = serial_runs[(map_name, method)]
    _, result = serial
    # the comparison means something: robots were blamed and replanned with new policies
    assert len(result.updated) >= 2 and max(r.blame for r in result.robots) > 0
    changed = [i for i, p in enumerate(result.policies) if not np.array_equal(p, serial[0].plans[i].policy)]
    assert changed
    assert_identical(serial, run(LocalBackend(workers=2), map_name, method))


def test_ray_backend_gives_identical_results(serial_runs):
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        backend = RayBackend()
        assert_identical(serial_runs[("salp/salp-1.map", "recon")], run(backend))
        backend.close()  # a session it did not start is left running
        assert ray.is_initialized()
    finally:
        if started:
            ray.shutdown()


def test_plan_fleet_solves_each_distinct_task_once_whatever_the_backend():
    scenario = generate_scenario(load_map(MAPS / "warehouse" / "warehouse-1.map"), 30, seed=0)
    plans = plan_fleet(scenario, backend=LocalBackend(workers=2))
    keys = {}
    for plan in plans:  # robots with one task share one solved MDP object, as in serial planning
        key = (plan.task.start, plan.task.kind, plan.task.items, plan.task.option, plan.task.count)
        assert keys.setdefault(key, plan.mdp) is plan.mdp
    assert len({id(p.mdp) for p in plans}) == len(keys) < 30


def test_cli_backend_options():
    def mase(*args):
        return subprocess.run([sys.executable, "-m", "mase", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)

    common = ["--map", str(MAPS / "salp" / "salp-1.map"), "--robots", "6", "--seed", "2", "--json", "--no-progress"]
    outs = [json.loads(r.stdout) for r in (mase("plan", *common, "--backend", b) for b in ("serial", "local"))]
    assert outs[0] == outs[1] and len(outs[0]["robots"]) == 6
    bad = mase("plan", *common, "--ray-address", "127.0.0.1:6379")
    assert bad.returncode == 2 and "--ray-address needs --backend ray" in bad.stderr and "Traceback" not in bad.stderr
    bad = mase("mitigate", *common, "--backend", "gpu")
    assert bad.returncode == 2 and "invalid choice: 'gpu'" in bad.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_a_ray_address_is_checked_before_ray_init():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        check_ray_address(f"127.0.0.1:{port}")
        check_ray_address(f"ray://127.0.0.1:{port}")
    for good in ("auto", "local"):
        check_ray_address(good)
    for bad in ("127.0.0.1", "ray://:10001", "head:port", "head:70000", ""):
        with pytest.raises(ValueError, match="is not host:port"):
            check_ray_address(bad)
    port = _closed_port()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_ray_address(f"127.0.0.1:{port}")


def test_cli_says_when_no_ray_cluster_answers():
    pytest.importorskip("ray")
    port = _closed_port()
    result = subprocess.run([sys.executable, "-m", "mase", "mitigate", "--map", str(MAPS / "salp" / "salp-1.map"),
                             "--robots", "2", "--no-progress", "--backend", "ray", "--ray-address", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in result.stderr
