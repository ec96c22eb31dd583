"""Retrying a model provider: bounded exponential backoff that honours the server's requested wait.

Shared by the Claude and command proposers. A round retries within `RetryBudget.max_wait_s`;
when that is spent on transient failures, the round reports an outage and the loop waits it out
(see `knight.agent.outage`) without spending an iteration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass
class RetryBudget:
    """Exponential backoff bounded by the total time a round may spend failing and waiting."""

    max_wait_s: float
    sleep: Callable[[float], None]
    initial_s: float = 2.0
    cap_s: float = 60.0
    max_waits: int = 8  # a server that keeps answering retry-after: 0 must not make us spin
    spent_s: float = 0.0
    waits: int = 0

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or None when that would pass the budget.

        The server's `retry-after` wins when it gives one (it knows when it will have capacity);
        otherwise the wait doubles from `initial_s` up to `cap_s`.
        """
        if self.waits >= self.max_waits:
            return None
        backoff = min(self.initial_s * 2**self.waits, self.cap_s)
        wait = min(retry_after, self.cap_s) if retry_after is not None else backoff
        return None if self.spent_s + wait > self.max_wait_s else wait

    def charge(self, seconds: float) -> None:
        """Count time spent in a failed attempt against the budget."""
        self.spent_s += max(0.0, seconds)

    def wait(self, seconds: float) -> None:
        """Sleep (through the injected function) and count it."""
        self.sleep(seconds)
        self.spent_s += seconds
        self.waits += 1


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """The server's requested wait: `retry-after-ms`, or `retry-after` in seconds or as a date."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None
