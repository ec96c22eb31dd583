"""The model's working environment (issue 15 item 5): a recorded Claude conversation with
extended thinking is replayed against a context built by Knight's own context functions, and
every item the model needs must be in what it was sent."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from knight.agent.context import digest, suggested_skills, workload_views, worst_workload
from knight.evaluation.report import EvalReport, WorkloadReport
from knight.npu.machine import load_machine
from knight.npu.profile import Profile
from knight.problems import load_problem
from knight.proposal import Edit
from knight.proposers import Attempt, ProposalContext, SkillSummary
from knight.proposers.claude import ClaudeProposer, supports_extended_thinking
from knight.proposers.prompt import dma_rules, machine_summary, system_prompt
from knight.skills import load_skills
from knight.store import WorkloadOutcome

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = ROOT / "tests" / "fixtures" / "anthropic" / "conversation_thinking.json"
BASELINE = ROOT / "baselines" / "moe_decode" / "baseline.py"


def _profile(total_us: float, small_share: float, verdict: str, line: str) -> dict[str, Any]:
    """A profile dict as the worker stores it (Profile.to_dict), with two cores."""
    moved = 1_000_000
    small = int(moved * small_share)
    return Profile(
        machine="trn2",
        total_ns=total_us * 1000,
        n_instructions=600,
        engines={
            f"core{c}.{e}": {"busy_ns": 1000.0, "utilisation": u}
            for c in (0, 1)
            for e, u in (("tensor", 0.05), ("vector", 0.1), ("sync", 0.2), ("dma", 0.45))
        },
        dma={
            "bytes": moved,
            "hbm_bytes": moved,
            "transfers": 40,
            "descriptors": 5000,
            "bandwidth_gbps": 50.0,
            "per_core": {"core0": {"bytes": moved // 2, "transfers": 20, "bandwidth_gbps": 25.0}},
            "active_share": 0.6,
            "active_share_per_core": {"core0": 0.6},
            "histogram": [
                {"bucket": "<256B", "count": 4000, "bytes": small},
                {"bucket": ">=4KiB", "count": 100, "bytes": moved - small},
            ],
        },
        cross_core={"sendrecv": 2, "sendrecv_bytes": 4096, "barriers": 0},
        op_counts={"dma_copy": 40},
        engine_counts={"sync": 40},
        critical_path_ns=total_us * 1000,
        critical_by_engine=[("dma_fixed", total_us * 500), ("dma_transfer", total_us * 400)],
        critical_by_line=[(line, total_us * 800)],
        bottleneck=verdict,
        hbm_utilisation=0.12,
        critical_tail=[
            {
                "op": "dma_copy",
                "unit": "sync",
                "core": 0,
                "line": line,
                "part": "dma_fixed",
                "start_ns": total_us * 900 - 200.0,
                "end_ns": total_us * 900,
            },
            {
                "op": "tensor_tensor",
                "unit": "vector",
                "core": 1,
                "line": "kernel.py:97",
                "part": "vector",
                "start_ns": total_us * 900,
                "end_ns": total_us * 1000,
            },
        ],
    ).to_dict()


@pytest.fixture(scope="module")
def problem():
    return load_problem("moe_decode")


def _champion_report(problem) -> EvalReport:
    """The champion judged on every visible workload; the last one lags its baseline most."""
    rows = []
    names = [w.name for w in problem.all_workloads(heldout=False)]
    for i, name in enumerate(names):
        worst = i == len(names) - 1
        rows.append(
            WorkloadReport(
                name=name,
                weight=1.0,
                latency_ns=90_000.0 if worst else 40_000.0,
                baseline_latency_ns=100_000.0,
                correct=True,
                profile=_profile(
                    90.0 if worst else 40.0,
                    0.7 if worst else 0.1,
                    "DMA-latency-bound: 90% of the critical path is DMA, mostly 'hidden' (kernel.py:43)"
                    if worst
                    else "DMA-bound: 80% of the critical path is transfers of 'w_down' in "
                    "4096-byte descriptors (>=4KiB) (kernel.py:74)",
                    "kernel.py:43" if worst else "kernel.py:74",
                ),
            )
        )
    return EvalReport(
        candidate_hash="ab" * 32,
        problem=problem.id,
        harness="h",
        machine="trn2",
        status="ok",
        score_ns=55_000.0,
        workloads=rows,
        profile=rows[0].profile,
    )


def _context(problem, iteration: int, recent: list[Attempt]) -> ProposalContext:
    """A context as ContextBuilder.build assembles it, from the same functions."""
    report = _champion_report(problem)
    worst = worst_workload(report)
    prof = Profile(**next(w for w in report.workloads if w.name == worst).profile)
    views = workload_views(
        problem,
        [
            WorkloadOutcome(
                name=w.name,
                latency_ns=w.latency_ns,
                correct=True,
                verdict=w.profile["bottleneck"],
                hbm_utilisation=0.12,
            )
            for w in report.workloads
        ],
    )
    for v in views:
        v.baseline_latency_ns = 100_000.0
    skills = load_skills(ROOT / "skills")
    return ProposalContext(
        problem_id=problem.id,
        problem_title=problem.spec.title,
        problem_description=problem.spec.description,
        kernel_file=problem.spec.kernel_file,
        champion_source=BASELINE.read_text(),
        champion_hash="ab" * 32,
        champion_score_ns=55_000.0,
        baseline_score_ns=100_000.0,
        profile_summary=prof.summary_text(),
        bottleneck=prof.bottleneck,
        knobs={"WEIGHT_BUFFERS": 1},
        knob_choices={"WEIGHT_BUFFERS": [1, 2]},
        knob_stats={},
        recent=recent,
        lessons=[],
        skills=[SkillSummary(s.name, s.description) for s in skills.values()],
        iteration=iteration,
        seed=0,
        cores=problem.spec.grid,
        min_gain=1.01,
        workloads=views,
        worst_workload=worst,
        critical_tail=prof.tail_text(),
        suggested_skills=suggested_skills(skills, report),
    )


def _attempts(problem) -> list[Attempt]:
    names = [w.name for w in problem.all_workloads(heldout=False)]
    outcome = [
        WorkloadOutcome(
            name=n,
            latency_ns=50_000.0 + i,
            correct=True,
            verdict="DMA-bound: 80% of the critical path is transfers",
            critical=[("dma_transfer", 0.8)],
            hbm_utilisation=0.3,
        )
        for i, n in enumerate(names)
    ]
    rejected = Attempt(
        number=2,
        hypothesis="Rotate weight loads over both HWDGE queues.",
        edits=[Edit(file="kernel.py", search="WEIGHT_BUFFERS = 1", replace="WEIGHT_BUFFERS = 2")],
        status="rejected",
        category="no_gain",
        message="speed-up 1.004x is below the 1.010x acceptance threshold",
        score_ns=54_800.0,
        speedup_vs_parent=1.004,
        skills_used=["dma-queues-and-engines"],
        workloads=workload_views(problem, outcome),
    )
    params = next(w.params for w in problem.all_workloads(heldout=False) if w.name == names[-1])
    failed = Attempt(
        number=3,
        hypothesis="Read the PSUM tile once for all tokens.",
        edits=[Edit(file="kernel.py", search="KT = 16", replace="KT = 16  # same")],
        status="failed",
        category="uninitialized_read",
        message=f"on workload {names[-1]} ("
        + ", ".join(f"{k}={v}" for k, v in params.items())
        + "): tensor_copy reads 64 of 128 elements of ps that were never written "
        "(unwritten within [0:128, 1:2] of the view in PSUM)",
        score_ns=None,
        speedup_vs_parent=None,
        skills_used=["psum-banks-and-readout"],
    )
    return [rejected, failed]


class Replay:
    """Answers each Messages API request with the next recorded reply; keeps the requests."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        return httpx2.Response(200, json=self.replies.pop(0))


@pytest.fixture(scope="module")
def replayed(problem) -> tuple[ProposalContext, list[dict[str, Any]], Any]:
    recorded = json.loads(CONVERSATION.read_text())
    api = Replay(recorded["replies"])
    client = anthropic.Anthropic(
        api_key="sk-ant-test",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(api)),
    )
    skills = load_skills(ROOT / "skills")
    proposer = ClaudeProposer(
        model="claude-sonnet-4-5",
        client=client,
        sleep=lambda s: None,
        skill_reader=lambda n: skills[n].body if n in skills else None,
    )
    ctx = _context(problem, 4, _attempts(problem))
    result = proposer.propose(ctx)
    return ctx, api.bodies, result


def _sent(bodies: list[dict[str, Any]]) -> str:
    """Everything the model was sent in the first request: system prefix and user turn."""
    first = bodies[0]
    user = " ".join(b["text"] for b in first["messages"][0]["content"] if b["type"] == "text")
    return first["system"][0]["text"] + "\n" + user


def test_the_replayed_conversation_yields_the_recorded_patch(replayed):
    _, bodies, result = replayed
    assert result.proposal is not None and len(bodies) == 2
    assert result.skills_read == ["dma-contiguous-runs"]


def test_every_item_of_the_environment_is_in_the_prompt(replayed, problem):
    ctx, bodies, _ = replayed
    text = _sent(bodies)
    visible = problem.all_workloads(heldout=False)
    # workloads with their weights, and the score named and explained
    for w in visible:
        assert re.search(rf"- {re.escape(w.name)}: weight {w.weight:g} ", text), w.name
    assert "weighted geometric mean" in text and "score" in text
    # the champion's per-workload latencies and digests, the worst one's full profile
    worst = visible[-1].name
    assert ctx.worst_workload == worst
    assert (
        f"- {worst} (weight {visible[-1].weight:g}): 90,000 ns" in text
        and "[worst: full profile below]" in text
    )
    assert f"Workload {worst}." in text and "DMA-latency-bound" in text
    # every attempt, rejected or failed, with per-workload latencies, digests and skills used
    assert f"   {visible[0].name}: 50,000 ns; DMA-bound" in text
    assert "skills used: dma-queues-and-engines" in text
    assert "skills used: psum-banks-and-readout" in text
    # the failure names the workload, its parameters and the region
    params = ", ".join(f"{k}={v}" for k, v in visible[-1].params.items())
    assert f"on workload {worst} ({params})" in text and "unwritten within [0:128, 1:2]" in text
    # the critical path's last instructions with their lines
    assert "critical path, last instructions" in text and "kernel.py:97" in text
    # HBM utilisation beside DMA-engine utilisation
    assert "of the shared HBM bandwidth; DMA engines" in text
    # DMA sharing and arbitration, cross-core memory, views, PSUM groups
    assert "Data moves FIFO within a queue" in text and "first come, first served" in text
    assert "waits for it even if it was ready earlier" in text
    assert "is a data race" in text and "Registers belong to their core" in text
    assert "positive step `a:b:s`" in text
    assert "PSUM accumulation groups" in text and "accumulate=None" in text
    assert "it does not occupy TensorE" in text
    # knobs may change; threshold stated without pushing bundles
    assert "rename or remove them" in text
    assert "at least 1.010x better" in text and "rather than bundling unrelated ideas" in text
    assert "A candidate is accepted when its score is at most 54,455 ns" in text
    # grid-matching machine text
    assert f"{problem.spec.grid} physical cores form one logical core" in text
    # suggested skills from applies-when
    assert "## Suggested skills" in text and "- dma-contiguous-runs (applies when" in text


def test_extended_thinking_is_on_and_its_blocks_travel_with_the_tool_turns(replayed):
    _, bodies, _ = replayed
    recorded = json.loads(CONVERSATION.read_text())["replies"]
    first, second = bodies
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert first["max_tokens"] == 8192 + 4096
    assert first["tool_choice"]["type"] == "auto"  # thinking refuses a forced tool choice
    assistant = second["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == recorded[0]["content"][0]  # thinking block, signature intact
    assert second["messages"][2]["content"][0]["type"] == "tool_result"


def test_thinking_support_by_model(monkeypatch):
    assert supports_extended_thinking("claude-sonnet-4-5")
    assert supports_extended_thinking("claude-opus-4-20250514")
    assert supports_extended_thinking("claude-3-7-sonnet-20250219")
    assert not supports_extended_thinking("claude-opus-4-7")
    assert not supports_extended_thinking("claude-haiku-4")
    assert not supports_extended_thinking("claude-sonnet-5-5")
    monkeypatch.setenv("KNIGHT_THINKING_BUDGET", "0")
    off = ClaudeProposer(model="claude-sonnet-4-5", client=anthropic.Anthropic(api_key="x"))
    assert off.thinking_budget == 0


def test_the_static_prefix_is_identical_across_iterations(problem):
    early = _context(problem, 2, [])
    late = _context(problem, 9, _attempts(problem))
    late.champion_score_ns = 40_000.0
    assert system_prompt(early, "Read with read_skill.") == system_prompt(
        late, "Read with read_skill."
    )


def test_machine_text_follows_the_grid():
    m = load_machine("trn2")
    one = machine_summary(m, 1)
    assert "ONE physical core" in one and "physical cores form one logical core" not in one
    assert "two" not in one.lower() and "Cross-core memory" not in one
    assert "2 physical cores form one logical core" in machine_summary(m, 2)


def test_cost_rules_state_the_documented_figures():
    """The prompt's DMA figures come from the preset; docs/npu-model.md states the same ones."""
    m = load_machine("trn2")
    rules = dma_rules(m)
    docs = (ROOT / "docs" / "npu-model.md").read_text()
    assert f"first byte moves {m.dma_first_byte_ns:,.0f} ns" in rules
    assert f"first_byte is {m.dma_first_byte_ns:,.0f} ns" in docs
    assert f"completion ({m.dma_completion_ns:.0f} ns)" in docs
    assert f"a dependant starts {m.dma_completion_ns:,.0f} ns after the last byte" in rules
    assert f"HWDGE {m.dma_t_issue_hwdge_ns:.0f} ns" in docs
    assert f"issuing unit {m.dma_t_issue_hwdge_ns:,.0f} ns for HWDGE" in rules
    # the skills defer to these figures instead of restating them
    for path in (ROOT / "skills").glob("*/SKILL.md"):
        assert not re.search(r"[0-9]+(\.[0-9]+)? ?(us|µs)\b", path.read_text()), path


def test_digest_of_a_workload():
    o = WorkloadOutcome(
        name="t1",
        latency_ns=1.0,
        correct=True,
        verdict="DMA-bound: x",
        critical=[("dma_transfer", 0.8)],
        hbm_utilisation=0.5,
    )
    assert digest(o) == "DMA-bound: x; critical dma_transfer 80%; hbm 50%"
