"""How the report writes quantities: one definition per unit, so every table and plot agrees."""

from __future__ import annotations


def us(ns: float | None) -> str:
    """Simulated nanoseconds as microseconds with two decimals ("-" when unknown)."""
    return "-" if ns is None else f"{ns / 1000:.2f} µs"


def times(ratio: float | None) -> str:
    """A speed-up (a ratio of scores or latencies), "1.234x"."""
    return "-" if ratio is None else f"{ratio:.3f}x"


def percent(share: float | None) -> str:
    """A share as a percentage: two significant digits below 10%, whole percents above."""
    if share is None:
        return "-"
    return f"{100 * share:.2g}%" if share < 0.1 else f"{100 * share:.0f}%"
