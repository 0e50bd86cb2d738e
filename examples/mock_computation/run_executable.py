"""Run the C mock compute engine as command tasks on the grid and check every result.

    examples/mock_computation/build.sh
    python examples/mock_computation/run_executable.py --tasks 200 --delay-ms 50
    python examples/mock_computation/run_executable.py --tasks 200 --ram-mb 16 --iterations 2000000

Each task runs ``mock_compute_engine <delay_ms> <ram_mb> <iterations>`` on a worker (the task
input is that list of arguments; the program's standard output is the result). In sleep mode
(``--delay-ms >= 0``) the engine echoes the delay; in compute mode it prints
F(iterations) mod 1e9, which the client recomputes. Each task gets a different iteration
count so that every result is distinct.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import htcgrid

HERE = Path(__file__).resolve().parent
ENGINE = HERE / "mock_compute_engine"
MODULUS = 1_000_000_000


def fibonacci_mod(n: int, m: int = MODULUS) -> int:
    """F(n) mod m by fast doubling: what the engine prints in compute mode."""

    def pair(k: int) -> tuple[int, int]:  # (F(k), F(k+1)) mod m
        if k == 0:
            return 0, 1
        a, b = pair(k >> 1)
        c = a * ((2 * b - a) % m) % m
        d = (a * a + b * b) % m
        return (d, (c + d) % m) if k & 1 else (c, d)

    return pair(n)[0]


def expected_output(argv: list[str]) -> str:
    delay_ms, _ram_mb, iterations = (int(a) for a in argv)
    return str(delay_ms if delay_ms >= 0 else fibonacci_mod(iterations))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks to run")
    parser.add_argument("--delay-ms", type=int, default=-1, help=">= 0: sleep mode; -1: compute")
    parser.add_argument("--ram-mb", type=int, default=8, help="ring buffer size (compute mode)")
    parser.add_argument("--iterations", type=int, default=1_000_000, help="steps (compute mode)")
    parser.add_argument("--store", default=None, help="store URL (default: the embedded grid)")
    parser.add_argument("--workers", type=int, default=None, help="workers started on demand")
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    if not ENGINE.exists():
        subprocess.run([str(HERE / "build.sh")], check=True)

    inputs = [
        [str(args.delay_ms), str(args.ram_mb), str(args.iterations + i)] for i in range(args.tasks)
    ]
    wrong = 0
    with (
        htcgrid.connect(args.store, workers=args.workers) as grid,
        grid.session(name="mock-compute-engine", max_attempts=3) as session,
    ):
        start = time.perf_counter()
        futures = session.submit_many(htcgrid.Command([str(ENGINE)]), inputs)
        argv_of = {f.task_id: argv for f, argv in zip(futures, inputs, strict=True)}
        for future in session.as_completed(futures):
            try:
                output = future.result().strip()
            except Exception as exc:
                print(f"task {future.task_id} failed: {exc!r}", file=sys.stderr)
                wrong += 1
                continue
            if output != expected_output(argv_of[future.task_id]):
                print(f"task {future.task_id}: printed {output!r}", file=sys.stderr)
                wrong += 1
        seconds = time.perf_counter() - start
        print(f"session {session.session_id}: {session.counts().as_dict()}")

    print(f"{args.tasks:,} engine runs in {seconds:.2f} s: {args.tasks / seconds:,.1f} tasks/s")
    if wrong:
        print(f"check FAILED: {wrong:,} wrong or failed results")
        return 1
    print(f"check passed: all {args.tasks:,} outputs are right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
