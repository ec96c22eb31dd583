"""The remote evaluator: the `Evaluator` protocol over HTTP, against `knight serve` (or a host
that implements docs/service.md).

Each evaluation is submitted with `wait=false` and long-polled, so a long evaluation holds no
connection open. Connection errors, 5xx and 429 are retried with capped exponential backoff
(honouring Retry-After) for an outage of up to `max_wait_s`; a job the server forgot (it restarted) is
submitted again. A server restart in the middle of a run therefore costs time, not an iteration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from knight.errors import KnightError
from knight.evaluation import EvalReport
from knight.problems import Problem

RETRY_STATUSES = {429, 500, 502, 503, 504}
POLL_S = 20.0  # long-poll window per GET


class RemoteEvaluator:
    """Judges candidates on a Knight server; the same `EvalReport`s as the local evaluator."""

    def __init__(
        self,
        url: str,
        token: str,
        machine: str | None = None,
        *,
        max_seeds: int | None = None,
        profile: bool = True,
        timeout_s: float = 30.0,
        max_wait_s: float = 120.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.machine, self.max_seeds, self.profile = machine, max_seeds, profile
        self.max_wait_s, self.backoff_s, self.max_backoff_s = max_wait_s, backoff_s, max_backoff_s
        self.retries = 0  # transient failures ridden out so far (for progress displays and tests)
        self.note = note or (lambda text: None)  # where to say that an outage began and ended
        # The read timeout must outlast one long-poll window.
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, read=max(timeout_s, POLL_S + 10.0)),
            transport=transport,
        )

    def evaluate(self, source: str, problem: Problem, *, heldout: bool = False) -> EvalReport:
        """Submit `source` for `problem` (at this client's problem version) and wait for the report."""
        body: dict[str, Any] = {
            "source": source,
            "problem": problem.id,
            "problem_hash": problem.hash,
            "machine": self.machine,
            "heldout": heldout,
            "max_seeds": self.max_seeds,
            "profile": self.profile,
        }
        while True:
            job = self._call("POST", "/v1/evaluations", json=body, params={"wait": "false"})
            while job["status"] in ("queued", "running"):
                job = self._call(
                    "GET", f"/v1/evaluations/{job['id']}", params={"wait": POLL_S}, missing_ok=True
                )
                if job is None:
                    break  # the server restarted and forgot the job: submit it again
            else:
                if job["status"] == "error":
                    raise KnightError(
                        f"the evaluator at {self.url} could not judge: {job['error']}"
                    )
                return EvalReport.model_validate(job["report"])

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RemoteEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP with retries

    def _call(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """One request, retried through an outage of up to `max_wait_s`; the JSON answer."""
        attempt, outage_since = 0, time.monotonic()
        while True:
            try:
                r = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                why, wait = f"cannot reach it ({type(e).__name__})", None
            else:
                if attempt and r.status_code not in RETRY_STATUSES:
                    self.note(f"the evaluator at {self.url} answers again")
                if r.status_code < 300:
                    return r.json()
                if r.status_code == 404 and missing_ok:
                    return None
                if r.status_code not in RETRY_STATUSES:
                    raise KnightError(f"the evaluator at {self.url} refused: {_detail(r)}")
                why, wait = f"HTTP {r.status_code}: {_detail(r)}", _retry_after(r)
            if not attempt:
                self.note(
                    f"the evaluator at {self.url}: {why}; retrying for up to "
                    f"{self.max_wait_s:.0f} s"
                )
            attempt += 1
            self.retries += 1
            pause = (
                wait if wait is not None else min(self.max_backoff_s, self.backoff_s * 2**attempt)
            )
            if time.monotonic() + pause - outage_since > self.max_wait_s:
                raise KnightError(
                    f"the evaluator at {self.url} did not answer within "
                    f"{self.max_wait_s:.0f} s (last: {why})"
                )
            time.sleep(pause)


def _detail(r: httpx.Response) -> str:
    try:
        detail = r.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else (r.text[:200] or r.reason_phrase)


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None
