"""The `command` proposer: any coding-agent CLI, driven through a prompt file and an output file.

`--command 'my-agent --prompt {prompt_file} --out {output_file}'`: Knight writes the same context
the Claude proposer gets into the prompt file, runs the command (no shell), and reads a proposal
back from the output file, or from stdout when the file is absent or empty. The answer is either
a submit_patch JSON object or SEARCH/REPLACE blocks. Empty or rate-limited output is retried
with bounded backoff instead of being read as a proposal.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knight.failure import Category, Failure
from knight.proposal import Edit, ModelCall, Proposal, Turn, parse_search_replace_blocks
from knight.proposers.base import (
    ProposalContext,
    ProposalResult,
    ProposerUnavailable,
)
from knight.proposers.prompt import (
    ProposalFormatError,
    command_task,
    parse_submit_patch,
    render_sections,
    system_prompt,
    user_sections,
)
from knight.proposers.retry import RetryBudget
from knight.proposers.transcript import turn
from knight.skills import skills_dirs

PROMPT_FILE = "{prompt_file}"
OUTPUT_FILE = "{output_file}"
RATE_LIMITED = re.compile(r"rate[ _-]?limit|\b429\b|overloaded|too many requests", re.IGNORECASE)
NO_HYPOTHESIS = "(no hypothesis given)"
TAIL_CHARS = 4000  # of stdout/stderr kept in the call record


# ----------------------------------------------------------------------------- reading answers


def _json_candidates(text: str) -> list[str]:
    """Places a JSON object may sit: the whole text, fenced blocks, the outermost braces."""
    found = [text.strip()]
    found += re.findall(r"```(?:json)?\s*\n(.*?)\n\s*```", text, flags=re.DOTALL)
    if "{" in text and "}" in text:
        found.append(text[text.index("{") : text.rindex("}") + 1])
    return found


def _json_patch(text: str) -> dict[str, Any] | None:
    """The submit_patch object in `text`, if it holds one (a `{"name", "input"}` wrapper is opened)."""
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if (
            isinstance(data, dict)
            and data.get("name") == "submit_patch"
            and isinstance(data.get("input"), dict)
        ):
            data = data["input"]
        if isinstance(data, dict) and ("edits" in data or "hypothesis" in data):
            return data
    return None


def _prose_before_blocks(text: str, edits: list[Edit]) -> list[str]:
    """The non-empty lines before the first SEARCH marker, minus fences and file names."""
    head = re.split(r"^<{5,9} SEARCH\s*$", text, maxsplit=1, flags=re.MULTILINE)[0]
    files = {e.file for e in edits}
    lines = []
    for raw in head.splitlines():
        line = raw.strip()
        if not line or line.startswith(("```", "~~~")) or line.strip("`*") in files:
            continue
        lines.append(line)
    return lines


def _clean_hypothesis(line: str) -> str:
    line = line.lstrip("#*-> ").strip()
    return re.sub(r"^\**hypothesis\**\s*:\s*\**", "", line, flags=re.IGNORECASE).strip("* ").strip()


def parse_output(text: str, kernel_file: str) -> Proposal:
    """A proposal from an agent's answer: submit_patch JSON, or SEARCH/REPLACE blocks."""
    data = _json_patch(text)
    if data is not None:
        return parse_submit_patch(data)
    try:
        edits = parse_search_replace_blocks(text, kernel_file)
    except ValueError as exc:
        raise ProposalFormatError(f"bad SEARCH/REPLACE block: {exc}") from exc
    if not edits:
        raise ProposalFormatError(
            "found neither a submit_patch JSON object nor SEARCH/REPLACE blocks"
        )
    prose = _prose_before_blocks(text, edits)
    hypothesis = _clean_hypothesis(prose[0]) if prose else ""
    return Proposal(
        hypothesis=hypothesis or NO_HYPOTHESIS, rationale="\n".join(prose[1:]), edits=edits
    )


# ----------------------------------------------------------------------------- running


@dataclass
class _Run:
    """One execution of the agent command."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    answer: str  # the output file's text, else stdout
    timed_out: bool
    duration_s: float


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the agent and everything it started (it runs in its own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except ProcessLookupError:
        pass


def skill_access() -> str:
    """How the agent reads a skill's body: the absolute paths of the folders Knight loaded skills
    from, which need not be under the directory Knight runs in (an installed Knight ships its own)."""
    dirs = [d.resolve() for d in skills_dirs() if d.is_dir()]
    where = " or ".join(f"{d}/<name>/SKILL.md" for d in dirs) or "skills/<name>/SKILL.md"
    first = " (the first that exists)" if len(dirs) > 1 else ""
    return f"Skill bodies are in {where}{first}, if your tools can read files."


def _dies_with_knight() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that has the kernel SIGKILL the agent when knight dies, even by
    SIGKILL: the agent runs in its own session, so nothing else would stop it spending tokens."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1  # <linux/prctl.h>

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output on stderr)"


class CommandProposer:
    """Proposals from an external coding agent run once per round."""

    name = "command"

    def __init__(
        self,
        template: str,
        timeout_s: float = 600,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 300,
    ) -> None:
        try:
            argv = shlex.split(template)
        except ValueError as exc:
            raise ProposerUnavailable(f"cannot parse --command: {exc}") from exc
        if not argv:
            raise ProposerUnavailable("--command is empty")
        if PROMPT_FILE not in template:
            raise ProposerUnavailable(
                "--command must contain {prompt_file} (and may contain {output_file})"
            )
        if shutil.which(argv[0]) is None:
            raise ProposerUnavailable(f"command not found: {argv[0]}")
        self.template = template
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._prompt: str | None = None  # this iteration's prompt, for fix rounds
        self._can_fix = False  # the last round ended with a proposal
        self._last_answer = ""
        self._round = 0
        self._transcript: list[Turn] = []

    # --- the Proposer protocol

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        """Run the agent on this iteration's prompt and read its proposal."""
        system = system_prompt(ctx, skill_access())
        sections = [*user_sections(ctx), ("Task", command_task(ctx.kernel_file))]
        self._prompt = system + "\n\n" + render_sections(sections)
        self._round, self._last_answer = 0, ""
        self._transcript = [turn("system", "system", system, 0)]
        self._transcript += [
            turn("user", "prompt-section", body, 0, name=title) for title, body in sections
        ]
        return self._run_round(ctx, self._prompt, first_turn=0)

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        """Run the agent again with the failure appended to the prompt; None without a proposal."""
        if self._prompt is None or not self._can_fix:
            return None
        self._round += 1
        feedback = (
            f"Your previous answer was:\n{self._last_answer.strip()}\n\nIt failed:\n{failure.for_proposer()}\n\n"
            "Write a corrected answer in the same format: the complete set of edits, against the "
            "champion source above."
        )
        first_turn = len(self._transcript)
        self._transcript.append(turn("user", "prompt-section", feedback, self._round, name="Fix"))
        return self._run_round(
            ctx, self._prompt + "\n\n## Your previous proposal failed\n" + feedback, first_turn
        )

    @property
    def transcript(self) -> list[Turn]:
        """Every round of the current iteration (each result holds its own round's turns)."""
        return list(self._transcript)

    # --- rounds and runs

    def _run_round(self, ctx: ProposalContext, prompt: str, first_turn: int) -> ProposalResult:
        """Run the agent until it answers, fails for good, or the backoff budget is spent."""
        budget = RetryBudget(self.max_wait_s, self._sleep)
        records: list[ModelCall] = []
        reask = True  # an unreadable answer is asked for once more, with the reason
        with tempfile.TemporaryDirectory(prefix="knight-command-") as tmp:
            while True:
                run = self._execute(Path(tmp), prompt)
                records.append(self._record(run))
                budget.charge(run.duration_s)
                if run.answer.strip():
                    self._transcript.append(turn("assistant", "text", run.answer, self._round))
                verdict = self._judge(ctx, run)
                if isinstance(verdict, Proposal):
                    self._last_answer = run.answer
                    return self._result(first_turn, records, verdict)
                category, message, transient = verdict
                records[-1].status, records[-1].error = "error", message
                if category is Category.malformed_proposal and reask:
                    reask = False
                    self._transcript.append(
                        turn("system", "error", message + "; asking again", self._round)
                    )
                    prompt += f"\n\n## Your answer could not be read\n{message}. Use exactly one of the two formats."
                    continue
                wait = budget.next_wait() if transient else None
                if wait is None:
                    if transient:
                        message += f"; gave up after {budget.waits + 1} runs and {budget.spent_s:.0f} s (max_wait_s={self.max_wait_s:g})"
                    self._transcript.append(turn("system", "error", message, self._round))
                    return self._result(first_turn, records, None, category, message, transient)
                self._transcript.append(
                    turn("system", "error", f"{message}; retrying in {wait:g} s", self._round)
                )
                budget.wait(wait)

    def _judge(self, ctx: ProposalContext, run: _Run) -> Proposal | tuple[Category, str, bool]:
        """The proposal in a run's answer, or (category, one-line reason, worth retrying)."""
        if run.timed_out:
            return Category.proposer_error, f"command timed out after {self.timeout_s:g} s", False
        limited = bool(RATE_LIMITED.search("\n".join((run.answer, run.stdout, run.stderr))))
        if run.returncode != 0:
            if limited:
                return (
                    Category.proposer_error,
                    f"command rate limited (exit status {run.returncode})",
                    True,
                )
            return (
                Category.proposer_error,
                f"command exited with status {run.returncode}: {_last_line(run.stderr)}",
                False,
            )
        if not run.answer.strip():
            return Category.proposer_error, "command produced no output", True
        try:
            return parse_output(run.answer, ctx.kernel_file)
        except (ProposalFormatError, ValueError) as exc:
            if limited:
                return (
                    Category.proposer_error,
                    f"command output says it was rate limited: {_last_line(run.answer)}",
                    True,
                )
            return (
                Category.malformed_proposal,
                " ".join(f"unreadable answer: {exc}".split())[:500],
                False,
            )

    def _execute(self, tmp: Path, prompt: str) -> _Run:
        """Write the prompt, run the command in its own session, collect its answer."""
        prompt_file, output_file = tmp / "prompt.md", tmp / "output.txt"
        prompt_file.write_text(prompt, encoding="utf-8")
        output_file.unlink(missing_ok=True)
        command = self.template.replace(PROMPT_FILE, shlex.quote(str(prompt_file)))
        argv = shlex.split(command.replace(OUTPUT_FILE, shlex.quote(str(output_file))))
        start = time.monotonic()
        try:
            # No shell: the template is split into argv. The environment passes through: it is
            # the user's own agent, and it may need its own credentials.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
                preexec_fn=_dies_with_knight(),
            )
        except OSError as exc:
            return _Run(
                argv, 127, "", f"cannot run {argv[0]}: {exc}", "", False, time.monotonic() - start
            )
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            stdout, stderr = proc.communicate()
        except BaseException:
            # Ctrl-C (or any crash) while the agent runs: its own session would outlive us.
            _kill_group(proc)
            raise
        answer = (
            output_file.read_text(encoding="utf-8", errors="replace")
            if output_file.is_file()
            else ""
        )
        if not answer.strip():
            answer = stdout
        return _Run(
            argv, proc.returncode, stdout, stderr, answer, timed_out, time.monotonic() - start
        )

    def _record(self, run: _Run) -> ModelCall:
        """A run as a call record: no tokens or cost are known for an external agent."""
        return ModelCall(
            model=f"command:{Path(run.argv[0]).name}",
            round=self._round,
            duration_s=run.duration_s,
            request={"argv": run.argv, "timeout_s": self.timeout_s},
            response={
                "returncode": run.returncode,
                "timed_out": run.timed_out,
                "answer": run.answer[-TAIL_CHARS:],
                "stderr": run.stderr[-TAIL_CHARS:],
            },
        )

    def _result(
        self,
        first_turn: int,
        records: list[ModelCall],
        proposal: Proposal | None,
        category: Category | None = None,
        message: str = "",
        transient: bool = False,
    ) -> ProposalResult:
        """This round's outcome: the proposal, or why there is none."""
        self._can_fix = proposal is not None
        failure = Failure(category=category, message=message) if category is not None else None
        return ProposalResult(
            proposal,
            failure,
            transient=transient,
            llm_calls=records,
            transcript=self._transcript[first_turn:],
        )
