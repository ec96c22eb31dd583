"""Waiting out a model-provider outage without spending the user's budget.

A proposal that failed only for transient reasons (rate limit, overload, 5xx, network) is not an
iteration: the loop records its calls as proposer events of the run, waits with bounded backoff
and asks again, until the outage has lasted `max_outage_s`; then the run pauses, resumable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_OUTAGE_S = 15 * 60.0


@dataclass
class OutageBackoff:
    """Backoff between proposal attempts during one outage: doubling, capped, honouring hints."""

    max_outage_s: float
    clock: Callable[[], float]
    initial_s: float = 5.0
    cap_s: float = 60.0
    started: float | None = None
    waits: int = 0

    def begin(self) -> None:
        """Mark the first failed attempt (a no-op while an outage is already running)."""
        if self.started is None:
            self.started = self.clock()

    def next_wait(self, retry_after: float | None) -> float | None:
        """Seconds to wait before asking again, or None when that would pass `max_outage_s`."""
        assert self.started is not None, "begin() first"
        backoff = min(self.initial_s * 2**self.waits, self.cap_s)
        wait = min(retry_after, self.cap_s) if retry_after is not None else backoff
        elapsed = self.clock() - self.started
        return None if elapsed + wait > self.max_outage_s else wait

    def waited(self) -> None:
        """Count one wait (the next one backs off further)."""
        self.waits += 1

    def elapsed_s(self) -> float:
        """How long the current outage has lasted."""
        return 0.0 if self.started is None else self.clock() - self.started

    def reset(self) -> None:
        """The provider answered: the next failure starts a new outage."""
        self.started, self.waits = None, 0
