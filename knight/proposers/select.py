"""Choosing a proposer from the command line: Claude when a key is set, offline otherwise."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from knight.errors import UsageError
from knight.proposers.base import Proposer, ProposerUnavailable

NAMES = ("offline", "scripted", "claude", "command")


def make_proposer(
    name: str | None,
    *,
    seed: int = 0,
    script: Path | None = None,
    command: str | None = None,
    model: str | None = None,
    strategy: str | None = None,
    skill_reader: Callable[[str], str | None] | None = None,
    note: Callable[[str], None] = lambda _: None,
) -> Proposer:
    """Build the named proposer; with no name, Claude if ANTHROPIC_API_KEY is set, else offline."""
    if name is None:
        name = "claude" if os.environ.get("ANTHROPIC_API_KEY") else "offline"
        if name == "offline":
            note(
                "ANTHROPIC_API_KEY is not set: using the offline proposer (knob tuning guided by the database)"
            )
    if name not in NAMES:
        raise UsageError(f"unknown proposer {name!r}; choose one of {', '.join(NAMES)}")
    if strategy is not None and name != "offline":
        raise UsageError(f"--strategy applies to the offline proposer only, not {name!r}")
    if name == "offline":
        from knight.proposers.offline import DEFAULT_STRATEGY, STRATEGIES, OfflineProposer

        if strategy is not None and strategy not in STRATEGIES:
            raise UsageError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        return OfflineProposer(seed=seed, strategy=strategy or DEFAULT_STRATEGY)
    if name == "scripted":
        if script is None:
            raise UsageError(
                "--proposer scripted needs --script FILE (JSONL, one proposal per line)"
            )
        from knight.proposers.scripted import ScriptedProposer

        return ScriptedProposer(script)
    if name == "command":
        if not command:
            raise UsageError(
                "--proposer command needs --command 'TEMPLATE with {prompt_file} and {output_file}'"
            )
        from knight.proposers.command import CommandProposer

        try:
            return CommandProposer(command)
        except ProposerUnavailable as e:
            raise UsageError(str(e)) from None
    from knight.proposers.claude import ClaudeProposer

    try:
        return ClaudeProposer(model=model, skill_reader=skill_reader)
    except ProposerUnavailable as e:
        raise UsageError(str(e)) from None
