"""The Claude proposer against recorded Messages API responses (httpx2.MockTransport, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from knight.failure import Failure
from knight.proposal import Edit
from knight.proposers import Attempt, KnobStat, ProposalContext, ProposerUnavailable, SkillSummary
from knight.proposers import claude as claude_module
from knight.proposers.claude import ClaudeProposer, claude_available
from knight.proposers.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceConfigError,
    call_cost,
    load_prices,
    price_for,
)
from knight.proposers.prompt import SUBMIT_PATCH_SCHEMA
from knight.proposers.retry import RetryBudget, retry_after_s

NO_MATCH = Failure(category="patch_no_match", message="the SEARCH text was not found")

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
BASELINE = Path(__file__).parent.parent / "baselines" / "moe_decode" / "baseline.py"
SKILL_BODY = (
    "# dma-batching\nMove whole K-tile ranges in one transfer; keep >= 2 KiB per partition."
)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class FakeAPI:
    """A scripted Messages API: each request takes the next reply; every request is kept."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.bodies.append(json.loads(request.content))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply):
            return reply(request)
        status, body, headers = reply if isinstance(reply, tuple) else (200, reply, {})
        if isinstance(body, str) and not body.startswith("raw:"):
            body = fixture(body)
        if isinstance(body, str):
            return httpx2.Response(status, content=body[4:].encode(), headers=headers)
        return httpx2.Response(status, json=body, headers=headers)


def client_for(api: FakeAPI) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="sk-ant-test-secret",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(api)),
    )


class Sleeps(list):
    """An injected sleep that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(api: FakeAPI, **kwargs: Any) -> tuple[ClaudeProposer, Sleeps]:
    sleeps = Sleeps()
    kwargs.setdefault("skill_reader", {"dma-batching": SKILL_BODY}.get)
    proposer = ClaudeProposer(
        model="claude-sonnet-5-5", client=client_for(api), sleep=sleeps, **kwargs
    )
    return proposer, sleeps


@pytest.fixture
def ctx() -> ProposalContext:
    earlier = Attempt(
        number=3,
        hypothesis="Fetch gate/up weights with 16 K-tiles per DMA.",
        edits=[
            Edit(file="kernel.py", search="GU_TILES_PER_DMA = 2", replace="GU_TILES_PER_DMA = 16")
        ],
        status="rejected",
        category="mismatch_rounding",
        message="1-ULP differences in 12% of elements",
        score_ns=None,
        speedup_vs_parent=None,
        tags=["dma-batching"],
    )
    return ProposalContext(
        problem_id="moe_decode",
        problem_title="Qwen3-30B-A3B decode MoE experts",
        problem_description="SwiGLU experts selected by top-8 routing, weighted and summed.",
        kernel_file="kernel.py",
        champion_source=BASELINE.read_text(),
        champion_hash="0f" * 32,
        champion_score_ns=412_000.0,
        baseline_score_ns=412_000.0,
        profile_summary="DMA active 91% of the time; 258 transfers of 192 B per partition.",
        bottleneck="weight DMAs: fixed cost per 192-byte descriptor",
        knobs={"GU_TILES_PER_DMA": 2, "WEIGHT_BUFFERS": 1},
        knob_choices={"GU_TILES_PER_DMA": [1, 2, 4, 8, 16], "WEIGHT_BUFFERS": [1, 2]},
        knob_stats={("GU_TILES_PER_DMA", "16"): KnobStat(tried=1, failed=1)},
        recent=[earlier],
        lessons=["Changing the K-tile order of the gate/up accumulation changes the bits."],
        skills=[
            SkillSummary("dma-batching", "Batch DMAs to amortise the fixed cost."),
            SkillSummary("double-buffering", "Rotate buffers so loads overlap compute."),
        ],
        iteration=4,
        seed=0,
    )


def object_schemas(schema: Any) -> list[dict[str, Any]]:
    """Every object-typed schema inside `schema`."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append(schema)
        for value in schema.values():
            found += object_schemas(value)
    elif isinstance(schema, list):
        for value in schema:
            found += object_schemas(value)
    return found


# ----------------------------------------------------------------------------- a good patch


def test_good_patch_request_and_result(ctx: ProposalContext) -> None:
    api = FakeAPI("submit_patch")
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)

    assert result.failure is None and sleeps == []
    assert result.proposal is not None
    assert result.proposal.hypothesis.startswith("Double-buffering the expert weights")
    assert result.proposal.tags == ["double-buffering", "dma-overlap"]
    assert result.proposal.skills_used == ["double-buffering"]
    assert result.proposal.edits[0].replace.startswith("WEIGHT_BUFFERS = 2")

    (body,) = api.bodies
    assert api.requests[0].url.path == "/v1/messages"
    assert "temperature" not in body
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == 8192
    tools = {t["name"]: t for t in body["tools"]}
    assert set(tools) == {"read_skill", "submit_patch"}
    submit = tools["submit_patch"]
    assert submit["input_schema"] == SUBMIT_PATCH_SCHEMA
    schema = submit["input_schema"]
    assert set(schema["properties"]) == {"hypothesis", "rationale", "tags", "skills_used", "edits"}
    for name in ("tags", "skills_used"):
        assert schema["properties"][name]["items"] == {"type": "string"}
    assert schema["properties"]["hypothesis"]["type"] == "string"
    edit_schema = schema["properties"]["edits"]["items"]
    assert set(edit_schema["properties"]) == {"file", "search", "replace"}
    assert all(s.get("additionalProperties") is False for s in object_schemas(schema))
    assert len(object_schemas(schema)) == 2
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    (system,) = body["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert "bit-exact" in system["text"] and "dma-batching: Batch DMAs" in system["text"]
    assert "nisa.nc_matmul(dst, stationary, moving, is_stationary_onezero=False" in system["text"]
    assert (
        "nisa.dma_copy(dst, src, oob_mode=nisa.oob_mode.error, dge_mode=nisa.dge_mode.unknown"
        in system["text"]
    )
    assert "the first byte moves 1,000 ns after the trigger" in system["text"]
    assert "Data moves FIFO within a queue" in system["text"]

    (message,) = body["messages"]
    text = message["content"][0]["text"]
    assert message["role"] == "user"
    line = (
        BASELINE.read_text()
        .splitlines()
        .index("WEIGHT_BUFFERS = 1  # weight buffers rotated across (token, expert) pairs")
        + 1
    )
    assert f"{line} | WEIGHT_BUFFERS = 1" in text  # the source with line numbers
    assert "Bottleneck: weight DMAs" in text
    assert "#3 rejected (mismatch_rounding)" in text and "+GU_TILES_PER_DMA = 16" in text
    assert "GU_TILES_PER_DMA = 2; choices [1, 2, 4, 8, 16]; record: 16: tried 1" in text
    assert "Changing the K-tile order" in text
    assert message["content"][-1]["cache_control"] == {"type": "ephemeral"}

    (call,) = result.llm_calls
    assert (call.input_tokens, call.output_tokens) == (2841, 412)
    assert (call.cache_write_tokens, call.cache_read_tokens) == (3120, 0)
    assert call.cost_usd == pytest.approx((2841 * 3 + 412 * 15 + 3120 * 3.75) / 1e6)
    assert result.cost_usd == call.cost_usd
    assert call.status == "ok" and call.round == 0 and call.model == "claude-sonnet-5-5"
    assert (
        call.request["tools"] == body["tools"]
        and call.response["id"] == fixture("submit_patch")["id"]
    )
    assert "sk-ant-test-secret" not in json.dumps([call.request, call.response])

    kinds = [(t.role, t.kind) for t in result.transcript]
    assert kinds[0] == ("system", "system")
    assert ("user", "prompt-section") in kinds and kinds[-2:] == [
        ("assistant", "text"),
        ("assistant", "tool_use"),
    ]
    assert "<<<<<<< SEARCH" in result.transcript[-1].content
    json.dumps([t.model_dump(mode="json") for t in result.transcript])  # --json dumps it whole


def test_without_skill_reader_only_submit_patch_is_offered(ctx: ProposalContext) -> None:
    api = FakeAPI("submit_patch")
    proposer, _ = make(api, skill_reader=None)
    assert proposer.propose(ctx).proposal is not None
    assert [t["name"] for t in api.bodies[0]["tools"]] == ["submit_patch"]


# ----------------------------------------------------------------------------- fix rounds


def test_fix_continues_the_same_conversation(ctx: ProposalContext) -> None:
    api = FakeAPI("submit_patch", "submit_patch_fixed")
    proposer, _ = make(api)
    first = proposer.propose(ctx)
    failure = Failure(
        category="patch_no_match",
        message="the SEARCH text was not found",
        edit_index=0,
        file="kernel.py",
    )
    error = "Edit 1 on kernel.py: the SEARCH text was not found."
    second = proposer.fix(ctx, failure)

    assert second is not None and second.proposal is not None
    assert second.proposal.edits == [
        Edit(file="kernel.py", search="WEIGHT_BUFFERS = 1", replace="WEIGHT_BUFFERS = 2")
    ]
    user, assistant, answer = api.bodies[1]["messages"]
    assert user["content"][0]["text"] == api.bodies[0]["messages"][0]["content"][0]["text"]
    assert "cache_control" not in user["content"][0]  # the breakpoint moved to the newest block
    assert answer["content"][-1]["cache_control"] == {"type": "ephemeral"}
    first_call = fixture("submit_patch")["content"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][1] == {k: first_call[k] for k in ("type", "id", "name", "input")}
    (result_block,) = answer["content"]
    assert result_block["type"] == "tool_result" and result_block["is_error"] is True
    assert result_block["tool_use_id"] == first_call["id"]
    assert error in result_block["content"]
    assert api.bodies[1]["system"] == api.bodies[0]["system"]  # the cached prefix is unchanged

    assert [c.round for c in first.llm_calls] == [0] and [c.round for c in second.llm_calls] == [1]
    assert second.llm_calls[0].cache_read_tokens == 5961
    # Each result carries its own round; together they are the whole conversation.
    assert proposer.transcript == first.transcript + second.transcript
    assert {t.round for t in first.transcript} == {0} and {t.round for t in second.transcript} == {
        1
    }
    opening = second.transcript[0]
    assert (opening.kind, opening.name, opening.is_error) == ("tool_result", "submit_patch", True)
    assert error in opening.content
    assert [t.kind for t in second.transcript[1:]] == ["text", "tool_use"]


def test_fix_without_a_submitted_patch_returns_none(ctx: ProposalContext) -> None:
    proposer, _ = make(FakeAPI("submit_patch"))
    assert proposer.fix(ctx, NO_MATCH) is None


# ----------------------------------------------------------------------------- tools


def test_read_skill_then_submit_patch(ctx: ProposalContext) -> None:
    api = FakeAPI("read_skill", "submit_patch")
    proposer, _ = make(api)
    result = proposer.propose(ctx)

    assert result.proposal is not None and len(api.bodies) == 2
    tool_result = api.bodies[1]["messages"][2]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["content"] == SKILL_BODY
    assert "is_error" not in tool_result
    assert tool_result["tool_use_id"] == fixture("read_skill")["content"][1]["id"]
    assert [c.round for c in result.llm_calls] == [0, 0]
    assert any(t.kind == "tool_result" and t.name == "read_skill" for t in result.transcript)


def test_unknown_skill_is_a_tool_error(ctx: ProposalContext) -> None:
    api = FakeAPI("read_skill", "submit_patch")
    proposer, _ = make(api, skill_reader=lambda name: None)
    assert proposer.propose(ctx).proposal is not None
    tool_result = api.bodies[1]["messages"][2]["content"][0]
    assert tool_result["is_error"] is True
    assert (
        "unknown skill 'dma-batching'" in tool_result["content"]
        and "double-buffering" in tool_result["content"]
    )


def test_submit_is_forced_on_the_last_turn(ctx: ProposalContext) -> None:
    api = FakeAPI("read_skill", "read_skill", "submit_patch")
    proposer, _ = make(api, max_turns=3)
    assert proposer.propose(ctx).proposal is not None
    choices = [b["tool_choice"] for b in api.bodies]
    assert choices[:2] == [{"type": "auto", "disable_parallel_tool_use": True}] * 2
    assert choices[2] == {"type": "tool", "name": "submit_patch"}


# ----------------------------------------------------------------------------- malformed answers


def test_malformed_call_is_asked_again_and_corrected(ctx: ProposalContext) -> None:
    api = FakeAPI("submit_patch_malformed", "submit_patch")
    proposer, _ = make(api)
    result = proposer.propose(ctx)

    assert result.proposal is not None and result.failure is None
    retry = api.bodies[1]
    assert retry["tool_choice"] == {"type": "tool", "name": "submit_patch"}
    block = retry["messages"][-1]["content"][0]
    assert block["type"] == "tool_result" and block["is_error"] is True
    for problem in (
        "rationale: Field required",
        "tags: Input should be a valid list",
        "edits.0.replace: Field required",
    ):
        assert problem in block["content"]


def test_malformed_twice_is_malformed_proposal(ctx: ProposalContext) -> None:
    api = FakeAPI("submit_patch_malformed")
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)
    assert result.proposal is None and result.failure.category == "malformed_proposal"
    assert "edits.0.replace" in result.failure.message and "\n" not in result.failure.message
    assert len(api.bodies) == 2 and sleeps == []
    assert proposer.fix(ctx, NO_MATCH) is None


def test_text_only_answer_is_asked_again(ctx: ProposalContext) -> None:
    api = FakeAPI("text_only", "submit_patch")
    proposer, _ = make(api)
    result = proposer.propose(ctx)
    assert result.proposal is not None
    nudge = api.bodies[1]["messages"][-1]
    assert nudge["role"] == "user" and "without a submit_patch call" in nudge["content"][0]["text"]
    assert api.bodies[1]["tool_choice"] == {"type": "tool", "name": "submit_patch"}


def test_max_tokens_cut_is_asked_again_then_malformed(ctx: ProposalContext) -> None:
    api = FakeAPI("max_tokens")
    proposer, _ = make(api)
    result = proposer.propose(ctx)
    assert (
        result.failure.category == "malformed_proposal"
        and "max_tokens=8192" in result.failure.message
    )
    assert len(api.bodies) == 2


# ----------------------------------------------------------------------------- resilience


def test_429_with_retry_after_then_success(ctx: ProposalContext) -> None:
    api = FakeAPI((429, "error_rate_limit", {"retry-after": "7"}), "submit_patch")
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)

    assert sleeps == [7.0]
    assert result.proposal is not None and result.failure is None  # no iteration lost
    assert len(api.bodies) == 2 and api.bodies[0] == api.bodies[1]
    error, ok = result.llm_calls
    assert error.status == "error" and "429 rate_limit_error" in error.error and error.cost_usd == 0
    assert ok.status == "ok"
    assert any(t.kind == "error" and "retrying in 7 s" in t.content for t in result.transcript)


def test_empty_429_storm_is_bounded(ctx: ProposalContext) -> None:
    api = FakeAPI((429, "raw:", {}))  # an empty body, forever
    proposer, sleeps = make(api, max_wait_s=300)
    result = proposer.propose(ctx)

    assert result.proposal is None and result.failure.category == "proposer_error"
    assert "Anthropic API 429" in result.failure.message and "gave up" in result.failure.message
    assert "\n" not in result.failure.message
    assert sum(sleeps) <= 300 and len(sleeps) >= 3
    assert sleeps == sorted(sleeps)  # backing off, not spinning
    assert len(api.requests) == len(sleeps) + 1 <= 10


@pytest.mark.parametrize(
    "status, body",
    [(529, "error_overloaded"), (503, "raw:"), (502, "raw:<html>bad gateway</html>")],
)
def test_transient_statuses_are_retried(ctx: ProposalContext, status: int, body: str) -> None:
    api = FakeAPI((status, body, {}), "submit_patch")
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)
    assert result.proposal is not None and sleeps == [2.0]


def test_permanent_500_is_proposer_error(ctx: ProposalContext) -> None:
    api = FakeAPI((500, "error_api", {}))
    proposer, sleeps = make(api, max_wait_s=60)
    result = proposer.propose(ctx)
    assert result.failure.category == "proposer_error"
    assert result.failure.message.startswith("Anthropic API 500 api_error: Internal server error")
    assert sum(sleeps) <= 60 and len(api.requests) <= 6


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (
            400,
            "error_invalid_request",
            "Anthropic API 400 invalid_request_error: prompt is too long",
        ),
        (401, "error_authentication", "Anthropic API 401 authentication_error: invalid x-api-key"),
    ],
)
def test_permanent_4xx_fails_at_once(
    ctx: ProposalContext, status: int, body: str, expected: str
) -> None:
    api = FakeAPI((status, body, {}))
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)
    assert result.failure.category == "proposer_error" and result.failure.message.startswith(
        expected
    )
    assert sleeps == [] and len(api.requests) == 1
    assert (
        result.llm_calls[0].status == "error"
        and result.llm_calls[0].request["model"] == "claude-sonnet-5-5"
    )


def test_network_error_is_retried(ctx: ProposalContext) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    api = FakeAPI(refuse, "submit_patch")
    proposer, sleeps = make(api)
    assert proposer.propose(ctx).proposal is not None and sleeps == [2.0]


@pytest.mark.parametrize(
    "reply",
    [
        (200, "raw:", {}),
        (200, {}, {}),
        (200, {"type": "error", "error": {"type": "overloaded_error"}}, {}),
    ],
)
def test_unusable_200_body_is_never_a_proposal(ctx: ProposalContext, reply: tuple) -> None:
    api = FakeAPI(reply, "submit_patch")
    proposer, sleeps = make(api)
    result = proposer.propose(ctx)
    assert result.proposal is not None and sleeps == [2.0]
    assert result.llm_calls[0].status == "error"


def test_retry_budget_and_retry_after_parsing() -> None:
    sleeps = Sleeps()
    budget = RetryBudget(max_wait_s=20, sleep=sleeps)
    assert budget.next_wait() == 2.0
    assert budget.next_wait(retry_after=9.0) == 9.0
    for _ in range(3):
        budget.wait(budget.next_wait())
    assert sleeps == [2.0, 4.0, 8.0] and budget.next_wait() is None
    assert retry_after_s({"retry-after": "12"}) == 12.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({}) is None


# ----------------------------------------------------------------------------- configuration


def test_missing_key_is_unavailable_before_any_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a client was created without a key")

    monkeypatch.setattr(claude_module.anthropic, "Anthropic", no_client)
    assert claude_available() == (False, "ANTHROPIC_API_KEY is not set")
    with pytest.raises(ProposerUnavailable, match="^ANTHROPIC_API_KEY is not set$"):
        ClaudeProposer()


def test_model_from_argument_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("KNIGHT_MODEL", raising=False)
    assert claude_available() == (True, "claude-sonnet-5-5 via https://api.anthropic.com")
    monkeypatch.setenv("KNIGHT_MODEL", "claude-haiku-5-5")
    assert ClaudeProposer(client=client_for(FakeAPI("submit_patch"))).model == "claude-haiku-5-5"
    assert (
        ClaudeProposer(model="claude-opus-5-5", client=client_for(FakeAPI("submit_patch"))).model
        == "claude-opus-5-5"
    )
    with pytest.raises(ProposerUnavailable, match="no model configured"):
        ClaudeProposer(model=" ", client=client_for(FakeAPI("submit_patch")))


def test_anthropic_base_url_is_honoured(
    monkeypatch: pytest.MonkeyPatch, ctx: ProposalContext
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://gateway.example/anthropic")
    api = FakeAPI("submit_patch")
    real = anthropic.Anthropic
    made: list[dict[str, Any]] = []

    def with_transport(**kwargs: Any) -> anthropic.Anthropic:
        made.append(kwargs)  # only the transport is added; base_url still comes from the env
        return real(
            http_client=anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(api)), **kwargs
        )

    monkeypatch.setattr(claude_module.anthropic, "Anthropic", with_transport)
    assert claude_available()[1] == "claude-sonnet-5-5 via https://gateway.example/anthropic"
    proposer = ClaudeProposer(sleep=Sleeps())
    assert proposer.propose(ctx).proposal is not None
    assert made == [{"api_key": "sk-ant-from-env", "max_retries": 0}]
    (request,) = api.requests
    assert request.url.host == "gateway.example" and request.url.path == "/anthropic/v1/messages"
    assert request.headers["authorization"] == "Bearer sk-ant-from-env"


# ----------------------------------------------------------------------------- prices


def test_prices_defaults_overrides_and_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KNIGHT_PRICES", raising=False)
    assert load_prices() == DEFAULT_PRICES
    table = tmp_path / "prices.json"
    table.write_text(
        json.dumps(
            {
                "claude-sonnet-5-5": {
                    "input": 2,
                    "output": 10,
                    "cache_write": 2.5,
                    "cache_read": 0.2,
                },
                "my-model": {"input": 1, "output": 1, "cache_write": 1, "cache_read": 1},
            }
        )
    )
    monkeypatch.setenv("KNIGHT_PRICES", str(table))
    prices = load_prices()
    assert prices["claude-sonnet-5-5"].input == 2 and prices["my-model"].output == 1
    assert prices["claude-opus-5-5"] == DEFAULT_PRICES["claude-opus-5-5"]
    assert price_for("claude-sonnet-5-5-20261101", prices) == prices["claude-sonnet-5-5"]
    assert price_for("someone-elses-model", DEFAULT_PRICES) == DEFAULT_PRICES["claude-opus-5-5"]
    price = ModelPrice(input=3, output=15, cache_write=3.75, cache_read=0.3)
    assert call_cost(price, 1_000_000, 0, 1_000_000, 1_000_000) == pytest.approx(3 + 0.3 + 3.75)
    table.write_text(json.dumps({"claude-sonnet-5-5": {"input": 2}}))
    with pytest.raises(PriceConfigError, match="output"):
        load_prices()


def test_configured_prices_are_used(ctx: ProposalContext) -> None:
    price = ModelPrice(input=1, output=1, cache_write=1, cache_read=1)
    proposer, _ = make(FakeAPI("submit_patch"), prices={"claude-sonnet-5-5": price})
    (call,) = proposer.propose(ctx).llm_calls
    assert call.cost_usd == pytest.approx((2841 + 412 + 3120) / 1e6)
