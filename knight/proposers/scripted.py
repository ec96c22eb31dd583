"""The scripted proposer: proposals read from a JSONL file, one per iteration.

For tests, demos and a human's own patches. Iteration n (1-based) uses the n-th proposal line,
so a resumed run continues where it stopped. A line may carry `"fix": [...]`, follow-up
proposals handed out in order when the loop asks that iteration for a fix. See
docs/offline-proposer.md for the format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from knight.errors import UsageError
from knight.failure import Category, Failure
from knight.proposal import Proposal, validation_summary
from knight.proposers.base import ProposalContext, ProposalResult


@dataclass(frozen=True)
class ScriptLine:
    """One proposal line of the script: its 1-based line number in the file and its JSON value."""

    number: int
    data: Any


def load_script(path: Path) -> list[ScriptLine]:
    """The proposal lines of `path`, skipping blank lines and `#` comments; UsageError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"script file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read script file {path}: {exc}") from None
    lines: list[ScriptLine] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            lines.append(ScriptLine(number, json.loads(stripped)))
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
    return lines


class ScriptedProposer:
    """Hands out the script's proposals in order, by iteration number."""

    name = "scripted"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lines = load_script(self.path)
        self._fixes_used: dict[int, int] = {}  # iteration -> follow-ups handed out so far

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """The proposal on the script's `ctx.iteration`-th line, or why there is none."""
        if ctx.iteration > len(self.lines):
            return ProposalResult.failed(
                Category.proposer_error,
                f"script exhausted after {len(self.lines)} proposals",
                exhausted=True,
            )
        if ctx.iteration < 1:
            return ProposalResult.failed(
                Category.proposer_error, f"iteration numbers start at 1, got {ctx.iteration}"
            )
        line = self.lines[ctx.iteration - 1]
        data = line.data
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "fix"}
        return self._result(data, f"line {line.number}")

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        """The next follow-up in this iteration's `fix` list, or None when none is left."""
        if not 1 <= ctx.iteration <= len(self.lines):
            return None
        line = self.lines[ctx.iteration - 1]
        follow_ups = line.data.get("fix") if isinstance(line.data, dict) else None
        if follow_ups is None:
            return None
        if not isinstance(follow_ups, list):
            return self._malformed(f"line {line.number}: 'fix' must be a list of proposals")
        used = self._fixes_used.get(ctx.iteration, 0)
        if used >= len(follow_ups):
            return None
        self._fixes_used[ctx.iteration] = used + 1
        return self._result(follow_ups[used], f"line {line.number}, fix {used + 1}")

    def _result(self, data: Any, where: str) -> ProposalResult:
        """A validated proposal, or malformed_proposal naming `where` in the script."""
        if not isinstance(data, dict):
            return self._malformed(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return ProposalResult(proposal=Proposal.model_validate(data))
        except ValidationError as exc:
            return self._malformed(f"{where}: {validation_summary(exc)}")

    def _malformed(self, message: str) -> ProposalResult:
        return ProposalResult.failed(Category.malformed_proposal, f"{self.path.name} {message}")
