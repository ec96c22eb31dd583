"""The `knight` command line: parsing and printing only; the work happens in the packages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from knight import __version__
from knight.errors import KnightError, UsageError

app = typer.Typer(
    name="knight",
    help="Knight optimizes accelerator kernels on a simulated Trainium2-like NPU, judged bit for bit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)  # data
err = Console(stderr=True, highlight=False)  # messages and progress

ProblemOpt = Annotated[str | None, typer.Option("--problem", "-p", help="Problem id or folder (default: moe_decode).")]
MachineOpt = Annotated[str | None, typer.Option("--machine", "-m", help="Machine preset: trn2 or trn3 (default: the problem's).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=None, default=str) + "\n")


def _read_kernel(path: Path) -> str:
    if not path.is_file():
        raise UsageError(f"kernel file not found: {path}")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read kernel file {path}: {e}") from None


def _machine(name: str | None) -> str | None:
    from knight.npu.machine import PRESET_NAMES

    if name is not None and name not in PRESET_NAMES and not name.endswith(".toml"):
        raise UsageError(f"unknown machine {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return name


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"knight {__version__}")
        raise typer.Exit(0)


# ----------------------------------------------------------------------------- problems


@app.command("problems")
def problems_cmd(
    heldout: Annotated[bool, typer.Option("--heldout", help="Also list held-out workloads (never shown to proposers).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the installed problems and their visible workloads."""
    from knight.problems import baselines_dirs, list_problems

    problems = list_problems()
    if as_json:
        _print_json([_problem_dict(p, heldout) for p in problems])
        return
    if not problems:
        err.print(f"no problems installed yet (looked in: {', '.join(map(str, baselines_dirs())) or 'no baselines/ folder'})")
        return
    for p in problems:
        out.print(f"[bold]{p.id}[/bold]  {p.spec.title}")
        out.print(f"  machine {p.spec.machine}, grid {p.spec.grid}, correctness {p.spec.correctness}, hash {p.hash}")
        ws = p.spec.workloads + p.spec.adversarial + (p.spec.heldout if heldout else [])
        for w in ws:
            tag = " (held out)" if w in p.spec.heldout else ""
            out.print(f"  - {w.name:<14} weight {w.weight:<5} {w.params} seeds {w.seeds}{tag}")


def _problem_dict(p, heldout: bool) -> dict:
    d = {
        "id": p.id, "title": p.spec.title, "hash": p.hash, "machine": p.spec.machine, "grid": p.spec.grid,
        "correctness": p.spec.correctness, "baseline": str(p.baseline_path),
        "workloads": [w.model_dump() for w in p.spec.workloads + p.spec.adversarial],
    }
    if heldout:
        d["heldout"] = [w.model_dump() for w in p.spec.heldout]
    return d


# ----------------------------------------------------------------------------- eval / profile


@app.command("eval")
def eval_cmd(
    kernel: Annotated[Path, typer.Argument(help="Kernel source file to judge.")],
    problem: ProblemOpt = None,
    machine: MachineOpt = None,
    heldout: Annotated[bool, typer.Option("--heldout", help="Also run the held-out workloads.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Worker processes (default: CPU cores).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="At most this many seeds per workload.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Simulate everything again.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit per run, seconds.")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Judge a kernel: static checks, isolated bit-exact runs on every workload, integrity, score."""
    from knight.evaluation import LocalEvaluator, MemoryCache
    from knight.problems import load_problem

    source = _read_kernel(kernel)
    prob = load_problem(problem)
    if seeds is not None and seeds < 1:
        raise UsageError("--seeds must be at least 1")
    err.print(f"judging {kernel} on {prob.id} ...")
    with LocalEvaluator(
        _machine(machine), workers=workers, timeout_s=timeout, cache=MemoryCache() if no_cache else None, max_seeds=seeds
    ) as ev:
        report = ev.evaluate(source, prob, heldout=heldout)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report) -> None:
    table = Table(title=f"{report.problem} on {report.machine}", title_justify="left")
    for col in ("workload", "latency µs", "baseline µs", "speed-up", "roofline", "correct"):
        table.add_column(col, justify="right" if col != "workload" else "left")
    for w in report.workloads:
        lat = f"{w.latency_ns / 1000:.2f}" if w.latency_ns else "-"
        base = f"{w.baseline_latency_ns / 1000:.2f}" if w.baseline_latency_ns else "-"
        sp = f"{w.baseline_latency_ns / w.latency_ns:.2f}x" if (w.latency_ns and w.baseline_latency_ns) else "-"
        roof = f"{100 * w.roofline_fraction:.0f}%" if w.roofline_fraction else "-"
        table.add_row(w.name + (" (held out)" if w.heldout else ""), lat, base, sp, roof, "yes" if w.correct else "NO")
    out.print(table)
    if report.score_ns:
        out.print(f"score {report.score_ns / 1000:.2f} µs, baseline {report.baseline_score_ns / 1000:.2f} µs, "
                  f"speed-up {report.speedup:.2f}x")
    out.print(f"status {report.status}  ({report.simulated_runs} runs simulated, {report.cached_runs} from cache, "
              f"{report.wall_s:.1f} s; harness {report.harness})")
    if report.failure is not None:
        f = report.failure
        out.print(f"[bold red]{f.one_line()}[/bold red]")
        for key in ("ulp_histogram", "rows", "column_ranges", "tokens", "experts", "cores", "violations"):
            if key in f.details:
                out.print(f"  {key}: {f.details[key]}")
        if f.hint:
            out.print(f"  hint: read skill '{f.hint}' (skills/{f.hint}/SKILL.md)")


@app.command("profile")
def profile_cmd(
    kernel: Annotated[Path, typer.Argument(help="Kernel source file to profile.")],
    problem: ProblemOpt = None,
    machine: MachineOpt = None,
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Visible workload (default: the first).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Input seed (default: the workload's first).")] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Write a Chrome/Perfetto trace JSON here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate one workload and show where the time goes (engines, DMA, critical path)."""
    from knight.evaluation import LocalEvaluator, MemoryCache
    from knight.npu.profile import Profile
    from knight.problems import load_problem

    source = _read_kernel(kernel)
    prob = load_problem(problem)
    if workload is not None:
        visible = {w.name for w in prob.all_workloads()}
        if workload not in visible:
            raise UsageError(f"unknown workload {workload!r}; visible workloads: {', '.join(sorted(visible))}")
    with LocalEvaluator(_machine(machine), workers=1, cache=MemoryCache()) as ev:
        run = ev.profile_run(source, prob, workload, seed, trace=trace is not None)
    if not run.ok:
        f = run.failure
        raise KnightError(f.one_line() if f else "the run failed")
    if trace is not None and run.trace is not None:
        trace.write_text(json.dumps(run.trace))
        err.print(f"trace written to {trace} (open it in ui.perfetto.dev or chrome://tracing)")
    if as_json:
        _print_json({"workload": run.workload, "seed": run.seed, "latency_ns": run.latency_ns, "profile": run.profile})
        return
    out.print(f"{prob.id} / {run.workload} (seed {run.seed})")
    out.print(Profile(**run.profile).summary_text())


# ----------------------------------------------------------------------------- entry point


def main() -> None:
    """Console entry point: user errors end in one line on stderr and a non-zero exit code."""
    try:
        app(standalone_mode=False)
    except KnightError as e:
        err.print(f"error: {e}", markup=False)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
