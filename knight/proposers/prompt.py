"""What a model-backed proposer is told, and the answer format it must use.

Shared by the Claude proposer (system block + user turn + tools) and the command proposer (the
same text in a prompt file). The system text depends only on the problem, the machine and the
skill catalog, so it stays byte-identical across a run's iterations and is cached by the API.
"""

from __future__ import annotations

import difflib
import enum
import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import ValidationError

from knight.npu import nisa, nl
from knight.npu.machine import MachineSpec, load_machine
from knight.npu.timing import dma_efficiency
from knight.proposal import Edit, Proposal, SubmitPatch, tool_schema, validation_summary
from knight.proposers.base import Attempt, KnobStat, ProposalContext, SkillSummary, WorkloadView

# ----------------------------------------------------------------------------- answer format

SUBMIT_PATCH_SCHEMA: dict[str, Any] = tool_schema(SubmitPatch)


class ProposalFormatError(ValueError):
    """A submitted patch does not fit the submit_patch schema; the message says where."""


def parse_submit_patch(data: object) -> Proposal:
    """A Proposal from a submit_patch input; ProposalFormatError names every problem."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ProposalFormatError(f"submit_patch input must be a JSON object, got {kind}")
    try:
        patch = SubmitPatch.model_validate(data)
        return Proposal.model_validate(patch.model_dump())
    except ValidationError as exc:
        raise ProposalFormatError(validation_summary(exc)) from exc


# ----------------------------------------------------------------------------- system text

ROLE = """You are the proposer of Knight, an optimizer for accelerator kernels. Each iteration you \
form ONE hypothesis about how to make the current champion kernel faster on a simulated \
Trainium2-like NPU, and a patch that tests it. Knight applies the patch, runs the candidate on the \
simulator, checks it bit for bit, measures it, and tells you what happened."""

RULES = """# Rules
- Correctness is bit-exact: on every workload and seed, including held-out workloads and \
adversarial inputs you never see, the outputs must equal the baseline kernel's outputs bit for \
bit. Keep the rounding chain: the same accumulation order and K-tiling in PSUM, the same roundings \
to bf16 at the same points, the same order of additions. One differing bit rejects the candidate.
- Only `{kernel_file}` can be edited; every edit names it. Edits are search/replace pairs applied \
to the current champion source: `search` is copied exactly from it (without the line-number \
prefix shown to you) and must match exactly one place; include enough context to be unique.
- One hypothesis per patch, so its measured effect tells you whether the idea works. Acceptance: \
a correct candidate whose score is at least {min_gain:.3f}x better than the champion's (speed-up \
= champion score / candidate score >= {min_gain:.3f}) becomes the new champion; a smaller gain is \
rejected as no_gain, a slower one as regression. The simulator is deterministic (same kernel, same \
latency), so a small gain above the threshold is a real, verified gain: submit it alone rather \
than bundling unrelated ideas to clear the bar.
- The kernel is a pure function over the kernel language: it may import only knight.npu.nl, \
knight.npu.nisa and math; no I/O, reflection, exec/eval, try/with/raise, classes, global or \
module-level mutable state, private or dunder attributes (all rejected as forbidden_construct).
- The model is instruction-level and differs from real hardware by ~10%: prefer changes whose \
effect you can predict from the cost rules below; structural wins (fewer or larger DMAs, better \
overlap across engines and queues) carry over to hardware.
- Knobs: the constants listed in TUNABLES are ordinary module-level constants. You may set them \
to any value (not only the listed choices), rename or remove them, or add constants; only the \
offline proposer reads TUNABLES.
- Integrity: cheating is detected and rejected, and it wastes the iteration. Cheating is: reading \
input or output values on the host or steering Python by device values; caching results across \
calls or keyed by the inputs; computing only what the visible workloads need, or skipping work \
that happens to be zero or repeated on them; writing to or mutating the inputs; touching \
simulator, timer or harness internals; falling back to a reference implementation; \
nondeterminism. A latency below the physical floor is an integrity failure, never a win. The \
floor is compute-aware: the time of the slowest resource the work must pass through, either the \
bytes that must cross HBM at its bandwidth or the engine work the problem declares (TensorE \
flops, ScalarE/VectorE/GpSimd elements) at that engine's peak; each workload line below names \
its binding resource ("floor ... hbm-bound" or "tensor-bound", ...)."""

SCORE = """# Score
The score is the weighted geometric mean, over the visible workloads below, of each workload's \
latency (the mean over its seeds): exp(sum(w_i * ln(latency_i)) / sum(w_i)); lower is better. The \
status line's "score" is this number, not any single workload's latency, and the profile you \
see is one workload's. Held-out workloads are checked for correctness only and never scored. \
Workloads (name: weight; parameters):"""


def workloads_section(ctx: ProposalContext) -> str:
    """The score's definition and the visible workloads with their weights and parameters."""
    total = sum(w.weight for w in ctx.workloads) or 1.0
    rows = [
        f"- {w.name}: weight {w.weight:g} ({100 * w.weight / total:.0f}% of the score); "
        + (", ".join(f"{k}={v}" for k, v in w.params.items()) or "no parameters")
        for w in ctx.workloads
    ]
    return SCORE + "\n" + ("\n".join(rows) if rows else "(not listed)")


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f} us"


def _ns(ns: float) -> str:
    return f"{ns:.0f} ns"


def _pct(chunk_bytes: int, m: MachineSpec) -> str:
    """Share of a DMA engine's peak reached with `chunk_bytes`-byte runs, as text."""
    return f"{100 * dma_efficiency(chunk_bytes, m):.0f}%"


def _cores_text(m: MachineSpec, cores: int) -> str:
    """What the grid means: one core, or two that must issue the same instructions."""
    if cores == 1:
        return (
            "- The kernel runs on ONE physical core (the problem's grid is 1): nl.program_id(0) "
            "is 0 and nl.num_programs(0) is 1; there is no second core to share work with."
        )
    return (
        f"- {cores} physical cores form one logical core (the problem's grid is {cores}): the "
        f"kernel is traced once per core with nl.program_id(0) in 0..{cores - 1}; all must issue "
        "the same instruction sequence (op and engine, in order) — only offsets, sizes and data may "
        "differ. SBUF and PSUM are private to a core; HBM is shared; nisa.sendrecv (<= "
        f"{m.sendrecv_max_partition_bytes} B per partition, SBUF to SBUF, no HBM traffic) and "
        "nisa.core_barrier connect the cores."
    )


def dma_rules(m: MachineSpec) -> str:
    """The DMA cost, sharing and arbitration rules (docs/npu-model.md section 5.1)."""
    hbm = m.hbm_bw_pair_bytes_per_ns * m.hbm_efficiency
    pipelining = (
        "Queues are pipelined: a transfer's first-byte latency overlaps the previous one's data."
        if m.dma_queue_pipelined
        else "Queues are serial: a transfer's first-byte latency starts when the previous "
        "transfer on its queue has moved its data."
    )
    return (
        f"- DMA cost: the trigger holds its issuing unit {_ns(m.dma_t_issue_hwdge_ns)} for HWDGE "
        "(SyncE for engine=nisa.engine.sync; ScalarE's descriptor generator for nisa.engine.scalar, "
        "dispatched in ScalarE's program order) or "
        f"{_ns(m.dma_t_swdge_ns)} + {m.dma_t_swdge_per_desc_ns:g} ns per descriptor of GpSimd time "
        f"for SWDGE; the first byte moves {_ns(m.dma_first_byte_ns)} after the trigger "
        f"({_ns(m.dma_first_byte_swdge_ns)} for SWDGE); a dependant starts "
        f"{_ns(m.dma_completion_ns)} after the last byte.\n"
        f"- DMA engines: {m.dma_engines} per core, {m.dma_bw_engine_bytes_per_ns:g} B/ns each; "
        f"partitions map to engines in groups of {m.dma_partitions_per_engine} (group p // "
        f"{m.dma_partitions_per_engine} -> engine (p // {m.dma_partitions_per_engine}) % "
        f"{m.dma_engines}), so spread transfers over all 128 partitions. Each contiguous run "
        f"(descriptor) costs at least ~{_ns(m.dma_desc_knee_bytes / m.dma_bw_engine_bytes_per_ns)} "
        f"of engine time: runs below ~2 KiB are packet-rate bound (192 B: {_pct(192, m)}, 1 KiB: "
        f"{_pct(1024, m)}, 4 KiB: {_pct(4096, m)} of peak). HBM: ~{hbm:.0f} GB/s shared by all "
        "cores; a transfer's bytes count only when both its engines and its HBM share are done.\n"
        "- DMA queues and arbitration: the queue follows (descriptor mode, trigger engine) — HWDGE "
        "on SyncE, HWDGE on ScalarE, SWDGE on GpSimd and the precomputed modes are separate queues; "
        "kernels never pick one. Data moves FIFO within a queue: a transfer's data starts at the "
        "latest of its issue end, its first-byte time and the previous transfer's data end on the "
        "same queue, so a transfer queued behind a big one waits for it even if it was ready "
        f"earlier. {pipelining} The engines (and the HBM) serve the transfers of all queues "
        "first come, first served: transfers are placed in program order, each in the earliest "
        "free gaps at or after it is ready (a later transfer that is ready earlier fills gaps "
        "before an earlier one's booking); an earlier booking is never moved. More queues remove "
        "waiting; they add no bandwidth."
    )


def _cross_core_text(m: MachineSpec, cores: int) -> str:
    """Cross-core memory rules (docs/npu-model.md 4.5), or the register rule alone on one core."""
    registers = (
        "- Registers belong to their core: any engine's DMA on that core may use one, and waits "
        "for its register_load."
    )
    if cores == 1:
        return registers
    return (
        "- Cross-core memory: HBM tensors (inputs, outputs, nl.hbm scratch) are shared, and the "
        "cores run unsynchronised. A read of HBM bytes the other core wrote, or a write to bytes "
        "the other core read or wrote, with no nisa.core_barrier between the two accesses on both "
        "cores, is a data race: the trace fails with `race`, naming both lines. Disjoint bytes "
        "never conflict (regions are exact, so interleaved but disjoint rows are fine); writes to "
        "the same bytes must be ordered by a barrier. A barrier waits for everything the core "
        f"issued before it and costs {_ns(m.dma_first_byte_ns + m.dma_completion_ns)} after the "
        "later core arrives (as does a sendrecv, plus its bytes).\n" + registers
    )


def machine_summary(m: MachineSpec, cores: int = 2) -> str:
    """The NPU facts a proposer needs, with numbers from the machine preset and the grid."""
    # The preset describes the two-core logical core; a grid-1 problem is told only about one.
    about = m.description if cores > 1 else "one physical core of the preset"
    return f"""# The machine ({m.name}, {about})
{_cores_text(m, cores)}
- Engines per core, each an in-order queue: Tensor ({m.tensor_ghz} GHz: matmul, transpose), \
Vector ({m.vector_ghz} GHz), Scalar ({m.scalar_ghz} GHz: activation; HWDGE trigger), GpSimd \
({m.gpsimd_ghz} GHz; software DMA), Sync (HWDGE trigger). Dependencies come from overlapping \
memory regions, compared exactly (read-after-write, write-after-read, write-after-write): the \
even and odd columns of one tile do not depend on each other. Overlap comes from spreading \
independent work over engines and DMA queues and from double-buffering.
- SBUF: {m.partitions} partitions x {m.sbuf_partition_bytes // 1024} KiB; allocation is static \
and never freed (allocate outside loops). PSUM: {m.psum_banks} banks of \
{m.psum_bank_bytes // 1024} KiB per partition ({m.psum_bank_bytes // 4} fp32); each allocation \
takes whole banks; a matmul output stays within one bank.
- PSUM accumulation groups: nc_matmul with accumulate=False starts a group (overwrites), \
accumulate=True adds into a region holding a matmul result, accumulate=None adds when the \
region holds an open group (not yet read out) and overwrites otherwise. Reading a region out \
closes its group. A new group in a region waits until the previous group's read-out has \
finished (write-after-read): with one region TensorE and the evicting engine take turns; \
groups in distinct banks let TensorE run ahead. Consecutive accumulating matmuls into one group \
issue back to back.
- Compute instruction: {m.t_fixed_cycles} + max({m.min_ii_cycles}, work) cycles of occupancy, \
+{m.t_wb_cycles} cycles write-back before a dependant starts (a chain of tiny ops costs \
~{m.t_fixed_cycles + m.min_ii_cycles + m.t_wb_cycles} cycles each; batch them). VectorE perf \
modes: 16-bit SBUF tensor_copy/tensor_scalar {m.vector_perf_copy_factor}x, tensor_tensor \
{m.vector_perf_tt_factor}x. An innermost stride above {m.stride_penalty_bytes} B doubles the work.
- Matmul: dst[M, N] (PSUM fp32) = stationary[K, M].T @ moving[K, N] with K <= \
{m.matmul_max_contract} partitions, M <= {m.matmul_max_stationary}, N <= {m.matmul_max_moving}; \
occupies TensorE max(N, {m.matmul_min_moving_cycles}) cycles (x{m.matmul_fp32_factor} for fp32 \
inputs); the {m.t_fill_cycles}-cycle fill delays only the result's consumer, it does not occupy \
TensorE (the next matmul issues after the occupancy). For a GEMV make the weight stationary and \
the vector moving. After TensorE idles it is throttled to ~{m.tensor_throttle_floor:.0%} of \
peak, ramping to full over ~{_us(m.tensor_throttle_ramp_ns)}.
{dma_rules(m)}
{_cross_core_text(m, cores)}
- Numerics: engines compute in fp32 and round to nearest even on write; a matmul is exact then \
rounded once to fp32; PSUM accumulation adds in instruction order; tensor_reduce sums \
sequentially. Changing tiling or order changes the bits."""


def _default_text(value: object) -> str:
    if isinstance(value, enum.Enum):  # NKI's configuration enums: nisa.engine.unknown, ...
        return f"nisa.{type(value).__name__}.{value.name}"
    if isinstance(value, np.dtype):
        return f"nl.{value.name}"
    if isinstance(value, str) and value in (nl.sbuf, nl.psum):
        return f"nl.{value}"
    return repr(value)


def _signature(prefix: str, fn: Callable[..., Any]) -> str:
    """`nisa.name(a, b=default)` without annotations, as kernel code spells it."""
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
        elif p.default is p.empty:
            params.append(p.name)
        else:
            params.append(f"{p.name}={_default_text(p.default)}")
    return f"{prefix}.{fn.__name__}({', '.join(params)})"


def _doc(fn: Callable[..., Any]) -> str:
    return " ".join((fn.__doc__ or "").split())


NL_FUNCTIONS = ("ndarray", "zeros", "program_id", "num_programs", "affine_range", "ds")


def _enum_line(name: str) -> str:
    cls = getattr(nisa, name)
    return f"nisa.{name}: " + ", ".join(cls.__members__)


@lru_cache(maxsize=1)
def language_summary() -> str:
    """The kernel language: nl declarations and every nisa instruction with its signature."""
    lines = [
        "# Kernel language (`from knight.npu import nisa, nl`)",
        "nl: dtypes nl.bfloat16, nl.float16, nl.float32, nl.int32, nl.uint32; buffers nl.sbuf (default), "
        "nl.psum, nl.hbm; activation ops "
        + ", ".join(f"nl.{o}" for o in nl.ACTIVATION_OPS)
        + "; ALU ops "
        + ", ".join(f"nl.{o}" for o in nl.ALU_OPS)
        + ".",
    ]
    lines += [f"- {_signature('nl', getattr(nl, n))}: {_doc(getattr(nl, n))}" for n in NL_FUNCTIONS]
    lines.append("Instructions (each records one instruction; nothing runs at trace time):")
    lines += [
        f"- {_signature('nisa', getattr(nisa, n))}: {_doc(getattr(nisa, n))}"
        for n in nisa.INSTRUCTIONS
    ]
    lines.append(
        "Enums (NKI's spellings; engine=nisa.engine.unknown lets Knight pick as documented): "
        + "; ".join(_enum_line(n) for n in nisa.ENUMS)
        + ". The DMA queue follows the trigger engine and dge_mode; kernels never choose it."
    )
    lines.append(
        "Views: indexing/slicing (bounds-checked; an integer on an on-chip partition axis keeps "
        "the axis; slices may have a positive step `a:b:s` on any view, HBM or on chip, but an "
        "on-chip operand's partition range must stay contiguous; negative steps are refused; "
        "nl.ds(start, size) is `start:start+size`), view.reshape(*shape) (no copy), view.permute(*axes) (on chip the partition "
        "axis stays first), view.broadcast_to(*shape) (HBM DMA sources only) issue no instruction. "
        "A register from nisa.register_alloc(), set by nisa.register_load(reg, tile), may index one axis of an HBM view in a dma_copy "
        "(`w[e]`). On-chip operands: partition ranges are contiguous; more than 64 partitions "
        "start at 0, 33-64 at 0 or 64, up to 32 at 0/32/64/96; at most 4 free dims. Fresh memory "
        "is NaN and reading it before writing is an error. Python loops unroll at trace time."
    )
    return "\n".join(lines)


def skill_catalog(skills: list[SkillSummary], how_to_read: str) -> str:
    """The catalog section: every skill's name and when to use it."""
    head = f"# Skills\nNotes from curated knowledge and earlier verified runs. {how_to_read}"
    if not skills:
        return head + "\n(no skills yet)"
    return head + "\n" + "\n".join(f"- {s.name}: {' '.join(s.description.split())}" for s in skills)


def system_prompt(ctx: ProposalContext, how_to_read_skills: str, machine: str | None = None) -> str:
    """The static prefix: role, problem, score and workloads, rules, machine, language, skills.

    Everything here is fixed for a run (problem, grid, threshold, preset, skill catalog), so the
    prefix stays byte-identical across iterations and the API caches it."""
    problem = (
        f"# Problem: {ctx.problem_title} ({ctx.problem_id})\n"
        f"{ctx.problem_description.strip()}\nEditable file: `{ctx.kernel_file}`."
    )
    return "\n\n".join(
        [
            ROLE,
            problem,
            workloads_section(ctx),
            RULES.format(kernel_file=ctx.kernel_file, min_gain=ctx.min_gain),
            machine_summary(load_machine(machine or ctx.machine), ctx.cores),
            language_summary(),
            skill_catalog(ctx.skills, how_to_read_skills),
        ]
    )


# ----------------------------------------------------------------------------- user turn


def numbered(source: str) -> str:
    """The source with right-aligned line numbers, `  12 | text`."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}} | {line}" for i, line in enumerate(lines, 1))


def _ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ns"


def _status_section(ctx: ProposalContext) -> str:
    text = (
        f"Iteration {ctx.iteration}. Champion {ctx.champion_hash[:12]}: score "
        f"{_ns(ctx.champion_score_ns)} (weighted geometric mean of the visible workloads' latencies)"
    )
    if ctx.champion_score_ns and ctx.baseline_score_ns:
        text += (
            f"; baseline score {_ns(ctx.baseline_score_ns)}; "
            f"speedup over the baseline {ctx.baseline_score_ns / ctx.champion_score_ns:.2f}x"
        )
    if ctx.champion_score_ns:
        text += (
            f". A candidate is accepted when its score is at most "
            f"{_ns(ctx.champion_score_ns / ctx.min_gain)} (>= {ctx.min_gain:.3f}x faster)"
        )
    return text + "."


def workload_line(w: WorkloadView, worst: str | None) -> str:
    """One champion workload: latency vs the baseline's, the floor and its binding resource."""
    lat = _ns(w.latency_ns)
    if w.latency_ns and w.baseline_latency_ns:
        lat += (
            f" (baseline {_ns(w.baseline_latency_ns)}, {w.baseline_latency_ns / w.latency_ns:.2f}x)"
        )
    if w.floor_ns and w.floor_bound:
        lat += f"; floor {_ns(w.floor_ns)}, {w.floor_bound}-bound"
        if w.latency_ns:
            lat += f" ({w.floor_ns / w.latency_ns:.0%} of roofline)"
    mark = " [worst: full profile below]" if w.name == worst else ""
    return f"- {w.name} (weight {w.weight:g}): {lat}{mark}" + (
        f"\n  {w.digest}" if w.digest else ""
    )


def _workloads_section(ctx: ProposalContext) -> str:
    return "\n".join(workload_line(w, ctx.worst_workload) for w in ctx.workloads)


def _source_section(ctx: ProposalContext) -> str:
    return (
        f"`{ctx.kernel_file}` (line numbers are for reference only, not part of the text):\n"
        f"```python\n{numbered(ctx.champion_source)}\n```"
    )


def _profile_section(ctx: ProposalContext) -> str:
    head = f"Workload {ctx.worst_workload}.\n" if ctx.worst_workload else ""
    text = f"{head}{ctx.profile_summary.strip()}\n\nBottleneck: {ctx.bottleneck.strip()}"
    return text + (f"\n\n{ctx.critical_tail.strip()}" if ctx.critical_tail else "")


def _suggested_section(ctx: ProposalContext) -> str:
    return "Skills whose applies-when condition holds on the champion's profiles:\n" + "\n".join(
        f"- {name} (applies when {condition})" for name, condition in ctx.suggested_skills
    )


def _knob_record(knob: str, stats: dict[tuple[str, str], KnobStat]) -> str:
    parts = []
    for (name, value), s in sorted(stats.items()):
        if name != knob or not s.tried:
            continue
        best = f", best {s.best_speedup_vs_parent:.2f}x" if s.best_speedup_vs_parent else ""
        parts.append(f"{value}: tried {s.tried}, accepted {s.accepted}, failed {s.failed}{best}")
    return "; ".join(parts)


def _knobs_section(ctx: ProposalContext) -> str:
    lines = [
        "Module-level constants declared in TUNABLES (change one with an edit of its assignment):"
    ]
    for name, value in ctx.knobs.items():
        line = f"- {name} = {value!r}; choices {ctx.knob_choices.get(name, [])!r}"
        record = _knob_record(name, ctx.knob_stats)
        lines.append(line + (f"; record: {record}" if record else ""))
    return "\n".join(lines)


MAX_EDIT_LINES = 16  # per edit shown in an attempt: enough to recognise it, bounded prompt size


def edit_diff(edit: Edit, max_lines: int = MAX_EDIT_LINES) -> str:
    """An edit as a compact diff (`-` search lines, `+` replace lines), truncated."""
    diff = list(
        difflib.unified_diff(edit.search.splitlines(), edit.replace.splitlines(), lineterm="", n=1)
    )[2:]  # drop the ---/+++ header
    if len(diff) > max_lines:
        diff = diff[:max_lines] + [f"... ({len(diff) - max_lines} more diff lines)"]
    return "\n".join(diff) if diff else "(no change)"


def _attempt_text(a: Attempt) -> str:
    outcome = a.status + (f" ({a.category})" if a.category else "")
    lines = [f"#{a.number} {outcome}: {a.hypothesis}"]
    facts = []
    if a.message:
        facts.append(a.message)
    if a.score_ns is not None:
        facts.append(f"score {_ns(a.score_ns)}")
    if a.speedup_vs_parent is not None:
        facts.append(f"{a.speedup_vs_parent:.3f}x vs parent")
    if a.tags:
        facts.append("tags: " + ", ".join(a.tags))
    facts.append("skills used: " + (", ".join(a.skills_used) if a.skills_used else "none"))
    lines.append("   " + "; ".join(facts))
    for w in a.workloads:
        lines.append(f"   {w.name}: {_ns(w.latency_ns)}" + (f"; {w.digest}" if w.digest else ""))
    for edit in a.edits:
        lines.append(f"   edit of {edit.file}:")
        lines += ["   " + line for line in edit_diff(edit).splitlines()]
    return "\n".join(lines)


def _attempts_section(ctx: ProposalContext) -> str:
    if not ctx.recent:
        return "(none yet in this run)"
    head = "Oldest first, with the real edits and what happened; do not repeat a failed idea unchanged."
    return head + "\n\n" + "\n\n".join(_attempt_text(a) for a in ctx.recent)


def _lessons_section(ctx: ProposalContext) -> str:
    return "\n".join(f"- {' '.join(lesson.split())}" for lesson in ctx.lessons)


def user_sections(ctx: ProposalContext) -> list[tuple[str, str]]:
    """The per-iteration context as titled sections (the transcript shows them one by one)."""
    sections = [("Status", _status_section(ctx))]
    if ctx.workloads:
        sections.append(("Champion per workload", _workloads_section(ctx)))
    sections += [
        ("Champion source", _source_section(ctx)),
        ("Profile of the champion", _profile_section(ctx)),
    ]
    if ctx.suggested_skills:
        sections.append(("Suggested skills", _suggested_section(ctx)))
    if ctx.knobs:
        sections.append(("Knobs", _knobs_section(ctx)))
    sections.append(("Recent attempts", _attempts_section(ctx)))
    if ctx.lessons:
        sections.append(("Lessons recorded so far", _lessons_section(ctx)))
    if ctx.focus:
        # Other proposals are being formed at the same time from the same champion: this keeps
        # them apart.
        sections.append(("Focus of this proposal", _focus_section(ctx.focus)))
    return sections


def _focus_section(focus: str) -> str:
    return (
        f"Several proposals are being made in parallel; concentrate yours on {focus}. "
        "Other calls cover other directions, so do not fall back on the most obvious change "
        "unless it is what this focus calls for."
    )


def render_sections(sections: list[tuple[str, str]]) -> str:
    """Sections as one markdown text."""
    return "\n\n".join(f"## {title}\n{body}" for title, body in sections)


TOOL_TASK = """Propose one change to the champion. Study the profile and the bottleneck, read a \
skill with read_skill if one fits (at most a few), then call submit_patch with your hypothesis \
(one sentence), rationale, tags, the skills you used, and the edits to `{kernel_file}`. End every \
answer with a submit_patch call."""

TOOL_TASK_NO_SKILLS = """Propose one change to the champion. Study the profile and the \
bottleneck, then call submit_patch with your hypothesis (one sentence), rationale, tags, the \
skills you used, and the edits to `{kernel_file}`."""

OUTPUT_FORMAT = """Write your answer to the output file named on your command line (if you \
cannot write files, print it to stdout instead) in ONE of these two forms, and nothing else:

1. A JSON object with exactly these fields (the submit_patch schema):
   {{"hypothesis": "one sentence", "rationale": "why it is faster and keeps the bits",
    "tags": ["..."], "skills_used": ["..."],
    "edits": [{{"file": "{kernel_file}", "search": "exact current text", "replace": "new text"}}]}}

2. Your hypothesis on the first line, then SEARCH/REPLACE blocks:
{kernel_file}
<<<<<<< SEARCH
exact current text (no line numbers)
=======
new text
>>>>>>> REPLACE

Do not modify any file yourself: Knight applies the patch and evaluates it."""


def command_task(kernel_file: str) -> str:
    """The closing instructions of a command proposer's prompt file."""
    intro = (
        "Propose one change to the champion: study the profile and the bottleneck, form one "
        "hypothesis, and write the patch that tests it."
    )
    return intro + "\n\n" + OUTPUT_FORMAT.format(kernel_file=kernel_file)
