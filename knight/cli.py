"""The `knight` command line: parsing and printing only; the work happens in the packages."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from knight import __version__
from knight.bench.command import bench_cmd
from knight.blas import default_to_one_thread
from knight.cli_options import (
    BudgetOpt,
    CommandOpt,
    DbOpt,
    JsonOpt,
    MachineOpt,
    MinGainOpt,
    ModelOpt,
    ProposerOpt,
    ScriptOpt,
    SeedOpt,
    StrategyOpt,
    WorkersOpt,
    check_machine,
    check_run_options,
)
from knight.errors import KnightError, KnightWarning, UsageError
from knight.report.command import report_cmd
from knight.service.commands import TokenOpt, register, remote_evaluator

if TYPE_CHECKING:
    from knight.store import IterationDetail

app = typer.Typer(
    name="knight",
    help="Knight optimizes accelerator kernels on a simulated Trainium2-like NPU, judged bit for bit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)  # data
err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages and progress

ProblemOpt = Annotated[
    str | None,
    typer.Option(
        "--problem",
        "-p",
        help="Problem id or folder (default: the installed problem whose entry the file defines, "
        "else moe_decode).",
    ),
]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def _read_kernel(path: Path) -> str:
    if not path.is_file():
        raise UsageError(f"kernel file not found: {path}")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read kernel file {path}: {e}") from None


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"knight {__version__}")
        raise typer.Exit(0)


# ----------------------------------------------------------------------------- problems


EvaluatorOpt = Annotated[
    str | None,
    typer.Option(
        "--evaluator",
        help="Where candidates are judged: local (worker processes here, the default), ray (Ray at "
        "$RAY_ADDRESS or a local Ray), ray://HOST:PORT (the Ray cluster whose head is there), or "
        "http(s)://HOST:PORT (a `knight serve`; needs --token).",
    ),
]


@app.command("problems")
def problems_cmd(
    heldout: Annotated[
        bool,
        typer.Option("--heldout", help="Also list held-out workloads (never shown to proposers)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the installed problems, their visible workloads and physical floors."""
    from knight.problems import baselines_dirs, list_problems

    problems = list_problems()
    if as_json:
        _print_json([_problem_dict(p, heldout) for p in problems])
        return
    if not problems:
        err.print(
            f"no problems installed yet (looked in: {', '.join(map(str, baselines_dirs())) or 'no baselines/ folder'})"
        )
        return
    for p in problems:
        out.print(f"[bold]{p.id}[/bold]  {p.spec.title}")
        out.print(
            f"  machine {p.spec.machine}, grid {p.spec.grid}, correctness {p.spec.correctness}, hash {p.hash}"
        )
        w, floor = _heaviest_floor(p)
        out.print(f"  floor {floor.ns / 1000:.2f} us on {w.name}, bound by {floor.bound}")
        ws = p.spec.workloads + p.spec.adversarial + (p.spec.heldout if heldout else [])
        for w in ws:
            tag = " (held out)" if w in p.spec.heldout else ""
            out.print(f"  - {w.name:<14} weight {w.weight:<5} {w.params} seeds {w.seeds}{tag}")


def _heaviest_floor(p):
    """The problem's floor on its heaviest scored workload, on the problem's own machine."""
    from knight.evaluation.floors import heaviest_floor
    from knight.npu.machine import load_machine

    return heaviest_floor(p, load_machine(p.spec.machine))


def _problem_dict(p, heldout: bool) -> dict:
    d = {
        "id": p.id,
        "title": p.spec.title,
        "hash": p.hash,
        "machine": p.spec.machine,
        "grid": p.spec.grid,
        "correctness": p.spec.correctness,
        "baseline": str(p.baseline_path),
        "workloads": [w.model_dump() for w in p.spec.workloads + p.spec.adversarial],
    }
    w, floor = _heaviest_floor(p)
    d["floor"] = {"workload": w.name, "ns": floor.ns, "bound": floor.bound, **floor.by_resource}
    if heldout:
        d["heldout"] = [w.model_dump() for w in p.spec.heldout]
    return d


# ----------------------------------------------------------------------------- eval / profile


@app.command("eval")
def eval_cmd(
    kernel: Annotated[Path, typer.Argument(help="Kernel source file to judge.")],
    problem: ProblemOpt = None,
    machine: MachineOpt = None,
    heldout: Annotated[
        bool, typer.Option("--heldout", help="Also run the held-out workloads.")
    ] = False,
    workers: WorkersOpt = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="At most this many seeds per workload.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Simulate everything again.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Wall-clock limit per run, seconds.")
    ] = 300.0,
    evaluator: EvaluatorOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Judge a kernel: static checks, isolated bit-exact runs on every workload, integrity, score."""
    from knight.evaluation import LocalEvaluator, MemoryCache
    from knight.problems import problem_for_kernel

    source = _read_kernel(kernel)
    prob = problem_for_kernel(source, problem)
    if seeds is not None and seeds < 1:
        raise UsageError("--seeds must be at least 1")
    machine = check_machine(machine)
    err.print(f"judging {kernel} on {prob.id} ...")
    kind, address = _evaluator_spec(evaluator)
    if kind not in ("local", "remote"):
        raise UsageError("knight eval judges locally or on a Knight server (--evaluator http://…)")
    judge = (
        remote_evaluator(address, token, machine, seeds)
        if kind == "remote"
        else LocalEvaluator(
            machine,
            workers=workers,
            timeout_s=timeout,
            cache=MemoryCache() if no_cache else None,
            max_seeds=seeds,
        )
    )
    with judge as ev:
        report = ev.evaluate(source, prob, heldout=heldout)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report) -> None:
    from knight.report.model import SCORE_LABEL

    table = Table(title=f"{report.problem} on {report.machine}", title_justify="left")
    for col in ("workload", "latency µs", "baseline µs", "speed-up", "roofline", "correct"):
        table.add_column(col, justify="right" if col != "workload" else "left")
    for w in report.workloads:
        lat = f"{w.latency_ns / 1000:.2f}" if w.latency_ns else "-"
        base = f"{w.baseline_latency_ns / 1000:.2f}" if w.baseline_latency_ns else "-"
        sp = (
            f"{w.baseline_latency_ns / w.latency_ns:.2f}x"
            if (w.latency_ns and w.baseline_latency_ns)
            else "-"
        )
        roof = f"{100 * w.roofline_fraction:.0f}%" if w.roofline_fraction else "-"
        table.add_row(
            w.name + (" (held out)" if w.heldout else ""),
            lat,
            base,
            sp,
            roof,
            "yes" if w.correct else "NO",
        )
    out.print(table)
    if report.score_ns:
        out.print(
            f"{SCORE_LABEL}: {report.score_ns / 1000:.2f} µs, baseline score "
            f"{report.baseline_score_ns / 1000:.2f} µs, speed-up {report.speedup:.2f}x",
            markup=False,
        )
    out.print(
        f"status {report.status}  ({report.simulated_runs} runs simulated, {report.cached_runs} from cache, "
        f"{report.wall_s:.1f} s; harness {report.harness})"
    )
    if report.failure is not None:
        f = report.failure
        out.print(f"[bold red]{f.one_line()}[/bold red]")
        for key in (
            "ulp_histogram",
            "rows",
            "column_ranges",
            "tokens",
            "experts",
            "cores",
            "violations",
        ):
            if key in f.details:
                out.print(f"  {key}: {f.details[key]}")
        if f.hint:
            out.print(f"  hint: read skill '{f.hint}' (skills/{f.hint}/SKILL.md)")


@app.command("profile")
def profile_cmd(
    kernel: Annotated[Path, typer.Argument(help="Kernel source file to profile.")],
    problem: ProblemOpt = None,
    machine: MachineOpt = None,
    workload: Annotated[
        str | None, typer.Option("--workload", "-w", help="Visible workload (default: the first).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Input seed (default: the workload's first).")
    ] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Write a Chrome/Perfetto trace JSON here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate one workload and show where the time goes (engines, DMA, critical path)."""
    from knight.evaluation import LocalEvaluator, MemoryCache
    from knight.npu.machine import load_machine
    from knight.npu.profile import Profile
    from knight.problems import problem_for_kernel

    source = _read_kernel(kernel)
    prob = problem_for_kernel(source, problem)
    if workload is not None:
        visible = {w.name for w in prob.all_workloads()}
        if workload not in visible:
            raise UsageError(
                f"unknown workload {workload!r}; visible workloads: {', '.join(sorted(visible))}"
            )
    machine = check_machine(machine)
    with LocalEvaluator(machine, workers=1, cache=MemoryCache()) as ev:
        run = ev.profile_run(source, prob, workload, seed, trace=trace is not None)
    if not run.ok:
        f = run.failure
        raise KnightError(f.one_line() if f else "the run failed")
    if trace is not None and run.trace is not None:
        trace.write_text(json.dumps(run.trace))
        err.print(f"trace written to {trace} (open it in ui.perfetto.dev or chrome://tracing)")
    if as_json:
        _print_json(
            {
                "problem": prob.id,
                "machine": load_machine(machine or prob.spec.machine).name,
                "workload": run.workload,
                "seed": run.seed,
                "latency_ns": run.latency_ns,
                "profile": run.profile,
            }
        )
        return
    out.print(f"{prob.id} / {run.workload} (seed {run.seed})")
    out.print(Profile(**run.profile).summary_text())


@app.command("export")
def export_cmd(
    kernel: Annotated[Path, typer.Argument(help="Kernel source file to export.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the NKI file here (default: stdout)."),
    ] = None,
    problem: Annotated[
        str | None,
        typer.Option(
            "--problem",
            "-p",
            help="Problem id or folder (default: the installed problem whose entry the file defines).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the kernel as a real NKI kernel file (nki.isa / nki.language, @nki.jit entry)."""
    from knight.export import export_kernel
    from knight.problems import problem_for_kernel

    source = _read_kernel(kernel)
    result = export_kernel(source, kernel.name, problem_for_kernel(source, problem))
    if output is not None:
        try:
            output.write_text(result.source)
        except OSError as e:
            raise UsageError(f"cannot write {output}: {e}") from None
    if as_json:
        _print_json(
            {
                "entry": result.entry,
                "grid": result.grid,
                "outputs": list(result.outputs),
                "path": str(output) if output is not None else None,
                "source": result.source if output is None else None,
            }
        )
    elif output is None:
        sys.stdout.write(result.source)
    else:
        err.print(f"NKI kernel written to {output}")


# ----------------------------------------------------------------------------- run / history / show / replay

RunOpt = Annotated[int | None, typer.Option("--run", help="Run id (default: the latest run).")]


def _read_store(where: str):
    """The run store for a read-only command: never written, refused with a hint when old."""
    from knight.store import open_store

    return open_store(where, "read")


def _write_store(where: str, create: bool):
    """The run store for a writing command: an old schema is backed up, then upgraded."""
    from knight.store import open_store

    store = open_store(where, "write", create=create)
    upgrade = store.schema_upgrade
    if upgrade is not None and upgrade.changed:
        kept = f"; backup at {upgrade.backup}" if upgrade.backup else ""
        err.print(
            f"upgraded {store.where} from schema {upgrade.before} to {upgrade.after}{kept}",
            markup=False,
        )
    return store


class _Progress:
    """Live progress on stderr: iteration, last outcome, best speed-up (proposer text verbatim)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def iteration_started(self, number: int, budget: int) -> None:
        if not self.quiet:
            err.print(f"[dim]iteration {number}/{budget} ...[/dim]")

    def iteration_finished(self, o, best: float) -> None:
        from rich.text import Text

        if self.quiet:
            return
        what = o.status.value if o.category is None else f"{o.status.value} ({o.category.value})"
        sp = f" {o.speedup_vs_baseline:.2f}x vs baseline" if o.speedup_vs_baseline else ""
        color = {"accepted": "green", "rejected": "yellow"}.get(o.status.value, "red")
        line = Text(f"  #{o.number} ")
        line.append(what, style=color)
        line.append(f"{sp} — {o.hypothesis[:90]}  ")
        line.append(f"(best {best:.2f}x)", style="dim")
        err.print(line)

    def message(self, text: str) -> None:
        if not self.quiet:
            err.print(text, markup=False)


@app.command("run")
def run_cmd(
    budget: BudgetOpt = None,
    problem: ProblemOpt = None,
    machine: MachineOpt = None,
    proposer: ProposerOpt = None,
    script: ScriptOpt = None,
    command: CommandOpt = None,
    model: ModelOpt = None,
    db: DbOpt = "knight.db",
    seed: SeedOpt = None,
    strategy: StrategyOpt = None,
    resume: Annotated[
        int | None,
        typer.Option(
            "--resume",
            help="Continue run RUN where it stopped; limits given here apply to the rest of it.",
        ),
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option("--max-cost", help="Stop when model calls cost this many USD.")
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", help="Stop starting iterations after this many seconds."),
    ] = None,
    min_gain: MinGainOpt = None,
    fix_rounds: Annotated[
        int | None,
        typer.Option(
            "--fix-rounds",
            help="Fix rounds when a patch does not apply or a candidate fails before it runs (default 3).",
        ),
    ] = None,
    max_outage: Annotated[
        float | None,
        typer.Option(
            "--max-outage",
            help="Seconds to wait out a model-provider outage (429/529/5xx/network) before pausing the run (default 900).",
        ),
    ] = None,
    workers: WorkersOpt = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            "--parallel",
            help="Candidates per round: proposer calls in flight and evaluations at once (default 1).",
        ),
    ] = None,
    beam: Annotated[
        int | None,
        typer.Option(
            "--beam",
            help="Parents drawn from the K best distinct accepted kernels (default 1: the champion).",
        ),
    ] = None,
    evaluator: EvaluatorOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Optimise a problem for a budget of iterations, keeping every attempt in the database.

    Defaults: 10 iterations, the claude proposer when ANTHROPIC_API_KEY is set (else offline),
    seed 0, --min-gain 1.01; with --resume, the run's own, and limits given here apply to the rest.
    """
    check_run_options(budget=budget, min_gain=min_gain, proposer=proposer)
    if fix_rounds is not None and fix_rounds < 0:
        raise UsageError("--fix-rounds cannot be negative")
    if max_outage is not None and max_outage < 0:
        raise UsageError("--max-outage cannot be negative")
    for flag, value in (("--parallel", parallel), ("--beam", beam)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    machine = check_machine(machine)
    evaluator_kind, address = _evaluator_spec(evaluator)
    from knight.problems import load_problem

    _make_interruptible()
    if resume is None:
        prob = load_problem(problem)  # before the database exists: a typo leaves no file behind
    # Imported after the checks: a mistyped flag or problem is answered before the loop and the
    # store (a second of imports) are loaded.
    from knight.agent.cache import StoreRunCache
    from knight.agent.config import ResumeOverrides, RunConfig, refuse_identity_changes
    from knight.agent.loop import Runner
    from knight.failure import RunStatus
    from knight.proposers.select import make_proposer
    from knight.skills import load_skills

    store = _write_store(db, create=resume is None)
    if resume is not None:
        # A resumed run keeps what defines it (problem, machine, seed, proposer); limits may change.
        run = store.run(resume)
        refuse_identity_changes(run, problem=problem, machine=machine, seed=seed, proposer=proposer)
        prob = load_problem(run.problem_id)
        machine, seed, proposer = run.machine, run.seed, run.proposer
        settings = run.config
        script = script or (Path(settings["script"]) if settings.get("script") else None)
        command = command or settings.get("command")
        model = model or settings.get("model")
        strategy = strategy or settings.get("strategy")
    skills = load_skills()

    def new_proposer(note=err.print):
        return make_proposer(
            proposer,
            seed=seed or 0,
            script=script,
            command=command,
            model=model,
            strategy=strategy,
            skill_reader=lambda name: skills[name].body if name in skills else None,
            note=note,
        )

    prop = new_proposer()
    events = _Progress(quiet=False)
    cache = StoreRunCache(store.db)
    with store, _make_evaluator(evaluator_kind, address, machine, workers, cache, token) as ev:
        runner = Runner(
            store,
            prob,
            ev,
            prop,
            skills=skills,
            events=events,
            machine=machine,
            proposer_factory=lambda: new_proposer(note=lambda _: None),
        )
        if resume is not None:
            given = {
                "script": str(script) if script else None,
                "command": command,
                "model": model,
                "strategy": strategy,
            }
            overrides = ResumeOverrides(
                proposer_settings=given,
                budget=budget,
                max_cost=max_cost,
                time_limit_s=time_limit,
                min_gain=min_gain,
                fix_rounds=fix_rounds,
                max_outage_s=max_outage,
                parallel=parallel,
                beam=beam,
            )
            summary = runner.resume(resume, overrides)
        else:
            defaults = RunConfig()
            config = RunConfig(
                budget=budget or defaults.budget,
                seed=seed or 0,
                max_cost=max_cost,
                time_limit_s=time_limit,
                min_gain=min_gain or defaults.min_gain,
                fix_rounds=defaults.fix_rounds if fix_rounds is None else fix_rounds,
                max_outage_s=defaults.max_outage_s if max_outage is None else max_outage,
                parallel=parallel or defaults.parallel,
                beam=beam or defaults.beam,
                extra={
                    "proposer": prop.name,
                    "model": model,
                    "script": str(script) if script else None,
                    "command": command,
                    "strategy": getattr(prop, "strategy", None),
                },
            )
            summary = runner.start(config)
    data = {**summary.to_dict(), "problem": prob.id, "db": db}
    if as_json:
        _print_json(data)
    else:
        from knight.cli_views import run_workloads_line
        from knight.report.model import SCORE_MEANING

        out.print(
            f"run {summary.run_id} {summary.status.value}: {summary.iterations} iterations, "
            f"{summary.accepted} accepted; best score {summary.best_score_ns / 1000:.2f} µs vs "
            f"baseline score {summary.baseline_score_ns / 1000:.2f} µs ({summary.speedup:.2f}x; "
            f"score = {SCORE_MEANING}); stopped: {summary.stop_reason}",
            markup=False,
        )
        out.print(run_workloads_line(_best_iteration(db, summary.run_id)), markup=False)
        out.print(
            f"next: knight history --db {db} --run {summary.run_id}   |   knight show N --db {db} --run "
            f"{summary.run_id} --diff   |   knight replay --db {db} --run {summary.run_id} --out best.py",
            markup=False,
        )
        if summary.status is RunStatus.interrupted:
            out.print(f"resume with: knight run --db {db} --resume {summary.run_id}", markup=False)
    if summary.status is RunStatus.interrupted:
        raise typer.Exit(130)


def _best_iteration(db: str, run_id: int) -> IterationDetail | None:
    """The run's best accepted iteration (its champion), else its last evaluated one, if any."""
    from knight.failure import IterationStatus

    with _read_store(db) as store:
        rows = [r for r in store.history(run_id) if r.score_ns]
        if not rows:
            return None
        accepted = [r for r in rows if r.status is IterationStatus.accepted]
        best = min(accepted, key=lambda r: r.score_ns) if accepted else rows[-1]
        return store.iteration(run_id, best.number)


def _evaluator_spec(spec: str | None) -> tuple[str, str | None]:
    """Check --evaluator (local, ray, ray://HOST:PORT, http(s)://…) before any work starts."""
    from knight.evaluation.ray_evaluator import parse_evaluator

    if spec is None:
        return "local", None
    if spec.startswith(("http://", "https://")):
        return "remote", spec
    return parse_evaluator(spec)


def _make_evaluator(kind: str, address: str | None, machine, workers, cache, token=None):
    """The evaluator a run judges with: worker processes here, a Knight server, or Ray tasks."""
    from knight.evaluation import LocalEvaluator

    if kind == "local":
        return LocalEvaluator(machine, workers=workers, cache=cache)
    if kind == "remote":
        return remote_evaluator(address, token, machine)
    from knight.evaluation.ray_evaluator import RayEvaluator

    return RayEvaluator(address, machine, cache=cache, cpus_per_task=workers or 1)


@app.command("history")
def history_cmd(
    db: DbOpt = "knight.db",
    run: RunOpt = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Only iterations with this status (accepted, rejected, failed)."
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="Only iterations with this failure or rejection category."),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the N most recent.")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Full hypotheses instead of one line cut to 100 columns.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """What was tried in a run, what happened, and why."""
    from knight.cli_views import history_lines, history_title
    from knight.failure import Category, IterationStatus

    if status is not None and status not in IterationStatus.__members__:
        raise UsageError(f"--status must be one of {', '.join(IterationStatus.__members__)}")
    if category is not None and category not in Category.__members__:
        raise UsageError(f"unknown --category {category!r}; see the failure taxonomy in docs/")
    with _read_store(db) as store:
        run_id = store.resolve_run_id(run)
        rows = store.history(
            run_id,
            status=IterationStatus(status) if status else None,
            category=category,
            limit=limit,
        )
    if as_json:
        _print_json({"run_id": run_id, "iterations": [r.model_dump(mode="json") for r in rows]})
        return
    out.print(history_title(run_id), markup=False)
    for line in history_lines(rows, wide=wide):
        out.print(line, markup=False)
    if not rows:
        err.print("no iterations match")


@app.command("show")
def show_cmd(
    iteration: Annotated[int, typer.Argument(help="Iteration number within the run.")],
    db: DbOpt = "knight.db",
    run: RunOpt = None,
    diff: Annotated[
        bool, typer.Option("--diff", help="Show the unified diff of the patch.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """One iteration in full: hypothesis, edits, evaluation, failure attribution, conversation."""
    from knight.cli_views import iteration_json, iteration_text

    with _read_store(db) as store:
        detail = store.iteration(store.resolve_run_id(run), iteration)
    if as_json:
        _print_json(iteration_json(detail))
        return
    out.print(iteration_text(detail, diff=diff), markup=False)


@app.command("replay")
def replay_cmd(
    db: DbOpt = "knight.db",
    run: RunOpt = None,
    to: Annotated[
        int | None,
        typer.Option("--to", help="Replay the best kernel accepted up to this iteration."),
    ] = None,
    iteration: Annotated[
        int | None,
        typer.Option(
            "--iteration",
            help="Replay the lineage of this accepted iteration's kernel (default: the champion).",
        ),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the rebuilt kernel here.")
    ] = None,
    machine: MachineOpt = None,
    workers: WorkersOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild a kernel from the baseline, re-applying and re-verifying each patch of its lineage."""
    from knight.agent.replay import replay
    from knight.evaluation import LocalEvaluator, MemoryCache
    from knight.problems import load_problem

    machine = check_machine(machine)
    with _read_store(db) as store:
        run_id = store.resolve_run_id(run)
        info = store.run(run_id)
        prob = load_problem(info.problem_id)
        machine = machine or info.machine
        err.print(
            f"replaying run {run_id} ({prob.id}) on {machine} from the baseline ...", markup=False
        )
        with LocalEvaluator(machine, workers=workers, cache=MemoryCache()) as ev:
            result = replay(store, prob, ev, run_id, to=to, iteration=iteration, machine=machine)
    if out_file is not None:
        out_file.write_text(result.final_source)
        err.print(f"wrote {out_file} ({result.final_hash[:12]})", markup=False)
    if as_json:
        _print_json(result.to_dict())
    else:
        for st in result.steps:
            mark = (
                "ok"
                if (st.ok and st.hash_match and st.score_match)
                else ("differs" if st.ok and st.hash_match else "FAILED")
            )
            old = f"{st.recorded_score_ns / 1000:.2f}" if st.recorded_score_ns else "-"
            new = f"{st.replayed_score_ns / 1000:.2f}" if st.replayed_score_ns else "-"
            out.print(
                f"#{st.iteration:<4} {mark:<8} hash {'=' if st.hash_match else '≠'}  score recorded {old} µs  now {new} µs  "
                f"{st.hypothesis[:60]}{('  ' + st.message) if st.message else ''}",
                markup=False,
            )
        if not result.same_harness:
            out.print(
                "the harness changed since the run (simulator, machine or problem): figures shown side by side"
            )
        out.print(
            f"all_match: {str(result.all_match).lower()} ({len(result.steps)} accepted steps)"
        )
    if not result.all_match:
        raise typer.Exit(1)


@app.command("runs")
def runs_cmd(db: DbOpt = "knight.db", as_json: JsonOpt = False) -> None:
    """List the runs in the database."""
    with _read_store(db) as store:
        runs = store.list_runs()
    if as_json:
        _print_json(
            [{**r.model_dump(mode="json"), "run_id": r.id, "speedup": r.speedup} for r in runs]
        )
        return
    for r in runs:
        sp = f"{r.speedup:.2f}x" if r.speedup else "-"
        out.print(
            f"run {r.id:<4} {r.problem_id:<12} {r.status.value:<12} {r.proposer:<9} {r.machine} "
            f"budget {r.budget:<4} best {sp}  {r.created_at.isoformat()[:19]}",
            markup=False,
        )
    if not runs:
        err.print("no runs yet")


app.command("report")(report_cmd)
app.command("bench")(bench_cmd)

skills_app = typer.Typer(
    help="The skills library: catalog, usage statistics, consolidation.", no_args_is_help=True
)
app.add_typer(skills_app, name="skills")


@skills_app.command("list")
def skills_list_cmd(
    db: Annotated[
        str | None, typer.Option("--db", help="Add usage statistics from this database.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The skill catalog (name, origin, status, description), with usage counts from the database."""
    from knight.skills import load_skills, skills_dirs

    skills = load_skills()
    counts: dict[str, dict[str, int]] = {}
    if db is not None:
        with _read_store(db) as store:
            counts = store.skill_usage()
    items = [
        {
            "name": k.name,
            "description": k.description,
            "origin": k.metadata.get("origin", ""),
            "status": k.metadata.get("status", ""),
            "usage": counts.get(k.name, {}),
        }
        for k in skills.values()
    ]
    if as_json:
        _print_json(items)
        return
    if not items:
        err.print(
            f"no skills found (looked in {', '.join(map(str, skills_dirs())) or 'no skills/ folder'})",
            markup=False,
        )
    for it in items:
        usage = ", ".join(f"{k} {v}" for k, v in sorted(it["usage"].items()))
        out.print(
            f"{it['name']:<32} {it['origin']:<8} {it['status']:<10} {it['description'][:90]}"
            + (f"  [{usage}]" if usage else ""),
            markup=False,
        )


@skills_app.command("consolidate")
def skills_consolidate_cmd(
    db: DbOpt = "knight.db",
    run: RunOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Skills folder to write into.")] = Path(
        "skills"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Turn a run's accepted patches into learned skills, and its recurring failures into pitfalls."""
    from knight.agent.consolidate import consolidate

    with _read_store(db) as store:
        run_id = store.resolve_run_id(run)
        result = consolidate(store, run_id, out_dir)
    if as_json:
        _print_json({"run_id": run_id, "written": result.written, "skipped": result.skipped})
        return
    for name in result.written:
        out.print(f"wrote {out_dir / name / 'SKILL.md'}", markup=False)
    for name in result.skipped:
        err.print(f"kept existing {name}", markup=False)
    if not result.written and not result.skipped:
        err.print(f"run {run_id} has no accepted patches or recurring failures to consolidate")


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade_cmd(db: DbOpt = "knight.db", as_json: JsonOpt = False) -> None:
    """Upgrade the database schema to this Knight's version (after a backup copy of the file)."""
    from knight.store import open_database

    with open_database(db, create=False, migrate=False) as database:
        upgrade = database.upgrade_with_backup()
    if as_json:
        _print_json(
            {
                "db": db,
                "before": upgrade.before,
                "after": upgrade.after,
                "backup": str(upgrade.backup) if upgrade.backup else None,
            }
        )
    elif upgrade.before == upgrade.after:
        out.print(f"{db}: already at {upgrade.after}", markup=False)
    else:
        kept = f" (backup: {upgrade.backup})" if upgrade.backup else ""
        out.print(f"{db}: {upgrade.before or 'empty'} -> {upgrade.after}{kept}", markup=False)


register(app)  # knight serve, knight token (knight/service/commands.py)


def _make_interruptible() -> None:
    """Let SIGINT stop this run even if our parent ignored it: a shell starts background jobs
    with SIGINT ignored, and both Ctrl-C and the service's cancel are SIGINT."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------- entry point

_python_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Knight's own warnings as one `warning:` line; any other as Python prints it."""
    if issubclass(category, KnightWarning):
        sys.stderr.write(f"warning: {message}\n")
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def main() -> None:
    """Console entry point: user errors end in one line on stderr and a non-zero exit code."""
    default_to_one_thread()  # the commands load numpy lazily, after this
    warnings.showwarning = _show_warning
    try:
        code = app(standalone_mode=False)  # returns typer.Exit's code instead of raising it
    except KnightError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # usage errors arrive here in non-standalone mode
        # Typer bundles its own click, so match click's exception interface, not its class.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
