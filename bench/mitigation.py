"""The whole mitigation for 10, 100 and 1000 robots in each domain: wall time per phase,
peak memory, and the time ratio 1000 / 100.

    python -m bench.mitigation [--sizes 10 100 1000] [--methods gen-recon-cf recon]
                               [--domains salp overcooked warehouse] [--backend local] [--repeat 2]

Each run is `Fleet.plan(scenario)` + `Mitigation(method, update_fraction=0.25).run(fleet)`
(slack 100 as `mase mitigate`, 100 Monte Carlo episodes, seed 0) in a fresh subprocess, so
its peak resident memory (getrusage maxrss) is its own: "peak" is the main process, "workers"
the largest worker process of the local backend (forked, so it shares most of its pages with
the main process). Time is the wall time of plan + run, best of `--repeat` runs; the phases
are `MitigationResult.seconds` (plan, monitor, blame, generalise, replan) of that run.
Targets: 100 robots < 10 s, 1000 robots < 120 s and < 4 GiB, time(1000) <= 12 x time(100).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MAPS = {"salp": "maps/salp/salp-2.map", "overcooked": "maps/overcooked/overcooked-1.map",
        "warehouse": "maps/warehouse/warehouse-1.map"}


def one(map_path: str, n: int, method: str, backend: str) -> dict:
    """One run in this process (the subprocess side)."""
    from bench.common import peak_rss_mib
    from metareasoner.mitigation import Fleet, Mitigation
    from planner.maps import load_map
    from planner.scenario import generate_scenario

    scenario = generate_scenario(load_map(map_path), n, seed=0, slack=100.0)
    start = time.perf_counter()
    fleet = Fleet.plan(scenario, backend=backend)
    result = Mitigation(method=method, update_fraction=0.25, backend=backend).run(fleet)
    seconds = time.perf_counter() - start
    own, workers = peak_rss_mib()
    return {"seconds": seconds, "phases": result.seconds, "peak_mib": own, "workers_mib": workers,
            "nse_before": result.before.total_penalty, "nse_after": result.after.total_penalty,
            "updated": len(result.updated), "mdps": len({id(p.mdp) for p in fleet.plans})}


def run_subprocess(map_path: str, n: int, method: str, backend: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.mitigation", "--one", map_path, str(n), method, backend],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"run {map_path} {n} {method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--methods", nargs="+", default=["gen-recon-cf", "recon"])
    parser.add_argument("--domains", nargs="+", choices=list(MAPS), default=list(MAPS))
    parser.add_argument("--backend", default="local", choices=("local", "serial", "ray"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", nargs=4, metavar=("MAP", "N", "METHOD", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.one[3])))
        return
    from bench.common import machine

    print("== whole mitigation: Fleet.plan + Mitigation(update_fraction=0.25).run ==")
    print(machine())
    print(f"backend {args.backend}; best of {args.repeat} runs; seconds per phase of the best run")
    print(f"{'domain':<11}{'method':<13}{'robots':>6} {'total s':>8} {'plan':>6} {'monitor':>8} {'blame':>6} "
          f"{'general.':>8} {'replan':>7} {'peak MiB':>9} {'workers':>8} {'MDPs':>5} {'J_N before -> after':>24}")
    best: dict[tuple, dict] = {}
    for domain in args.domains:
        for method in args.methods:
            for n in args.sizes:
                runs = [run_subprocess(MAPS[domain], n, method, args.backend) for _ in range(args.repeat)]
                r = min(runs, key=lambda x: x["seconds"])
                r["peak_mib"] = max(x["peak_mib"] for x in runs)
                best[(domain, method, n)] = r
                p = r["phases"]
                print(f"{domain:<11}{method:<13}{n:>6} {r['seconds']:8.2f} {p['plan']:6.2f} {p['monitor']:8.2f} "
                      f"{p['blame']:6.2f} {p['generalise']:8.2f} {p['replan']:7.2f} {r['peak_mib']:9.0f} "
                      f"{r['workers_mib']:8.0f} {r['mdps']:5d} {r['nse_before']:11.2f} -> {r['nse_after']:9.2f}",
                      flush=True)
    print("targets:")
    for domain in args.domains:
        for method in args.methods:
            t = {n: best[(domain, method, n)]["seconds"] for n in args.sizes if (domain, method, n) in best}
            parts = []
            if 100 in t:
                parts.append(f"100 robots {t[100]:.1f} s ({'<' if t[100] < 10 else 'NOT <'} 10 s)")
            if 1000 in t:
                mem = best[(domain, method, 1000)]["peak_mib"] / 1024
                parts.append(f"1000 robots {t[1000]:.1f} s ({'<' if t[1000] < 120 else 'NOT <'} 120 s), "
                             f"{mem:.2f} GiB ({'<' if mem < 4 else 'NOT <'} 4 GiB)")
            if 100 in t and 1000 in t:
                r = t[1000] / t[100]
                parts.append(f"time(1000) / time(100) = {r:.1f} ({'<=' if r <= 12 else 'NOT <='} 12)")
            print(f"  {domain:<11}{method:<13}" + "; ".join(parts))


if __name__ == "__main__":
    main()
