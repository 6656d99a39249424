"""Every performance benchmark of docs/PERFORMANCE.md, one after the other (`make bench`).

    python -m bench.all [--quick]

Each runs in its own process: the task-objective solve against hiive, quantecon and
mdpsolver (bench.vi), the same per robot on the robots' MDPs (bench.small_mdps), LVI's
stages by modified policy iteration against value iteration (bench.lvi), the exact monitor
vs Monte Carlo (bench.monitor), blame evaluations per second (bench.blame), the whole
mitigation at 10/100/1000 robots (bench.mitigation).
`--quick` runs small versions (a 120 x 120 grid, fleets up to 100 robots, one repeat) to
check that everything works. Timings are wall clock on whatever else the machine is doing:
each module prints the load average it started with.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

FULL = [["bench.vi"], ["bench.small_mdps"], ["bench.lvi"], ["bench.monitor"], ["bench.blame"],
        ["bench.mitigation"]]
QUICK = [["bench.vi", "--side", "120", "--repeat", "1"], ["bench.small_mdps", "--quick"],
         ["bench.lvi", "--side", "120", "--repeat", "1"],
         ["bench.monitor", "--sizes", "10", "--tolerances", "0.01", "--repeat", "1"],
         ["bench.blame", "--robots", "30", "--episodes", "5", "--repeat", "1"],
         ["bench.mitigation", "--sizes", "10", "100", "--repeat", "1"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small versions, to check that everything runs")
    args = parser.parse_args(argv)
    failed = []
    start = time.perf_counter()
    for command in QUICK if args.quick else FULL:
        print(f"\n$ python -m {' '.join(command)}", flush=True)
        if subprocess.run([sys.executable, "-W", "ignore", "-m", *command]).returncode != 0:
            failed.append(command[0])
    print(f"\nall benchmarks done in {(time.perf_counter() - start) / 60:.1f} min"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
