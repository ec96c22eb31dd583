"""What a proposer hands to Knight: a hypothesis and the edits (or knob settings) that test it.

The models here sit at the proposer boundary (an LLM's tool call, an external command's output,
a script file), so they are strict pydantic models: unknown fields are errors, not ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

KnobValue = bool | int | float | str


class Edit(BaseModel):
    """Replace the one place in `file` that matches `search` with `replace`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    file: str = Field(description="The editable kernel file.")
    search: str = Field(
        description="Exact text of the current source (no line numbers), matching exactly one place."
    )
    replace: str = Field(description="The text that replaces it.")


class SubmitPatch(BaseModel):
    """The `submit_patch` contract: what a model-backed proposer submits (every field required).

    The tool's JSON schema is generated from this model; answers are validated into it.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    hypothesis: str = Field(description="One sentence: what you expect to get faster, and why.")
    rationale: str = Field(
        description="Why this should work and keep the outputs bit-exact (a few sentences)."
    )
    tags: list[str] = Field(
        description="Short labels, e.g. dma-batching, double-buffering, psum, engine-balance."
    )
    skills_used: list[str] = Field(
        description="Names of the skills from the catalog this patch relies on (may be empty)."
    )
    edits: list[Edit] = Field(
        description="Search/replace edits, applied in order to the current champion source."
    )


class Proposal(SubmitPatch):
    """One hypothesis and the change that tests it: search/replace edits, knob settings, or both.

    A `SubmitPatch` whose optional parts may be left out, plus knob settings (module-level
    constants declared in the kernel's TUNABLES mapping, set by name).
    """

    model_config = ConfigDict(extra="forbid", strict=False)

    rationale: str = ""
    tags: list[str] = Field(default_factory=list)
    skills_used: list[str] = Field(default_factory=list)
    edits: list[Edit] = Field(default_factory=list)
    knobs: dict[str, KnobValue] = Field(default_factory=dict)

    @field_validator("hypothesis")
    @classmethod
    def _hypothesis_not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("hypothesis must be a non-empty sentence")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> Proposal:
        if not self.edits and not self.knobs:
            raise ValueError("a proposal needs at least one edit or one knob setting")
        return self


def tool_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` with every `$ref` inlined (tool input schemas stay flat)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items() if key != "title"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    schema.pop(
        "description", None
    )  # the model's docstring is for programmers; tools have their own
    return inline(schema)


def validation_summary(exc: ValidationError, limit: int = 8) -> str:
    """One `path: message` per problem on one line, as a proposer needs it to correct itself."""
    errors = exc.errors()
    parts = [
        f"{'.'.join(str(part) for part in err['loc']) or '(input)'}: {err['msg']}"
        for err in errors[:limit]
    ]
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


class Turn(BaseModel):
    """One readable entry of a proposer's conversation (what `knight show` prints)."""

    role: str  # system / user / assistant
    kind: str  # system, prompt-section, text, tool_use, tool_result, error
    round: int = 0  # 0 for the proposal, 1.. for fix rounds
    content: str = ""
    name: str | None = None  # the tool or prompt section
    input: Any = None  # a tool call's raw input
    is_error: bool | None = None


class ModelCall(BaseModel):
    """One request to a language model (or one run of an agent command): tokens, cost, outcome."""

    model: str
    round: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    duration_s: float = 0.0
    request: dict[str, Any] = Field(default_factory=dict)
    response: dict[str, Any] | None = Field(default_factory=dict)


_SEARCH = re.compile(r"^<{5,9} SEARCH\s*$")
_DIVIDER = re.compile(r"^={5,9}\s*$")
_REPLACE = re.compile(r"^>{5,9} REPLACE\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_FILENAME = re.compile(r"^[\w\-.]+(?:/[\w\-.]+)*$")


def parse_search_replace_blocks(text: str, default_file: str) -> list[Edit]:
    """Parse aider/OpenEvolve-style SEARCH/REPLACE blocks into edits, in order.

    A block names its file on the line right before `<<<<<<< SEARCH` (a code-fence line in
    between is skipped); otherwise it edits `default_file`. Search and replace text are kept
    verbatim, each ending with the newline of its last line. Text outside blocks is ignored.
    """
    lines = text.splitlines(keepends=True)
    edits: list[Edit] = []
    i = 0
    while i < len(lines):
        if _REPLACE.match(lines[i]):
            raise ValueError(
                f"line {i + 1}: '>>>>>>> REPLACE' without a '<<<<<<< SEARCH' before it"
            )
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        start = i
        search, i = _take_until(lines, i + 1, _DIVIDER, start, "'======='")
        replace, i = _take_until(lines, i + 1, _REPLACE, start, "'>>>>>>> REPLACE'")
        file = _filename_before(lines, start) or default_file
        edits.append(Edit(file=file, search="".join(search), replace="".join(replace)))
        i += 1
    return edits


def _take_until(
    lines: list[str], i: int, end: re.Pattern[str], block_start: int, end_name: str
) -> tuple[list[str], int]:
    """The lines from `i` up to the one matching `end`, and that line's index."""
    taken: list[str] = []
    while i < len(lines):
        if end.match(lines[i]):
            return taken, i
        if _SEARCH.match(lines[i]) or (end is _DIVIDER and _REPLACE.match(lines[i])):
            break
        taken.append(lines[i])
        i += 1
    where = f"line {i + 1}" if i < len(lines) else "the end of the text"
    raise ValueError(
        f"unterminated SEARCH/REPLACE block starting at line {block_start + 1}: "
        f"expected {end_name} before {where}"
    )


def _filename_before(lines: list[str], block_start: int) -> str | None:
    """The file named on the line before a block (skipping one code-fence line), if any."""
    i = block_start - 1
    if i >= 0 and _FENCE.match(lines[i]):
        i -= 1
    if i < 0:
        return None
    name = lines[i].strip().strip("`*")
    looks_like_path = ("." in name or "/" in name) and not name.endswith(".")
    return name if _FILENAME.match(name) and looks_like_path else None
