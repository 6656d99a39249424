"""The whole mitigation for 10 to 10 000 robots in each domain: wall time per phase, peak
memory, and the targets of issue 14.

    python -m bench.mitigation [--sizes 10 100 1000 10000] [--methods recon gen-recon-cf best-response]
                               [--domains salp overcooked warehouse] [--backend local] [--repeat 1]
                               [--timeout 900]

Each run is `Fleet.plan(scenario)` + `Mitigation(method, update_fraction=0.25).run(fleet)` with
the default settings (task budget 10 % of each robot's task cost, 5 rounds, 100 Monte Carlo
episodes or fewer for large fleets, seed 0) in a fresh subprocess, so its peak resident memory
(getrusage maxrss) is its own: "peak" is the main process, "workers" the largest worker process
of the local backend (forked, so it shares most of its pages with the main process). Time is
the wall time of plan + run, best of `--repeat` runs; the phases are `MitigationResult.seconds`
(plan, monitor, blame, generalise, replan, accept) of that run. A run that takes longer than
`--timeout` seconds is stopped and reported as such.
Targets (issue 14): 1000 robots < 8 s in each domain; 10 000 robots < 90 s and < 8 GiB;
time(10 000) <= 12 x time(1000); the acceptance step <= 20 % of a 1000-robot run.
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

    scenario = generate_scenario(load_map(map_path), n, seed=0)
    start = time.perf_counter()
    fleet = Fleet.plan(scenario, backend=backend)
    result = Mitigation(method=method, update_fraction=0.25, backend=backend).run(fleet)
    seconds = time.perf_counter() - start
    own, workers = peak_rss_mib()
    return {"seconds": seconds, "phases": result.seconds, "peak_mib": own, "workers_mib": workers,
            "nse_before": result.before.total_penalty, "nse_after": result.after.total_penalty,
            "updated": len(result.updated), "mdps": len({id(p.mdp) for p in fleet.plans})}


def run_subprocess(map_path: str, n: int, method: str, backend: str, timeout: float) -> dict | None:
    """One run in a fresh process; None if it took longer than `timeout` seconds."""
    try:
        out = subprocess.run([sys.executable, "-m", "bench.mitigation", "--one", map_path, str(n), method, backend],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"run {map_path} {n} {method} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def targets(best: dict, domains, methods, sizes, timeout: float) -> list[str]:
    """The targets' lines: per domain and method, what was met and what not."""
    def verdict(ok: bool, yes: str, no: str) -> str:
        return yes if ok else no

    lines = []
    for domain in domains:
        for method in methods:
            runs = {n: best.get((domain, method, n), "missing") for n in sizes}
            parts = []
            r1, r10 = runs.get(1000, "missing"), runs.get(10_000, "missing")
            if r1 is None:
                parts.append(f"1000 robots took over {timeout:.0f} s (NOT < 8 s)")
            elif isinstance(r1, dict):
                share = r1["phases"]["accept"] / r1["seconds"]
                parts.append(f"1000 robots {r1['seconds']:.1f} s ({verdict(r1['seconds'] < 8, '<', 'NOT <')} 8 s), "
                             f"acceptance {100 * share:.0f} % ({verdict(share <= 0.2, '<=', 'NOT <=')} 20 %)")
            if r10 is None:
                parts.append(f"10000 robots took over {timeout:.0f} s (NOT < 90 s)")
            elif isinstance(r10, dict):
                mem = r10["peak_mib"] / 1024
                parts.append(f"10000 robots {r10['seconds']:.1f} s ({verdict(r10['seconds'] < 90, '<', 'NOT <')} 90 s), "
                             f"{mem:.2f} GiB ({verdict(mem < 8, '<', 'NOT <')} 8 GiB)")
                if isinstance(r1, dict):
                    ratio = r10["seconds"] / r1["seconds"]
                    parts.append(f"time(10000) / time(1000) = {ratio:.1f} ({verdict(ratio <= 12, '<=', 'NOT <=')} 12)")
            if parts:
                lines.append(f"  {domain:<11}{method:<14}" + "; ".join(parts))
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--methods", nargs="+", default=["recon", "gen-recon-cf", "best-response"])
    parser.add_argument("--domains", nargs="+", choices=list(MAPS), default=list(MAPS))
    parser.add_argument("--backend", default="local", choices=("local", "serial", "ray"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take before it is stopped")
    parser.add_argument("--one", nargs=4, metavar=("MAP", "N", "METHOD", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.one[3])))
        return
    from bench.common import machine

    print("== whole mitigation: Fleet.plan + Mitigation(update_fraction=0.25).run, task budget 10 % ==")
    print(machine())
    print(f"backend {args.backend}; best of {args.repeat} run(s); seconds per phase of the best run")
    print(f"{'domain':<11}{'method':<14}{'robots':>6} {'total s':>8} {'plan':>6} {'monitor':>8} {'blame':>6} "
          f"{'general.':>8} {'replan':>7} {'accept':>7} {'peak MiB':>9} {'workers':>8} {'MDPs':>5} "
          f"{'J_N before -> after':>24}", flush=True)
    best: dict[tuple, dict | None] = {}
    for domain in args.domains:
        for method in args.methods:
            for n in args.sizes:
                runs = [run_subprocess(MAPS[domain], n, method, args.backend, args.timeout)
                        for _ in range(args.repeat)]
                done = [x for x in runs if x is not None]
                if not done:
                    best[(domain, method, n)] = None
                    print(f"{domain:<11}{method:<14}{n:>6}  stopped after {args.timeout:.0f} s", flush=True)
                    continue
                r = min(done, key=lambda x: x["seconds"])
                r["peak_mib"] = max(x["peak_mib"] for x in done)
                best[(domain, method, n)] = r
                p = r["phases"]
                print(f"{domain:<11}{method:<14}{n:>6} {r['seconds']:8.2f} {p['plan']:6.2f} {p['monitor']:8.2f} "
                      f"{p['blame']:6.2f} {p['generalise']:8.2f} {p['replan']:7.2f} {p['accept']:7.2f} "
                      f"{r['peak_mib']:9.0f} {r['workers_mib']:8.0f} {r['mdps']:5d} {r['nse_before']:11.2f} -> "
                      f"{r['nse_after']:9.2f}", flush=True)
    print("targets:")
    for line in targets(best, args.domains, args.methods, args.sizes, args.timeout):
        print(line)


if __name__ == "__main__":
    main()
