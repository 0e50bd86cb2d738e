"""Price a portfolio of European options on the grid and check the total against the closed form.

    python examples/portfolio_pricing/run.py --trades 2000 --per-task 50 --paths 100000

The book is split into tasks of ``--per-task`` trades; each task prices its trades with a numpy
Monte Carlo engine on a worker; the client sums the NPVs and compares the total with the
Black-Scholes closed form, in currency and in standard errors. When ``import QuantLib`` works,
the book is priced a second time with QuantLib's analytic engine on the grid.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle

import htcgrid

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import pricer  # noqa: E402  (lives next to this script, not in an installed package)

# Workers may not have this folder on their import path (a grid started elsewhere), so the
# pricer module travels by value with the task function instead of by import.
cloudpickle.register_pickle_by_value(pricer)


def price_with_numpy(task: dict[str, Any]) -> dict[str, Any]:
    """Task handler: Monte Carlo prices of a chunk of trades (shipped to workers by value)."""
    return pricer.price_chunk(task)


def price_with_quantlib(task: dict[str, Any]) -> dict[str, Any]:
    """Task handler: QuantLib analytic prices of a chunk of trades."""
    return pricer.quantlib_price_chunk(task)


def run_book(
    session: htcgrid.Session, handler: Any, chunks: list[list[pricer.Trade]], paths: int
) -> tuple[dict[int, float], dict[int, float], float]:
    """Price every chunk on the grid; return NPV and standard error by trade id, and seconds."""
    start = time.perf_counter()
    npv: dict[int, float] = {}
    stderr: dict[int, float] = {}
    for result in session.map(handler, [{"trades": c, "paths": paths} for c in chunks]):
        npv.update(result["npv"])
        stderr.update(result["stderr"])
    return npv, stderr, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=2000, help="trades in the book")
    parser.add_argument("--per-task", type=int, default=50, help="trades priced by one task")
    parser.add_argument("--paths", type=int, default=100_000, help="Monte Carlo paths per trade")
    parser.add_argument("--seed", type=int, default=7, help="seed of the random book")
    parser.add_argument("--store", default=None, help="store URL (default: the embedded grid)")
    parser.add_argument("--workers", type=int, default=None, help="workers started on demand")
    parser.add_argument("--no-quantlib", action="store_true", help="skip the QuantLib pass")
    args = parser.parse_args()
    if args.trades < 1 or args.per_task < 1 or args.paths < 2:
        parser.error("--trades and --per-task must be >= 1, --paths >= 2")

    book = pricer.make_portfolio(args.trades, args.seed)
    chunks = pricer.chunked(book, args.per_task)
    exact = {t["id"]: pricer.black_scholes(t) * t["quantity"] for t in book}
    exact_total = math.fsum(exact.values())
    print(f"book: {len(book):,} European options in {len(chunks):,} tasks, {args.paths:,} paths")

    with htcgrid.connect(args.store, workers=args.workers) as grid:
        with grid.session(name="portfolio-pricing", max_attempts=3) as session:
            npv, stderr, seconds = run_book(session, price_with_numpy, chunks, args.paths)
        ok = report("numpy Monte Carlo", npv, stderr, exact, exact_total, seconds)
        ok = ok and len(npv) == len(book)

        if not args.no_quantlib:
            try:
                import QuantLib  # noqa: F401
            except ImportError:
                print("QuantLib: not installed, skipped (pip install QuantLib to add this pass)")
            else:
                with grid.session(name="portfolio-pricing-quantlib") as session:
                    ql_npv, ql_err, ql_s = run_book(session, price_with_quantlib, chunks, 0)
                ok = report("QuantLib analytic", ql_npv, ql_err, exact, exact_total, ql_s) and ok
    return 0 if ok else 1


def report(
    name: str,
    npv: dict[int, float],
    stderr: dict[int, float],
    exact: dict[int, float],
    exact_total: float,
    seconds: float,
) -> bool:
    """Print the total against the closed form; True when within 5 standard errors (or 1e-6
    relative for a deterministic engine)."""
    total = math.fsum(npv.values())
    error = total - exact_total
    # trades use independent random streams, so their errors add in quadrature
    sigma = math.sqrt(math.fsum(e * e for e in stderr.values()))
    worst = max(abs(npv[i] - exact[i]) for i in npv)
    tasks_rate = len(npv) / seconds if seconds > 0 else float("inf")
    print(f"{name}: {len(npv):,} trades priced in {seconds:.2f} s ({tasks_rate:,.0f} trades/s)")
    print(f"  portfolio NPV   {total:16,.4f}")
    print(f"  closed form     {exact_total:16,.4f}")
    rel = abs(error) / abs(exact_total) if exact_total else abs(error)
    line = f"  error           {error:16,.4f}  ({rel:.2e} relative"
    if sigma > 0:
        line += f", {error / sigma:+.2f} standard errors of {sigma:,.4f}"
    print(line + ")")
    print(f"  worst trade     {worst:16,.4f}")
    ok = abs(error) <= 5 * sigma if sigma > 0 else rel <= 1e-6
    print(f"  check {'passed' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
