"""European option pricing for the portfolio example: a numpy Monte Carlo pricer (what the
grid runs), the Black-Scholes closed form (what the client checks against), and an optional
QuantLib engine.

Every trade draws its own random numbers from a generator seeded by the trade id, so a
trade's price does not depend on how the portfolio was split into tasks.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

Trade = dict[str, Any]


def make_portfolio(n_trades: int, seed: int = 7) -> list[Trade]:
    """A reproducible random book of European calls and puts on a few underlyings."""
    rng = random.Random(seed)
    trades = []
    for i in range(n_trades):
        spot = rng.choice([80.0, 100.0, 120.0, 250.0])
        trades.append(
            {
                "id": i,
                "kind": rng.choice(["call", "put"]),
                "spot": spot,
                "strike": round(spot * rng.uniform(0.8, 1.2), 2),
                "maturity_days": rng.randint(30, 3 * 365),
                "rate": round(rng.uniform(0.0, 0.05), 4),
                "dividend": round(rng.uniform(0.0, 0.03), 4),
                "volatility": round(rng.uniform(0.1, 0.5), 4),
                "quantity": rng.choice([-50, -10, 10, 25, 100]),
            }
        )
    return trades


def chunked(trades: list[Trade], size: int) -> list[list[Trade]]:
    """Split the book into tasks of ``size`` trades."""
    return [trades[i : i + size] for i in range(0, len(trades), size)]


def years(trade: Trade) -> float:
    """Time to maturity in years (Actual/365, as the QuantLib engine counts it)."""
    return float(trade["maturity_days"]) / 365.0


def mc_price(trade: Trade, paths: int) -> tuple[float, float]:
    """Monte Carlo price of one unit of a European option under Black-Scholes dynamics,
    with antithetic variates: (price, standard error)."""
    rng = np.random.default_rng(trade["id"])
    t, sigma = years(trade), trade["volatility"]
    drift = (trade["rate"] - trade["dividend"] - 0.5 * sigma * sigma) * t
    z = rng.standard_normal(max(1, paths // 2))
    shocks = sigma * math.sqrt(t) * z
    up = trade["spot"] * np.exp(drift + shocks)
    down = trade["spot"] * np.exp(drift - shocks)
    if trade["kind"] == "call":
        payoff = 0.5 * (
            np.maximum(up - trade["strike"], 0.0) + np.maximum(down - trade["strike"], 0.0)
        )
    else:
        payoff = 0.5 * (
            np.maximum(trade["strike"] - up, 0.0) + np.maximum(trade["strike"] - down, 0.0)
        )
    discount = math.exp(-trade["rate"] * t)
    price = discount * float(payoff.mean())
    stderr = (
        discount * float(payoff.std(ddof=1)) / math.sqrt(len(payoff)) if len(payoff) > 1 else 0.0
    )
    return price, stderr


def price_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """The grid task: price every trade of ``task["trades"]`` with ``task["paths"]`` paths;
    return each trade's NPV (price x quantity) and standard error, by trade id."""
    paths = int(task["paths"])
    npvs: dict[int, float] = {}
    stderrs: dict[int, float] = {}
    for trade in task["trades"]:
        price, stderr = mc_price(trade, paths)
        npvs[trade["id"]] = price * trade["quantity"]
        stderrs[trade["id"]] = stderr * abs(trade["quantity"])
    return {"npv": npvs, "stderr": stderrs}


def black_scholes(trade: Trade) -> float:
    """Closed-form price of one unit of the option (Black-Scholes-Merton with dividends)."""
    s, k, t = float(trade["spot"]), float(trade["strike"]), years(trade)
    r, q, sigma = float(trade["rate"]), float(trade["dividend"]), float(trade["volatility"])
    vol_t = sigma * math.sqrt(t)
    d1 = (math.log(s / k) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    fwd_s, disc_k = s * math.exp(-q * t), k * math.exp(-r * t)
    if trade["kind"] == "call":
        return fwd_s * _norm_cdf(d1) - disc_k * _norm_cdf(d2)
    return disc_k * _norm_cdf(-d2) - fwd_s * _norm_cdf(-d1)


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def quantlib_price_chunk(task: dict[str, Any]) -> dict[str, Any]:
    """The same task priced by QuantLib's analytic European engine (needs ``QuantLib``)."""
    import QuantLib as ql  # optional dependency, imported on the worker only when used

    today = ql.Date(15, 6, 2025)
    ql.Settings.instance().evaluationDate = today
    day_count = ql.Actual365Fixed()
    calendar = ql.NullCalendar()
    npvs: dict[int, float] = {}
    for trade in task["trades"]:
        days = trade["maturity_days"]
        kind = ql.Option.Call if trade["kind"] == "call" else ql.Option.Put
        option = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, trade["strike"]), ql.EuropeanExercise(today + days)
        )
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(trade["spot"])),
            ql.YieldTermStructureHandle(ql.FlatForward(today, trade["dividend"], day_count)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, trade["rate"], day_count)),
            ql.BlackVolTermStructureHandle(
                ql.BlackConstantVol(today, calendar, trade["volatility"], day_count)
            ),
        )
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        npvs[trade["id"]] = option.NPV() * trade["quantity"]
    return {"npv": npvs, "stderr": dict.fromkeys(npvs, 0.0)}
