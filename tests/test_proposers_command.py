"""The command proposer driving a fake coding agent (a small Python script run via sys.executable)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from knight.failure import Failure
from knight.proposal import Edit
from knight.proposers import ProposalContext, ProposerUnavailable, SkillSummary
from knight.proposers.command import NO_HYPOTHESIS, CommandProposer, parse_output
from knight.proposers.prompt import ProposalFormatError

NO_MATCH = Failure(category="patch_no_match", message="the SEARCH text was not found")

BASELINE = Path(__file__).parent.parent / "baselines" / "moe_decode" / "baseline.py"
PATCH = {
    "hypothesis": "Two weight buffers let the next pair's DMAs overlap this pair's matmuls.",
    "rationale": "Removes a write-after-read wait; no arithmetic changes.",
    "tags": ["double-buffering"],
    "skills_used": [],
    "edits": [
        {"file": "kernel.py", "search": "WEIGHT_BUFFERS = 1", "replace": "WEIGHT_BUFFERS = 2"}
    ],
}
BLOCKS = """Hypothesis: fetching all 16 K-tiles per DMA amortises the fixed DMA cost.
The transfer count drops 8x; the accumulation order is untouched.

kernel.py
```python
<<<<<<< SEARCH
GU_TILES_PER_DMA = 2  # K-tiles (of 128 hidden rows) of gate/up weights fetched by one DMA
=======
GU_TILES_PER_DMA = 16  # K-tiles (of 128 hidden rows) of gate/up weights fetched by one DMA
>>>>>>> REPLACE
```
"""

# The fake agent: `--mode` picks a behaviour; every call saves its prompt as promptN.md in --state.
AGENT = r"""
import json, pathlib, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
mode, state = args["--mode"], pathlib.Path(args["--state"])
state.mkdir(exist_ok=True)
count = len(list(state.glob("prompt*.md"))) + 1
prompt = pathlib.Path(args["--prompt"]).read_text()
(state / f"prompt{count}.md").write_text(prompt)
out = pathlib.Path(args["--out"])
patch = json.loads((state.parent / "patch.json").read_text())
if mode == "json":
    out.write_text(json.dumps(patch))
elif mode == "blocks-stdout":
    print((state.parent / "blocks.txt").read_text())
elif mode == "empty-once":
    if count > 1:
        out.write_text(json.dumps(patch))
elif mode == "rate-limit":
    print("Error: rate limit exceeded, please retry later")
elif mode == "rate-limit-exit":
    print("API Error: 429 Too Many Requests", file=sys.stderr)
    sys.exit(2)
elif mode == "sleep":
    time.sleep(30)
elif mode == "fail":
    print("loading model...", file=sys.stderr)
    print("RuntimeError: the agent crashed", file=sys.stderr)
    sys.exit(1)
elif mode == "garbage-once":
    out.write_text("I think we should batch the DMAs." if count == 1 else json.dumps(patch))
elif mode == "garbage":
    out.write_text("I think we should batch the DMAs.")
"""


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def ctx() -> ProposalContext:
    return ProposalContext(
        problem_id="moe_decode",
        problem_title="Qwen3-30B-A3B decode MoE experts",
        problem_description="SwiGLU experts selected by top-8 routing, weighted and summed.",
        kernel_file="kernel.py",
        champion_source=BASELINE.read_text(),
        champion_hash="0f" * 32,
        champion_score_ns=412_000.0,
        baseline_score_ns=412_000.0,
        profile_summary="DMA active 91% of the time.",
        bottleneck="weight DMAs",
        knobs={},
        knob_choices={},
        knob_stats={},
        recent=[],
        lessons=[],
        skills=[SkillSummary("dma-batching", "Batch DMAs to amortise the fixed cost.")],
        iteration=1,
        seed=0,
    )


def agent(tmp_path: Path, mode: str, **kwargs: float) -> tuple[CommandProposer, Sleeps, Path]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    (tmp_path / "patch.json").write_text(json.dumps(PATCH))
    (tmp_path / "blocks.txt").write_text(BLOCKS)
    state = tmp_path / "state"
    template = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --mode {mode} "
        f"--state {shlex.quote(str(state))} --prompt {{prompt_file}} --out {{output_file}}"
    )
    sleeps = Sleeps()
    return CommandProposer(template, sleep=sleeps, **kwargs), sleeps, state


def test_json_answer_from_the_output_file(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, state = agent(tmp_path, "json")
    result = proposer.propose(ctx)
    assert result.failure is None and sleeps == []
    assert result.proposal is not None and result.proposal.hypothesis == PATCH["hypothesis"]
    assert result.proposal.edits == [Edit(**PATCH["edits"][0])]
    prompt = (state / "prompt1.md").read_text()
    assert "bit-exact" in prompt and "# Kernel language" in prompt and "dma-batching" in prompt
    line = (
        BASELINE.read_text()
        .splitlines()
        .index("WEIGHT_BUFFERS = 1  # weight buffers rotated across (token, expert) pairs")
        + 1
    )
    assert f"{line} | WEIGHT_BUFFERS = 1" in prompt
    assert "<<<<<<< SEARCH" in prompt and '"edits"' in prompt
    (call,) = result.llm_calls
    assert call.status == "ok" and call.cost_usd == 0 and call.response["returncode"] == 0
    assert [t.kind for t in result.transcript][-1] == "text"


def test_the_prompt_gives_the_absolute_path_of_the_skills(
    tmp_path: Path, ctx: ProposalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent must find skill bodies whatever directory Knight runs in."""
    skills = tmp_path / "my skills"
    (skills / "dma-batching").mkdir(parents=True)
    (skills / "dma-batching" / "SKILL.md").write_text(
        "---\nname: dma-batching\ndescription: d\n---\nbody\n"
    )
    monkeypatch.setenv("KNIGHT_SKILLS", str(skills))
    proposer, _, state = agent(tmp_path, "json")
    proposer.propose(ctx)
    assert (
        f"Skill bodies are in {skills.resolve()}/<name>/SKILL.md"
        in (state / "prompt1.md").read_text()
    )


def test_search_replace_blocks_on_stdout(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, _, _ = agent(tmp_path, "blocks-stdout")
    result = proposer.propose(ctx)
    assert result.proposal is not None
    assert (
        result.proposal.hypothesis
        == "fetching all 16 K-tiles per DMA amortises the fixed DMA cost."
    )
    assert result.proposal.rationale.startswith("The transfer count drops 8x")
    (edit,) = result.proposal.edits
    assert edit.file == "kernel.py" and edit.replace.startswith("GU_TILES_PER_DMA = 16")


def test_empty_output_backs_off_then_succeeds(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, _ = agent(tmp_path, "empty-once")
    result = proposer.propose(ctx)
    assert result.proposal is not None and sleeps == [2.0]
    first, second = result.llm_calls
    assert first.status == "error" and "no output" in first.error and second.status == "ok"


def test_rate_limit_forever_is_bounded(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, state = agent(tmp_path, "rate-limit", max_wait_s=20)
    result = proposer.propose(ctx)
    assert result.proposal is None and result.failure.category == "proposer_error"
    assert "rate limited" in result.failure.message and "gave up" in result.failure.message
    assert sleeps == [2.0, 4.0, 8.0] and sum(sleeps) <= 20
    assert len(list(state.glob("prompt*.md"))) == 4


def test_rate_limited_exit_is_retried_not_fatal(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, _ = agent(tmp_path, "rate-limit-exit", max_wait_s=5)
    result = proposer.propose(ctx)
    assert result.failure.category == "proposer_error" and "rate limited" in result.failure.message
    assert sleeps == [2.0]


def test_timeout_is_proposer_error(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, _ = agent(tmp_path, "sleep", timeout_s=1)
    result = proposer.propose(ctx)
    assert result.failure.category == "proposer_error"
    assert result.failure.message == "command timed out after 1 s"
    assert sleeps == [] and result.llm_calls[0].response["timed_out"] is True


def test_nonzero_exit_reports_the_last_stderr_line(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, _ = agent(tmp_path, "fail")
    result = proposer.propose(ctx)
    assert result.failure.category == "proposer_error"
    assert result.failure.message == "command exited with status 1: RuntimeError: the agent crashed"
    assert sleeps == []


def test_unreadable_answer_is_asked_again(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, sleeps, state = agent(tmp_path, "garbage-once")
    result = proposer.propose(ctx)
    assert result.proposal is not None and sleeps == []
    assert "Your answer could not be read" in (state / "prompt2.md").read_text()


def test_unreadable_twice_is_malformed(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, _, _ = agent(tmp_path, "garbage")
    result = proposer.propose(ctx)
    assert result.failure.category == "malformed_proposal" and "neither" in result.failure.message
    assert proposer.fix(ctx, NO_MATCH) is None


def test_fix_runs_again_with_the_error(tmp_path: Path, ctx: ProposalContext) -> None:
    proposer, _, state = agent(tmp_path, "json")
    assert proposer.fix(ctx, NO_MATCH) is None
    proposer.propose(ctx)
    result = proposer.fix(ctx, NO_MATCH)
    assert result is not None and result.proposal is not None
    assert [c.round for c in result.llm_calls] == [1]
    prompt = (state / "prompt2.md").read_text()
    assert prompt.startswith((state / "prompt1.md").read_text())
    assert (
        "The patch: the SEARCH text was not found." in prompt and '"WEIGHT_BUFFERS = 1"' in prompt
    )
    assert result.transcript[0].name == "Fix" and {t.round for t in result.transcript} == {1}
    assert proposer.transcript[-len(result.transcript) :] == result.transcript


def test_unusable_templates_are_unavailable() -> None:
    with pytest.raises(ProposerUnavailable, match="command not found"):
        CommandProposer("no-such-agent-here-xyz --prompt {prompt_file}")
    with pytest.raises(ProposerUnavailable, match="prompt_file"):
        CommandProposer(f"{shlex.quote(sys.executable)} -c pass")
    with pytest.raises(ProposerUnavailable, match="cannot parse"):
        CommandProposer("agent 'unterminated {prompt_file}")


def test_parse_output_forms() -> None:
    fenced = "Here is my patch:\n```json\n" + json.dumps(PATCH, indent=1) + "\n```\n"
    assert parse_output(fenced, "kernel.py").hypothesis == PATCH["hypothesis"]
    wrapped = json.dumps({"name": "submit_patch", "input": PATCH})
    assert parse_output(wrapped, "kernel.py").edits[0].replace == "WEIGHT_BUFFERS = 2"
    bare = "<<<<<<< SEARCH\nWEIGHT_BUFFERS = 1\n=======\nWEIGHT_BUFFERS = 2\n>>>>>>> REPLACE\n"
    proposal = parse_output(bare, "kernel.py")
    assert proposal.hypothesis == NO_HYPOTHESIS and proposal.edits[0].file == "kernel.py"
    with pytest.raises(ProposalFormatError, match="edits.0.replace"):
        parse_output(
            json.dumps({**PATCH, "edits": [{"file": "kernel.py", "search": "x"}]}), "kernel.py"
        )
    with pytest.raises(ProposalFormatError, match="unterminated"):
        parse_output("<<<<<<< SEARCH\nx\n", "kernel.py")
