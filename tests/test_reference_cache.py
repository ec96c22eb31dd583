"""The reference cache: the baseline's runs, stored per problem version and never trusted blindly.

An evaluation simulates only the candidate once the baseline's runs of this problem version,
machine and judge are on disk; editing the problem invalidates them, a damaged entry is
recomputed, and processes racing to write one entry leave it intact.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from knight.evaluation import LocalEvaluator, MemoryCache
from knight.evaluation.cache import ReferenceCache
from knight.evaluation.report import RunResult
from knight.problems import load_problem

CANDIDATE_EDIT = ("COLS_PER_TILE = 512", "COLS_PER_TILE = 1024")


def _evaluate(problem, reference: Path, source: str | None = None):
    source = source or problem.baseline_source().replace(*CANDIDATE_EDIT)
    with LocalEvaluator(isolate=False, cache=MemoryCache(), reference_cache=reference) as ev:
        report = ev.evaluate(source, problem, profile=False)
    assert report.ok, report.failure and report.failure.one_line()
    return report


def _runs(problem) -> int:
    return sum(len(w.seeds) for w in problem.all_workloads())


@pytest.fixture()
def problem_copy(tmp_path):
    """A private copy of rmsnorm's folder, so a test can edit the problem."""
    folder = tmp_path / "rmsnorm"
    shutil.copytree(load_problem("rmsnorm").root, folder)
    return folder


def test_a_second_candidate_simulates_only_itself(problem_copy, tmp_path):
    problem = load_problem(str(problem_copy))
    refs = tmp_path / "refs"
    first = _evaluate(problem, refs)
    assert first.simulated_runs == 2 * _runs(problem), "the baseline's runs and the candidate's"
    other = problem.baseline_source().replace("COLS_PER_TILE = 512", "COLS_PER_TILE = 256")
    second = _evaluate(problem, refs, other)
    assert second.simulated_runs == _runs(problem) and second.cached_runs == _runs(problem)
    assert second.baseline_score_ns == first.baseline_score_ns


def test_editing_the_problem_invalidates_its_baseline_runs(problem_copy, tmp_path):
    refs = tmp_path / "refs"
    before = load_problem(str(problem_copy))
    _evaluate(before, refs)
    toml = problem_copy / "problem.toml"
    toml.write_text(toml.read_text() + "\n# edited: a new problem version\n")
    after = load_problem(str(problem_copy))
    assert after.hash != before.hash
    report = _evaluate(after, refs)
    assert report.simulated_runs == 2 * _runs(after), "the baseline is simulated again"
    assert report.cached_runs == 0


def _damage(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "bit_flip":  # still valid JSON: only the checksum can tell
        entry = json.loads(text)
        body = json.loads(entry["result"])
        name, hexbits = next(iter(body["outputs"].items()))
        body["outputs"][name] = ("1" if hexbits[0] != "1" else "2") + hexbits[1:]
        entry["result"] = json.dumps(body)
        path.write_text(json.dumps(entry))
    else:  # an intact entry of another key copied over this one
        entry = json.loads(text)
        entry["key"] = entry["key"].replace("|", "|x", 1)
        path.write_text(json.dumps(entry))


@pytest.mark.parametrize("how", ["truncated", "bit_flip", "other_key"])
def test_a_damaged_entry_is_recomputed_never_trusted(problem_copy, tmp_path, how):
    problem = load_problem(str(problem_copy))
    refs = tmp_path / "refs"
    first = _evaluate(problem, refs)
    entries = sorted(refs.rglob("*.json"))
    assert len(entries) == _runs(problem)
    for path in entries:
        _damage(path, how)
    again = _evaluate(problem, refs)
    assert again.simulated_runs == 2 * _runs(problem), "every damaged baseline run is redone"
    assert again.baseline_score_ns == first.baseline_score_ns
    assert [w.correct for w in again.workloads] == [w.correct for w in first.workloads]
    # ... and written back intact: a third evaluation takes them from the cache.
    assert _evaluate(problem, refs).cached_runs == _runs(problem)


def _hammer(root: str, result_json: str, n: int) -> list[str]:
    """Write one entry `n` times while reading it back; return what every read saw."""
    cache = ReferenceCache(Path(root))
    result = RunResult.model_validate_json(result_json)
    seen = []
    for _ in range(n):
        cache.put("base", "harness", result)
        got = cache.get("base", "harness", result.workload, result.seed)
        seen.append("none" if got is None else got.model_dump_json())
    return seen


def test_two_workers_racing_to_write_one_entry_leave_it_intact(tmp_path):
    result = RunResult(
        workload="t1", seed=0, ok=True, latency_ns=123.0, outputs={"out": "00ff" * 4096}
    )
    expected = result.model_dump_json()
    with ProcessPoolExecutor(2) as pool:
        seen = [s for f in [pool.submit(_hammer, str(tmp_path), expected, 200) for _ in range(2)]
                for s in f.result()]  # fmt: skip
    assert seen and all(s == expected for s in seen), "a read saw a torn or missing entry"
    assert ReferenceCache(tmp_path).get("base", "harness", "t1", 0) == result
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".json"], (
        "no temporary file is left behind"
    )


def test_failed_runs_are_never_stored(tmp_path):
    cache = ReferenceCache(tmp_path)
    cache.put("base", "harness", RunResult(workload="t1", seed=0, ok=False))
    assert cache.get("base", "harness", "t1", 0) is None
    assert not list(tmp_path.rglob("*.json"))
