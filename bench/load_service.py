"""Load benchmark of the service: robots' penalty queries from many concurrent clients,
first with the service idle, then while a replan (mitigation run) works.

    python -m bench.load_service [--clients 32] [--seconds 15] [--scenario 2]

Starts its own `mase serve` on a free port with a temporary SQLite database, and prints
requests per second, p50/p99 latency and errors for both phases, and their ratios.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "load-benchmark-operator"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "tokens").write_text(TOKEN + "\n")
    env = {**os.environ, "MASE_DATABASE_URL": f"sqlite:///{folder / 'db.sqlite'}",
           "MASE_TOKENS_FILE": str(folder / "tokens")}
    process = subprocess.Popen([sys.executable, "-m", "mase", "serve", "--port", str(port), "--log-level", "warning"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the service did not start")


async def hammer(url: str, paths: list[str], clients: int, seconds: float) -> tuple[np.ndarray, int]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = await http.get(rng.choice(paths))
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

    await asyncio.gather(*(client(i) for i in range(clients)))
    return np.array(latencies), errors


def report(name: str, latencies: np.ndarray, errors: int, seconds: float) -> dict:
    figures = {"rps": len(latencies) / seconds, "p50": 1e3 * np.percentile(latencies, 50),
               "p99": 1e3 * np.percentile(latencies, 99), "n": len(latencies), "errors": errors}
    print(f"{name:<22} {figures['n']:>8} requests  {figures['rps']:>8.1f} req/s  "
          f"p50 {figures['p50']:>7.1f} ms  p99 {figures['p99']:>7.1f} ms  errors {errors}")
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--scenario", type=int, default=2, help="scenario id (2: salp-1 with 10 robots)")
    parser.add_argument("--method", default="gen-recon-cf")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(Path(folder))
        try:
            with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
                scenario = http.get(f"/api/v1/scenarios/{args.scenario}").json()
                paths = []
                for robot in scenario["robots"]:
                    states = http.get(f"/api/v1/scenarios/{args.scenario}/robots/{robot['id']}/penalties").json()["states"]
                    base = f"/api/v1/scenarios/{args.scenario}/robots/{robot['id']}/penalty?state="
                    paths += [base + ",".join(map(str, s)) for s in random.Random(0).sample(states, min(50, len(states)))]
            print(f"service {url}, scenario {args.scenario} ({scenario['n_robots']} robots), {args.clients} clients, "
                  f"{args.seconds:g} s per phase, {os.cpu_count()} cores")
            idle = report("idle", *asyncio.run(hammer(url, paths, args.clients, args.seconds)), args.seconds)
            with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
                runs = []

                def start_run() -> None:
                    body = {"method": args.method, "rounds": 3, "episodes": 300}
                    runs.append(http.post(f"/api/v1/scenarios/{args.scenario}/runs", json=body).json()["id"])

                for _ in range(3):  # queued one after another: a replan works during the whole phase
                    start_run()
                busy = report("during a replan", *asyncio.run(hammer(url, paths, args.clients, args.seconds)),
                              args.seconds)
                statuses = [http.get(f"/api/v1/runs/{r}").json()["status"] for r in runs]
            print(f"runs during the phase: {statuses}")
            print(f"ratio busy/idle: throughput {busy['rps'] / idle['rps']:.2f}, "
                  f"p50 {busy['p50'] / idle['p50']:.2f}, p99 {busy['p99'] / idle['p99']:.2f}")
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
