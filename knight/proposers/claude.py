"""The `claude` proposer: one conversation per iteration with Claude (anthropic SDK 2.x).

The model gets the cached static prefix (rules, machine, language, skill catalog) and the
iteration's context, may call `read_skill`, and must end with a `submit_patch` call. A fix round
answers that call with the structured error in the same conversation. Transient API failures
(429, 529, 5xx, network, unusable bodies) are retried here with bounded backoff, so they never
become proposals or burn iterations; everything else ends the round as `proposer_error`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic
from anthropic.types import Message

from knight.failure import Category, Failure
from knight.proposal import ModelCall, Proposal, Turn
from knight.proposers.base import (
    ProposalContext,
    ProposalResult,
    ProposerUnavailable,
)
from knight.proposers.pricing import ModelPrice, call_cost, load_prices, price_for
from knight.proposers.prompt import (
    SUBMIT_PATCH_SCHEMA,
    TOOL_TASK,
    TOOL_TASK_NO_SKILLS,
    ProposalFormatError,
    parse_submit_patch,
    render_sections,
    system_prompt,
    user_sections,
)
from knight.proposers.retry import RetryBudget, retry_after_s
from knight.proposers.transcript import patch_text, turn

DEFAULT_MODEL = "claude-sonnet-5-5"
MODEL_ENV = "KNIGHT_MODEL"
KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"  # read by the SDK itself; we only report it
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
RETRY_ERROR_TYPES = frozenset({"rate_limit_error", "overloaded_error"})
MAX_SKILL_CHARS = 30_000  # a skill body longer than this is cut, to bound the prompt
SUBMIT = "submit_patch"
READ_SKILL = "read_skill"

SUBMIT_PATCH_TOOL: dict[str, Any] = {
    "name": SUBMIT,
    "description": (
        "Submit your hypothesis and the search/replace edits that test it. This ends your turn: "
        "Knight applies the patch to the champion source, evaluates it and reports back."
    ),
    "input_schema": SUBMIT_PATCH_SCHEMA,
    "strict": True,
}
READ_SKILL_TOOL: dict[str, Any] = {
    "name": READ_SKILL,
    "description": "Read the full text of one skill from the catalog: guidance, pitfalls, recipes.",
    "input_schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The skill's name in the catalog."}
        },
        "required": ["name"],
        "additionalProperties": False,
    },
    "strict": True,
}


# ----------------------------------------------------------------------------- configuration

THINKING_ENV = "KNIGHT_THINKING_BUDGET"  # tokens of extended thinking per request; 0 turns it off
DEFAULT_THINKING_BUDGET = 4096
MIN_THINKING_BUDGET = 1024  # the API's floor
# Models that take `thinking: {type: enabled, budget_tokens}`: Claude 3.7 Sonnet and the Claude 4
# family up to 4.6 (4.7 and later reject it in favour of adaptive thinking).
_THINKING_MODEL = re.compile(
    r"^claude-(?:3-7-sonnet|(?:opus|sonnet|haiku)-4(?:-(\d))?)(?:-\d{8})?$"
)


def supports_extended_thinking(model: str) -> bool:
    """Whether `model` accepts an extended-thinking budget (unknown models: no)."""
    m = _THINKING_MODEL.match(model)
    if not m:
        return False
    minor = int(m.group(1) or 0)
    return minor <= 6 and not (model.startswith("claude-haiku") and minor < 5)


def resolve_thinking_budget(budget: int | None, model: str) -> int:
    """The thinking budget: the argument, else $KNIGHT_THINKING_BUDGET, else the default where
    the model supports thinking; 0 means off. Raises ValueError below the API's floor."""
    if budget is None:
        raw = os.environ.get(THINKING_ENV, "").strip()
        if raw:
            try:
                budget = int(raw)
            except ValueError:
                raise ValueError(f"{THINKING_ENV} must be an integer, not {raw!r}") from None
        else:
            budget = DEFAULT_THINKING_BUDGET if supports_extended_thinking(model) else 0
    if budget and budget < MIN_THINKING_BUDGET:
        raise ValueError(f"a thinking budget must be 0 (off) or at least {MIN_THINKING_BUDGET}")
    return max(0, budget)


def resolve_model(model: str | None = None) -> str:
    """The model id: the argument, else $KNIGHT_MODEL, else the default."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    return chosen.strip()


def claude_available(model: str | None = None) -> tuple[bool, str]:
    """Whether the Claude proposer can run here, and why (or why not). Creates no client."""
    if not os.environ.get(KEY_ENV, "").strip():
        return False, f"{KEY_ENV} is not set"
    chosen = resolve_model(model)
    if not chosen:
        return False, f"no model configured (--model or {MODEL_ENV})"
    base = os.environ.get(BASE_URL_ENV) or "https://api.anthropic.com"
    return True, f"{chosen} via {base}"


# ----------------------------------------------------------------------------- retries


@dataclass
class _Failure:
    """Why one request failed, whether retrying may help, and what the server said."""

    message: str
    retryable: bool
    retry_after: float | None = None
    response: dict[str, Any] = field(default_factory=dict)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_failure(exc: anthropic.APIStatusError) -> _Failure:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else None
    error = body.get("error") if body else None
    etype = error.get("type") if isinstance(error, dict) else None
    detail = exc.api_message or (exc.body if isinstance(exc.body, str) else None) or "(empty body)"
    message = _one_line(f"Anthropic API {status}" + (f" {etype}" if etype else "") + f": {detail}")
    retryable = status in RETRY_STATUSES or etype in RETRY_ERROR_TYPES
    headers = exc.response.headers if exc.response is not None else None
    return _Failure(
        message=message,
        retryable=retryable,
        retry_after=retry_after_s(headers) if retryable else None,
        response={"status_code": status, "body": exc.body},
    )


def _exception_failure(exc: Exception) -> _Failure:
    """Classify anything the SDK raised."""
    if isinstance(exc, anthropic.APIStatusError):
        return _status_failure(exc)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        return _Failure(_one_line(f"network error: {exc.message}{cause}"), retryable=True)
    if isinstance(exc, anthropic.APIError):  # a response the SDK could not read
        return _Failure(_one_line(f"unreadable API response: {exc}"), retryable=True)
    # Credentials the SDK cannot resolve, a request it refuses locally: retrying cannot help.
    return _Failure(_one_line(f"{type(exc).__name__}: {exc}"), retryable=False)


def _body_problem(message: object) -> str | None:
    """Why a 200 response is not a usable message (an empty or foreign body), or None."""
    if not isinstance(message, Message):
        return "the API returned a body that is not a message (empty or not JSON)"
    if (
        message.type != "message"
        or not isinstance(message.content, list)
        or not message.stop_reason
    ):
        return f"the API returned an incomplete message body (type={message.type!r})"
    return None


# ----------------------------------------------------------------------------- conversation


def _tool_result(tool_use_id: str, content: str, is_error: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}
    if is_error:
        block["is_error"] = True
    return block


def _assistant_blocks(message: Message) -> list[dict[str, Any]]:
    """The assistant's content as request blocks (only the fields the API takes back)."""
    blocks: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "text":
            if block.text.strip():  # the API refuses empty text blocks in the history
                blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        else:  # thinking and other blocks must go back unchanged
            blocks.append(block.to_dict(mode="json"))
    return blocks


def _with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `messages` whose last block is a cache breakpoint, so the next turn of the same
    conversation (a skill read, a fix round) reads the whole history from the cache."""
    out = copy.deepcopy(messages)
    if out and isinstance(out[-1]["content"], list) and out[-1]["content"]:
        out[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return out


@dataclass
class _Conversation:
    """One iteration's conversation: what the API sees and what people read."""

    ctx: ProposalContext
    system: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[Turn] = field(default_factory=list)
    skills_read: list[str] = field(default_factory=list)  # skill bodies sent, in order
    round: int = 0
    pending_submit_id: str | None = None  # the submit_patch call a fix round answers
    owed_results: list[dict[str, Any]] = field(default_factory=list)  # other calls' results


@dataclass
class _Step:
    """What one assistant message amounted to."""

    proposal: Proposal | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # tool_result blocks to send
    problem: str | None = None  # why the answer is malformed, if it is


# ----------------------------------------------------------------------------- the proposer


class ClaudeProposer:
    """Proposals from Claude through the Messages API, with tools, caching and a fix loop."""

    name = "claude"

    def __init__(
        self,
        model: str | None = None,
        max_tokens: int = 8192,
        max_turns: int = 6,
        skill_reader: Callable[[str], str | None] | None = None,
        client: anthropic.Anthropic | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 300,
        prices: Mapping[str, ModelPrice] | None = None,
        thinking_budget: int | None = None,
    ) -> None:
        self.model = resolve_model(model)
        if not self.model:
            raise ProposerUnavailable(f"no model configured (--model or {MODEL_ENV})")
        try:
            self.thinking_budget = resolve_thinking_budget(thinking_budget, self.model)
        except ValueError as e:
            raise ProposerUnavailable(str(e)) from None
        if max_turns < 1 or max_tokens < 1:
            raise ValueError("max_turns and max_tokens must be at least 1")
        if client is None:
            # Decide before any client exists: without a key the SDK fails only at the first
            # request, with a bare TypeError.
            ok, reason = claude_available(self.model)
            if not ok:
                raise ProposerUnavailable(reason)
            # max_retries=0: retries are ours (bounded, recorded, testable); base_url is left to
            # the SDK so ANTHROPIC_BASE_URL works unchanged.
            client = anthropic.Anthropic(api_key=os.environ[KEY_ENV].strip(), max_retries=0)
        self._client = client
        self.max_tokens = max_tokens
        self.max_turns = max_turns
        self._skill_reader = skill_reader
        self._sleep = sleep
        self.max_wait_s = max_wait_s
        self.prices = dict(prices) if prices is not None else load_prices()
        self.price = price_for(self.model, self.prices)
        self._conv: _Conversation | None = None

    # --- the Proposer protocol

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """Start a new conversation for this iteration and return its submitted patch."""
        how = (
            "Read one with the read_skill tool."
            if self._skill_reader
            else "(Bodies are not available.)"
        )
        conv = _Conversation(ctx=ctx, system=system_prompt(ctx, how))
        self._conv = conv
        task = TOOL_TASK if self._skill_reader else TOOL_TASK_NO_SKILLS
        sections = [*user_sections(ctx), ("Task", task.format(kernel_file=ctx.kernel_file))]
        conv.messages.append(
            {"role": "user", "content": [{"type": "text", "text": render_sections(sections)}]}
        )
        conv.transcript.append(turn("system", "system", conv.system, 0))
        conv.transcript += [
            turn("user", "prompt-section", body, 0, name=title) for title, body in sections
        ]
        return self._run_round(conv, first_turn=0)

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        """Send `failure` back as the result of the last submit_patch call; None without one."""
        conv = self._conv
        if conv is None or conv.pending_submit_id is None:
            return None
        conv.ctx = ctx
        conv.round += 1
        text = (
            f"The patch failed:\n{failure.for_proposer()}\n\nCall submit_patch again with the complete "
            "corrected set of edits; they apply to the champion source shown at the start."
        )
        results = [*conv.owed_results, _tool_result(conv.pending_submit_id, text, is_error=True)]
        conv.owed_results, conv.pending_submit_id = [], None
        conv.messages.append({"role": "user", "content": results})
        first_turn = len(conv.transcript)
        conv.transcript.append(
            turn("user", "tool_result", text, conv.round, name=SUBMIT, is_error=True)
        )
        return self._run_round(conv, first_turn)

    @property
    def transcript(self) -> list[Turn]:
        """The whole current conversation, every round so far (each result holds its own round)."""
        return list(self._conv.transcript) if self._conv else []

    # --- one round: turns until a valid submit_patch, a malformed answer, or a failure

    def _run_round(self, conv: _Conversation, first_turn: int) -> ProposalResult:
        """Call the model until this round ends; the result carries the round's turns from
        `first_turn` on, so concatenating an iteration's results gives the whole conversation."""
        records: list[ModelCall] = []
        first_read = len(conv.skills_read)
        budget = RetryBudget(self.max_wait_s, self._sleep)
        second_chance = True  # a malformed answer is asked for once more
        force = False
        for calls in range(self.max_turns + 1):
            force = force or calls >= self.max_turns - 1
            message = self._call(conv, budget, records, force)
            if isinstance(message, _Failure):
                conv.pending_submit_id = None
                result = self._result(conv, first_turn, first_read, records, None)
                result.failure = Failure(category=Category.proposer_error, message=message.message)
                result.transient, result.retry_after_s = message.retryable, message.retry_after
                return result
            step = self._take(conv, message)
            if step.proposal is not None:
                return self._result(conv, first_turn, first_read, records, step.proposal)
            if step.problem is not None:
                if not second_chance:
                    return self._result(conv, first_turn, first_read, records, None, step.problem)
                second_chance, force = False, True
            conv.messages.append({"role": "user", "content": step.results})
        return self._result(
            conv,
            first_turn,
            first_read,
            records,
            None,
            f"no submit_patch call after {self.max_turns + 1} turns",
        )

    def _result(
        self,
        conv: _Conversation,
        first_turn: int,
        first_read: int,
        records: list[ModelCall],
        proposal: Proposal | None,
        malformed: str | None = None,
    ) -> ProposalResult:
        """This round's outcome; `malformed` says why the answer was unusable."""
        failure = None
        if malformed is not None:
            failure = Failure(category=Category.malformed_proposal, message=malformed)
        return ProposalResult(
            proposal,
            failure,
            llm_calls=records,
            transcript=conv.transcript[first_turn:],
            skills_read=conv.skills_read[first_read:],
        )

    # --- one assistant message

    def _take(self, conv: _Conversation, message: Message) -> _Step:
        """Record the assistant's answer and work out what it amounts to."""
        blocks = _assistant_blocks(message)
        if blocks:
            conv.messages.append({"role": "assistant", "content": blocks})
        step = _Step()
        for block in message.content:
            if block.type == "text" and block.text.strip():
                conv.transcript.append(turn("assistant", "text", block.text, conv.round))
            elif block.type == "thinking" and getattr(block, "thinking", "").strip():
                conv.transcript.append(turn("assistant", "thinking", block.thinking, conv.round))
            elif block.type == "tool_use":
                self._tool_call(conv, block.id, block.name, block.input, message.stop_reason, step)
        if step.proposal is None and step.problem is None and not step.results:
            step.problem = (
                f"the answer ended without a submit_patch call (stop_reason={message.stop_reason})"
                if message.stop_reason != "max_tokens"
                else self._cut_off()
            )
            nudge = f"{step.problem}. Answer with a submit_patch call."
            step.results.append({"type": "text", "text": nudge})
            conv.transcript.append(turn("user", "text", nudge, conv.round))
        if step.proposal is not None:
            conv.owed_results += step.results
        return step

    def _cut_off(self) -> str:
        return (
            f"the answer was cut off at max_tokens={self.max_tokens} before the call was complete; "
            "submit a smaller patch (fewer, shorter edits)"
        )

    def _tool_call(
        self,
        conv: _Conversation,
        call_id: str,
        name: str,
        data: object,
        stop_reason: str | None,
        step: _Step,
    ) -> None:
        """Answer one tool call (or accept the patch), adding to `step`."""
        shown = (
            patch_text(data)
            if name == SUBMIT and isinstance(data, dict)
            else json.dumps(data, indent=2)
        )
        conv.transcript.append(
            turn("assistant", "tool_use", shown, conv.round, name=name, input=data)
        )
        content, is_error = self._tool_answer(conv, call_id, name, data, stop_reason, step)
        if content is None:
            return
        step.results.append(_tool_result(call_id, content, is_error))
        if step.proposal is None or name != SUBMIT:
            conv.transcript.append(
                turn("user", "tool_result", content, conv.round, name=name, is_error=is_error)
            )

    def _tool_answer(
        self,
        conv: _Conversation,
        call_id: str,
        name: str,
        data: object,
        stop_reason: str | None,
        step: _Step,
    ) -> tuple[str | None, bool]:
        """(tool_result text, is_error) for one call; None text for the accepted submit_patch."""
        if name == SUBMIT:
            if step.proposal is not None:
                return "ignored: only the first submit_patch of an answer is evaluated", True
            if stop_reason == "max_tokens":
                step.problem = self._cut_off()
                return step.problem, True
            try:
                step.proposal = parse_submit_patch(data)
            except ProposalFormatError as exc:
                step.problem = f"invalid submit_patch input: {exc}"
                return f"{step.problem}. Call submit_patch again with every field valid.", True
            conv.pending_submit_id = call_id
            return None, False
        if name == READ_SKILL:
            return self._read_skill(conv, data)
        return f"unknown tool {name!r}; the tools are read_skill and submit_patch", True

    def _read_skill(self, conv: _Conversation, data: object) -> tuple[str, bool]:
        name = data.get("name") if isinstance(data, dict) else None
        body = self._skill_reader(name) if self._skill_reader and isinstance(name, str) else None
        if body is None:
            known = ", ".join(s.name for s in conv.ctx.skills) or "(none)"
            return f"unknown skill {name!r}; the catalog has: {known}", True
        conv.skills_read.append(name)
        if len(body) > MAX_SKILL_CHARS:
            body = body[:MAX_SKILL_CHARS] + f"\n... (cut at {MAX_SKILL_CHARS} characters)"
        return body, False

    # --- one API call, with retries

    def _request(self, conv: _Conversation, force: bool) -> dict[str, Any]:
        """The Messages API request body: tools, then the cached system block, then messages."""
        tools = [READ_SKILL_TOOL, SUBMIT_PATCH_TOOL] if self._skill_reader else [SUBMIT_PATCH_TOOL]
        auto = {"type": "auto", "disable_parallel_tool_use": True}
        choice: dict[str, Any] = {"type": "tool", "name": SUBMIT} if force else auto
        extra: dict[str, Any] = {}
        if self.thinking_budget:
            # Thinking refuses a forced tool choice: offer submit_patch alone instead. The output
            # budget stays max_tokens on top of the thinking budget.
            if force:
                tools, choice = [SUBMIT_PATCH_TOOL], auto
            extra["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
        return {
            "model": self.model,
            "max_tokens": self.max_tokens + self.thinking_budget,
            **extra,
            "tools": copy.deepcopy(tools),
            "tool_choice": choice,
            "system": [
                {"type": "text", "text": conv.system, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": _with_cache_breakpoint(conv.messages),
        }

    def _call(
        self, conv: _Conversation, budget: RetryBudget, records: list[ModelCall], force: bool
    ) -> Message | _Failure:
        """The model's next message, or the failure that ends the round."""
        request = self._request(conv, force)
        while True:
            start = time.monotonic()
            try:
                message = self._client.messages.create(**request)
            except (anthropic.AnthropicError, TypeError, ValueError) as exc:
                failure = _exception_failure(exc)
            else:
                problem = _body_problem(message)
                if problem is None:
                    records.append(
                        self._ok_record(conv, request, message, time.monotonic() - start)
                    )
                    return message
                # An empty or foreign 200 body is a transport fault, never an empty proposal.
                failure = _Failure(problem, retryable=True, response={"body": _raw(message)})
            elapsed = time.monotonic() - start
            budget.charge(elapsed)
            wait = budget.next_wait(failure.retry_after) if failure.retryable else None
            if wait is None:
                if failure.retryable:
                    failure.message += (
                        f"; gave up after {budget.waits + 1} attempts and {budget.spent_s:.0f} s "
                        f"(max_wait_s={self.max_wait_s:g})"
                    )
                records.append(self._error_record(conv, request, failure, elapsed))
                conv.transcript.append(turn("system", "error", failure.message, conv.round))
                return failure
            note = f"{failure.message}; retrying in {wait:g} s"
            records.append(
                self._error_record(conv, {"model": self.model, "retried": True}, failure, elapsed)
            )
            conv.transcript.append(turn("system", "error", note, conv.round))
            budget.wait(wait)

    def _ok_record(
        self, conv: _Conversation, request: dict[str, Any], message: Message, duration: float
    ) -> ModelCall:
        usage = message.usage
        tokens = {
            "input_tokens": getattr(usage, "input_tokens", None) or 0,
            "output_tokens": getattr(usage, "output_tokens", None) or 0,
            "cache_read_tokens": getattr(usage, "cache_read_input_tokens", None) or 0,
            "cache_write_tokens": getattr(usage, "cache_creation_input_tokens", None) or 0,
        }
        return ModelCall(
            model=message.model or self.model,
            round=conv.round,
            cost_usd=call_cost(self.price, **tokens),
            duration_s=duration,
            request=request,
            response=message.to_dict(mode="json"),
            **tokens,
        )

    def _error_record(
        self, conv: _Conversation, request: dict[str, Any], failure: _Failure, duration: float
    ) -> ModelCall:
        return ModelCall(
            model=self.model,
            round=conv.round,
            status="error",
            error=failure.message,
            duration_s=duration,
            request=request,
            response=_jsonable(failure.response),
        )


def _raw(value: object) -> object:
    """A JSON-friendly view of whatever the SDK returned for an unusable body."""
    if isinstance(value, Message):
        return value.to_dict(mode="json")
    return str(value)[:2000]


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))
