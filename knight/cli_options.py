"""Command-line options shared by several commands (`knight run` and `knight bench` above all):
one definition each of the flags, type and help, and of the checks made before any work starts.

A command gives its own default in its signature; where the default is not None, Typer shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from knight.errors import UsageError

ProposerOpt = Annotated[
    str | None,
    typer.Option(
        "--proposer", help="Who proposes candidates: offline, scripted, claude or command."
    ),
]
BudgetOpt = Annotated[
    int | None,
    typer.Option("--budget", "-n", help="Iterations per run (bench starts a run per problem)."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of the run (the offline proposer's search).")
]
StrategyOpt = Annotated[
    str | None,
    typer.Option("--strategy", help="Offline proposer's search: bandit or tpe (default: bandit)."),
]
ScriptOpt = Annotated[
    Path | None, typer.Option("--script", help="JSONL proposals for --proposer scripted.")
]
CommandOpt = Annotated[
    str | None,
    typer.Option(
        "--command",
        help="Agent command template with {prompt_file} and {output_file}, for --proposer command.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Claude model (default: $KNIGHT_MODEL or the built-in default)."),
]
MinGainOpt = Annotated[
    float | None,
    typer.Option(
        "--min-gain",
        help="Accept only candidates at least this much faster than the champion (the simulator "
        "is deterministic, so small gains are real).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Evaluation worker processes of each kind (default: $KNIGHT_WORKERS, else the CPU "
        "cores Knight may run on).",
    ),
]
MachineOpt = Annotated[
    str | None,
    typer.Option(
        "--machine",
        "-m",
        help="Machine preset: trn2, trn3 or a preset .toml file (default: the problem's; with a "
        "run id, the run's).",
    ),
]
DbOpt = Annotated[
    str, typer.Option("--db", help="SQLite path or SQLAlchemy URL of the experience store.")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")
]


def check_machine(name: str | None) -> str | None:
    """Check a --machine value (a preset name or a preset .toml file) before any work starts."""
    from knight.npu.machine import PRESET_NAMES, load_machine

    if name is None:
        return None
    if name not in PRESET_NAMES and not name.endswith(".toml"):
        raise UsageError(
            f"unknown machine {name!r}; choose one of {', '.join(PRESET_NAMES)} "
            "or a preset .toml file"
        )
    try:
        load_machine(name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot load machine preset {name}: {e}") from None
    return name


def check_run_options(*, budget: int | None, min_gain: float | None, proposer: str | None) -> None:
    """Refuse a budget below 1, a gain threshold below 1 and an unknown proposer (usage errors)."""
    from knight.proposers.select import NAMES

    if budget is not None and budget < 1:
        raise UsageError("--budget must be at least 1")
    if min_gain is not None and min_gain < 1.0:
        raise UsageError("--min-gain must be at least 1.0")
    if proposer is not None and proposer not in NAMES:
        raise UsageError(f"unknown proposer {proposer!r}; choose one of {', '.join(NAMES)}")
