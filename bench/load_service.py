"""Load benchmark of the service's robot queries against the framework's ceiling, with wrk.

    python -m bench.load_service [--connections 32] [--seconds 8] [--threads 2]
    python -m bench.load_service --memory salp-3 500

In one run, with the same load generator (wrk, Debian's package) and the same uvicorn
settings (`mase.serve.uvicorn_options`, access log off): a hello-world FastAPI app (the
ceiling), then `mase serve` with 1 and 2 worker processes on a temporary SQLite database,
each endpoint idle and while a replan (mitigation run) works. Prints requests per second,
each as a ratio to the ceiling, p50/p99 latency, non-2xx answers, and the CPU cores the
server (with its workers) and wrk used meanwhile. A plain ASGI hello-world (uvicorn without a
framework) is measured once, for reference: the robots' queries are answered in front of
FastAPI's routing (api.fastlane), so they may pass the FastAPI ceiling. The robots' queries
use a robot token, as robots do. Figures depend on the machine and on what else runs on
it: compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-operator"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

hello_app = FastAPI()  # the ceiling: what FastAPI on uvicorn does with no work at all


@hello_app.get("/hello")
async def hello():
    return {"hello": "world"}


async def plain_hello_app(scope, receive, send):
    """The server's own ceiling: uvicorn with no framework at all (for reference: the robots'
    fast lane answers in front of FastAPI's routing, so it may pass FastAPI's ceiling)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"17"), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"hello":"world"}'})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, path: str) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


def start_hello(app: str = "hello_app") -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = ("import uvicorn; from mase.serve import uvicorn_options; from api.settings import Settings; "
            "import dataclasses; s = dataclasses.replace(Settings(), access_log=False); "
            f"uvicorn.run('bench.load_service:{app}', host='127.0.0.1', port={port}, log_level='warning', "
            "**uvicorn_options(s))")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, "/hello")
    return process, url


def start_service(folder: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (folder / "tokens").write_text(TOKEN + "\n")
    env = {**os.environ, "MASE_DATABASE_URL": f"sqlite:///{folder / f'db{workers}.sqlite'}",
           "MASE_TOKENS_FILE": str(folder / "tokens"), "MASE_ACCESS_LOG": "0"}
    process = subprocess.Popen([sys.executable, "-m", "mase", "serve", "--port", str(port), "--log-level", "warning",
                                "--workers", str(workers)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, "/api/v1/health")
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) of process `pid` and of each of its live descendants (a
    server's workers, its jobs' processes), by pid."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        child = int(stat.parent.name)
        parents[child], times[child] = int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK
    found, stack = {}, [pid]
    while stack:
        current = stack.pop()
        found[current] = times.get(current, 0.0)
        stack.extend(c for c, parent in parents.items() if parent == current)
    return found


def cores_used(before: dict[int, float], after: dict[int, float], wall: float) -> float:
    """Cores used by the processes alive at both ends (one that started or ended meanwhile, a
    job's, would count only part of its time)."""
    return sum(after[p] - before[p] for p in before if p in after) / wall


def wrk(url: str, token: str | None, args, server: int | None = None) -> dict:
    """wrk's figures, with the CPU cores the server (pid `server`, with its children) and wrk
    itself used meanwhile: on a machine without a core to spare, that is where the time went."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, start = (cpu_seconds(server) if server else {}), time.perf_counter()
    out = subprocess.run(command + [url], capture_output=True, text=True, timeout=args.seconds + 60).stdout
    wall = time.perf_counter() - start
    server_cores = cores_used(server_before, cpu_seconds(server), wall) if server else float("nan")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cores = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out)[1])
    latency = {p: float(v) * _UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", out)
    errors = re.search(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", out)
    return {"rps": rps, "p50": latency.get("50", float("nan")), "p99": latency.get("99", float("nan")),
            "non2xx": int(bad[1]) if bad else 0, "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "server_cores": server_cores, "wrk_cores": wrk_cores}


def row(name: str, figures: dict, ceiling: float) -> str:
    return (f"| {name:<34} | {figures['rps']:>8.0f} | {figures['rps'] / ceiling:>5.2f} | {figures['p50']:>7.2f} | "
            f"{figures['p99']:>7.2f} | {figures['non2xx'] + figures['socket_errors']:>6} | "
            f"{figures['server_cores']:>4.2f} | {figures['wrk_cores']:>4.2f} |")


def prepare(url: str) -> tuple[dict[str, str], str, int]:
    """The endpoints measured (on salp-1's first robot) and a robot token."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
        scenario = next(s for s in http.get("/api/v1/scenarios").json() if s["name"] == "salp-1")
        sid, robot = scenario["id"], scenario["robots"][0]["id"]
        while http.get(f"/api/v1/scenarios/{sid}/plan").json()["status"] != "succeeded":
            time.sleep(0.2)
        token = http.post(f"/api/v1/scenarios/{sid}/tokens", json={"robot_id": robot}).json()["token"]
        robot_auth = {"Authorization": f"Bearer {token}"}
        states = http.get(f"/api/v1/scenarios/{sid}/robots/{robot}/penalties", headers=robot_auth).json()["states"]
        base = f"{url}/api/v1/scenarios/{sid}/robots/{robot}"
        http.get(f"{base}/policy", headers=robot_auth)  # encoded once, then served from memory
    return {"health": f"{url}/api/v1/health", "penalty": f"{base}/penalty?state={','.join(map(str, states[3]))}",
            "policy status": base, "policy": f"{base}/policy"}, token, sid


def start_replan(url: str, sid: int) -> list[int]:
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        return [http.post(f"/api/v1/scenarios/{sid}/runs",
                          json={"method": "gen-recon-cf", "rounds": 3, "episodes": 300}).json()["id"]
                for _ in range(3)]  # queued one after another: a replan works during the whole phase


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(map_name: str, robots: int) -> None:
    """Memory of the service process (1 worker) before a fleet is loaded, with it loaded and
    every robot's policy encoded once, and after the scenario is deleted."""
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_service(Path(folder), 1)
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=300) as http:
                for s in http.get("/api/v1/scenarios").json():  # the shipped ones: load them first
                    while http.get(f"/api/v1/scenarios/{s['id']}/plan").json()["status"] != "succeeded":
                        time.sleep(0.2)
                    http.get(f"/api/v1/scenarios/{s['id']}/map")
                created = http.post("/api/v1/scenarios", json={"map": map_name, "robots": robots})
                created.raise_for_status()
                sid = created.json()["id"]
                start = time.perf_counter()
                while (plan := http.get(f"/api/v1/scenarios/{sid}/plan").json())["status"] != "succeeded":
                    assert plan["status"] != "failed", plan
                    time.sleep(0.2)
                planned = time.perf_counter() - start
                before = rss_mb(process.pid)
                start = time.perf_counter()
                for robot in created.json()["robots"]:
                    http.get(f"/api/v1/scenarios/{sid}/robots/{robot['id']}/policy").raise_for_status()
                served = time.perf_counter() - start
                loaded = rss_mb(process.pid)
                http.delete(f"/api/v1/scenarios/{sid}").raise_for_status()
                time.sleep(1.0)
                after = rss_mb(process.pid)
            print(f"{map_name}, {robots} robots: planned in the background in {planned:.1f} s; every policy served "
                  f"once in {served:.1f} s; service RSS {before:.0f} MB before, {loaded:.0f} MB loaded, "
                  f"{after:.0f} MB after DELETE ({loaded - before:.0f} MB held, "
                  f"{100 * (loaded - after) / max(loaded - before, 1e-9):.0f} % of it released)")
        finally:
            stop(process)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seconds", type=int, default=8, help="per measurement")
    parser.add_argument("--memory", nargs=2, metavar=("MAP", "ROBOTS"),
                        help="instead: the memory a fleet holds and gives back on DELETE (e.g. salp-3 500)")
    args = parser.parse_args(argv)
    if args.memory:
        return memory(args.memory[0], int(args.memory[1]))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    load = os.getloadavg()[0]
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {os.cpu_count()} cores, "
          f"load average {load:.2f} at the start; each figure's ceiling is measured just before it")
    hello, hello_url = start_hello()
    warm_up = argparse.Namespace(**{**vars(args), "seconds": 1})
    wrk(f"{hello_url}/hello", None, argparse.Namespace(**{**vars(args), "seconds": 2}))  # warm-up
    print("\n| endpoint | req/s | x ceiling | p50 ms | p99 ms | errors | server cores | wrk cores | ceiling req/s "
          "| ceiling p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    try:
        plain, plain_url = start_hello("plain_hello_app")
        try:
            ceiling = wrk(f"{hello_url}/hello", None, args, hello.pid)
            figures = wrk(f"{plain_url}/hello", None, args, plain.pid)
            print(row("hello-world FastAPI (the ceiling)", ceiling, ceiling["rps"]) + "          |         |")
            print(row("hello-world plain ASGI, no FastAPI", figures, ceiling["rps"])
                  + f" {ceiling['rps']:>8.0f} | {ceiling['p99']:>7.2f} |")
        finally:
            stop(plain)
        with tempfile.TemporaryDirectory() as folder:
            for workers in (1, 2):
                process, url = start_service(Path(folder), workers)
                try:
                    paths, token, sid = prepare(url)
                    for phase in ("idle", "replan"):
                        if phase == "replan":
                            start_replan(url, sid)
                            time.sleep(2)  # the run's process is planning by now
                        for name, target in paths.items():
                            wrk(target, None if name == "health" else token, warm_up)  # as the ceiling had
                            ceiling = wrk(f"{hello_url}/hello", None, args, hello.pid)
                            figures = wrk(target, None if name == "health" else token, args, process.pid)
                            figures["ratio"] = figures["rps"] / ceiling["rps"]
                            results[(name, phase, workers)] = figures
                            print(row(f"{name}, {phase}, {workers} worker{'s' * (workers > 1)}", figures,
                                      ceiling["rps"]) + f" {ceiling['rps']:>8.0f} | {ceiling['p99']:>7.2f} |")
                finally:
                    stop(process)
    finally:
        stop(hello)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    for name in ("health", "penalty", "policy status", "policy"):
        idle1, busy1 = results[(name, "idle", 1)], results[(name, "replan", 1)]
        idle2 = results[(name, "idle", 2)]
        print(f"{name:<14} x ceiling {idle1['ratio']:.2f} idle, {busy1['ratio']:.2f} during a replan; "
              f"replan/idle {busy1['rps'] / idle1['rps']:.2f}; 2 workers/1 worker {idle2['rps'] / idle1['rps']:.2f} "
              f"(server cores {idle1['server_cores']:.2f} -> {idle2['server_cores']:.2f}, "
              f"wrk cores {idle1['wrk_cores']:.2f} -> {idle2['wrk_cores']:.2f})")


if __name__ == "__main__":
    main()
