"""The evaluations table as the evaluator's run cache: nothing is simulated twice per database."""

from __future__ import annotations

from knight.evaluation.cache import cacheable
from knight.evaluation.report import RunResult
from knight.store import Database, cached_evaluation, save_evaluation


class StoreRunCache:
    """Reads and writes `RunResult`s in the `evaluations` table (one short transaction each)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, candidate: str, harness: str, workload: str, seed: int) -> RunResult | None:
        with self.db.session() as s:
            row = cached_evaluation(s, candidate, harness, workload, seed)
            return RunResult.model_validate(row.report) if row is not None else None

    def put(self, candidate: str, harness: str, result: RunResult) -> None:
        if not cacheable(result):
            return  # machine trouble is not a property of the candidate
        with self.db.session() as s:
            save_evaluation(
                s,
                candidate,
                harness,
                result.workload,
                result.seed,
                status="ok" if result.ok else "failed",
                report=result.model_dump(mode="json", exclude={"trace"}),
                latency_ns=result.latency_ns,
                outputs_digest=_digest(result),
            )


def _digest(result: RunResult) -> str | None:
    if not result.outputs:
        return None
    import hashlib

    h = hashlib.sha256()
    for name in sorted(result.outputs):
        h.update(name.encode() + b"\0" + result.outputs[name].encode())
    return h.hexdigest()[:32]
