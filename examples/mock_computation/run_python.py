"""Run HTC-Grid's mock computation as Python tasks on the grid and check every result.

    python examples/mock_computation/run_python.py --tasks 1000 --sleep-ms 10 --sessions 2

Each task is ``htcgrid.workloads:mock_computation`` on ``{"index", "sleep_ms", "burn_ms",
"hold_mb"}``: it holds ``hold_mb`` MB while it burns ``burn_ms`` of CPU and sleeps
``sleep_ms``, and returns its input plus a checksum that the client verifies.
"""

from __future__ import annotations

import argparse
import sys
import time

import htcgrid
from htcgrid.workloads import expected_mock_result, mock_computation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per session")
    parser.add_argument("--sessions", type=int, default=1, help="sessions, submitted together")
    parser.add_argument("--sleep-ms", type=float, default=0.0, help="each task sleeps this")
    parser.add_argument("--burn-ms", type=float, default=0.0, help="each task burns this CPU")
    parser.add_argument("--hold-mb", type=float, default=0.0, help="each task holds this RAM")
    parser.add_argument("--store", default=None, help="store URL (default: the embedded grid)")
    parser.add_argument("--workers", type=int, default=None, help="workers started on demand")
    args = parser.parse_args()
    if args.tasks < 1 or args.sessions < 1:
        parser.error("--tasks and --sessions must be at least 1")

    total = args.tasks * args.sessions
    wrong = 0
    with htcgrid.connect(args.store, workers=args.workers) as grid:
        start = time.perf_counter()
        sessions = [grid.session(name=f"mock-{s}", max_attempts=3) for s in range(args.sessions)]
        submitted: list[tuple[htcgrid.TaskFuture, dict[str, float]]] = []
        for s, session in enumerate(sessions):
            inputs = [
                {
                    "index": s * args.tasks + i,
                    "sleep_ms": args.sleep_ms,
                    "burn_ms": args.burn_ms,
                    "hold_mb": args.hold_mb,
                }
                for i in range(args.tasks)
            ]
            futures = session.submit_many(mock_computation, inputs)
            submitted.extend(zip(futures, inputs, strict=True))
        expected = {f.task_id: task for f, task in submitted}
        for future in sessions[0].as_completed([f for f, _ in submitted]):
            try:
                value = future.result()
            except Exception as exc:
                print(f"task {future.task_id} failed: {exc!r}", file=sys.stderr)
                wrong += 1
                continue
            if value != expected_mock_result(expected[future.task_id]):
                print(f"task {future.task_id}: wrong result {value!r}", file=sys.stderr)
                wrong += 1
        seconds = time.perf_counter() - start
        for session in sessions:
            print(f"session {session.session_id}: {session.counts().as_dict()}")
            session.close()

    print(f"{total:,} tasks in {seconds:.2f} s: {total / seconds:,.0f} tasks/s")
    if wrong:
        print(f"check FAILED: {wrong:,} wrong or failed results")
        return 1
    print(f"check passed: all {total:,} results carry the right checksum")
    return 0


if __name__ == "__main__":
    sys.exit(main())
