"""`knight bench`: run a proposer over the suite and print speed-ups and floor fractions."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from knight import cli_options as options
from knight.errors import UsageError

if TYPE_CHECKING:
    from knight.bench.suite import BenchReport
    from knight.problems import Problem
    from knight.store import IterationSummary


class _BenchProgress:
    """Progress of one problem's run on stderr: one short line per iteration."""

    def __init__(self, label: str) -> None:
        self.label = label

    def iteration_started(self, number: int, budget: int) -> None:
        pass

    def iteration_finished(self, outcome: IterationSummary, best_speedup: float) -> None:
        what = outcome.status.value + (
            f" ({outcome.category.value})" if outcome.category is not None else ""
        )
        sys.stderr.write(f"  {self.label} #{outcome.number} {what}, best {best_speedup:.2f}x\n")

    def message(self, text: str) -> None:
        sys.stderr.write(f"  {self.label} {text}\n")


def _problems(names: list[str] | None) -> list[Problem]:
    """The named problems (each checked before any work), or every bundled one."""
    from knight.problems import list_problems, load_problem

    if not names:
        found = list_problems()
        if not found:
            raise UsageError("no problems installed (no baselines/ folder found)")
        return found
    # "--problems a,b" and "--problems a --problems b" both work.
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if len(set(wanted)) != len(wanted):
        raise UsageError(f"--problems names a problem twice: {', '.join(wanted)}")
    return [load_problem(n) for n in wanted]


def _table(report: BenchReport) -> str:
    """The human-readable result: one line per problem, then the geometric means."""

    def pct(x: float | None) -> str:
        return f"{100 * x:5.1f}%" if x is not None else "    -"

    lines = [
        f"{'problem':<16} {'run':>4} {'iters':>5} {'acc':>4} {'baseline µs':>11} {'best µs':>9} "
        f"{'speed-up':>8} {'floor µs':>9} {'bound':<8} {'floor base→best':>17}"
    ]
    for r in report.problems:
        if r.status == "error":
            lines.append(f"{r.problem:<16} error: {r.error}")
            continue
        base = f"{r.baseline_score_ns / 1000:11.2f}" if r.baseline_score_ns else f"{'-':>11}"
        best = f"{r.best_score_ns / 1000:9.2f}" if r.best_score_ns else f"{'-':>9}"
        speed = f"{r.speedup:7.2f}x" if r.speedup else f"{'-':>8}"
        floor = f"{r.floor_ns / 1000:9.2f}" if r.floor_ns else f"{'-':>9}"
        lines.append(
            f"{r.problem:<16} {r.run_id:>4} {r.iterations:>5} {r.accepted:>4} {base} {best} "
            f"{speed} {floor} {r.floor_bound or '-':<8} "
            f"{pct(r.baseline_floor_fraction)} → {pct(r.floor_fraction)}"
        )
    gs = f"{report.geomean_speedup:.3f}x" if report.geomean_speedup else "-"
    gf = pct(report.geomean_floor_fraction).strip()
    lines.append(
        f"geomean over {len(report.problems) - len(report.failed)} problems: speed-up {gs}, "
        f"floor fraction {gf}  ({report.proposer}"
        + (f"/{report.strategy}" if report.strategy else "")
        + f", budget {report.budget}, seed {report.seed}, {report.wall_s:.0f} s)"
    )
    return "\n".join(lines)


def bench_cmd(
    proposer: options.ProposerOpt = "offline",
    budget: options.BudgetOpt = 20,
    problems: Annotated[
        list[str] | None,
        typer.Option(
            "--problems",
            help="Problem ids, comma-separated or repeated (default: every bundled problem).",
        ),
    ] = None,
    strategy: options.StrategyOpt = None,
    seed: options.SeedOpt = 0,
    db: options.DbOpt = "knight.db",
    machine: options.MachineOpt = None,
    min_gain: options.MinGainOpt = 1.02,
    workers: options.WorkersOpt = None,
    script: options.ScriptOpt = None,
    command: options.CommandOpt = None,
    model: options.ModelOpt = None,
    as_json: options.JsonOpt = False,
) -> None:
    """Run a proposer over the suite, one run per problem: speed-ups, floor fractions, geomeans."""
    from knight.agent.cache import StoreRunCache
    from knight.agent.config import RunConfig
    from knight.bench.suite import run_suite, summarise
    from knight.evaluation import LocalEvaluator
    from knight.proposers.select import make_proposer
    from knight.skills import load_skills
    from knight.store import open_store

    options.check_run_options(budget=budget, min_gain=min_gain, proposer=proposer)
    machine = options.check_machine(machine)
    chosen = _problems(problems)
    skills = load_skills()
    settings = {
        "seed": seed,
        "strategy": strategy,
        "script": script,
        "command": command,
        "model": model,
    }

    def new_proposer():
        return make_proposer(
            proposer,
            **settings,
            skill_reader=lambda name: skills[name].body if name in skills else None,
        )

    first = new_proposer()  # a bad --strategy or --script fails here, before the database exists
    if strategy is None and proposer == "offline":
        strategy = getattr(first, "strategy", None)
    config = RunConfig(
        budget=budget,
        seed=seed,
        min_gain=min_gain,
        extra={
            "proposer": first.name,
            "strategy": strategy,
            "bench": True,
            "model": model,
            "script": str(script) if script else None,
            "command": command,
        },
    )
    t0 = time.monotonic()
    store = open_store(db, "write", create=True)
    total = len(chosen)

    def events_for(problem):
        index = [p.id for p in chosen].index(problem.id) + 1
        sys.stderr.write(f"[{index}/{total}] {problem.id}: {proposer}, budget {budget}\n")
        return _BenchProgress(problem.id)

    with store, LocalEvaluator(machine, workers=workers, cache=StoreRunCache(store.db)) as ev:
        results = run_suite(
            store,
            chosen,
            ev,
            new_proposer,
            config,
            skills=skills,
            events_for=events_for,
            machine=machine,
        )
    report = summarise(
        results,
        proposer=first.name,
        strategy=strategy,
        budget=budget,
        seed=seed,
        db=db,
        wall_s=time.monotonic() - t0,
    )
    if as_json:
        sys.stdout.write(json.dumps(report.model_dump(mode="json")) + "\n")
    else:
        sys.stdout.write(_table(report) + "\n")
    interrupted = [r.problem for r in results if r.status == "interrupted"]
    if interrupted:
        sys.stderr.write(f"interrupted during {interrupted[0]}; later problems were not run\n")
        raise typer.Exit(130)
    if report.failed:
        sys.stderr.write(f"error: no result for {', '.join(report.failed)}\n")
        raise typer.Exit(1)
