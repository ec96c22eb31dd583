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
from pydantic import BaseModel, ConfigDict, ValidationError

from knight.npu import nisa, nl
from knight.npu.machine import MachineSpec, load_machine
from knight.proposal import Edit, Proposal
from knight.proposers.base import Attempt, KnobStat, ProposalContext, SkillSummary

# ----------------------------------------------------------------------------- answer format

SUBMIT_PATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hypothesis": {
            "type": "string",
            "description": "One sentence: what you expect to get faster, and why.",
        },
        "rationale": {
            "type": "string",
            "description": "Why this should work and keep the outputs bit-exact (a few sentences).",
        },
        "tags": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Short labels, e.g. dma-batching, double-buffering, psum, engine-balance.",
        },
        "skills_used": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Names of the skills from the catalog this patch relies on (may be empty).",
        },
        "edits": {
            "type": "array",
            "description": "Search/replace edits, applied in order to the current champion source.",
            "items": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "description": "The editable kernel file."},
                    "search": {
                        "type": "string",
                        "description": "Exact text of the current source (no line numbers), "
                        "matching exactly one place.",
                    },
                    "replace": {"type": "string", "description": "The text that replaces it."},
                },
                "required": ["file", "search", "replace"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["hypothesis", "rationale", "tags", "skills_used", "edits"],
    "additionalProperties": False,
}


class ProposalFormatError(ValueError):
    """A submitted patch does not fit the submit_patch schema; the message says where."""


class _EditIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    file: str
    search: str
    replace: str


class _SubmitPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    hypothesis: str
    rationale: str
    tags: list[str]
    skills_used: list[str]
    edits: list[_EditIn]


def parse_submit_patch(data: object) -> Proposal:
    """A Proposal from a submit_patch input; ProposalFormatError names every problem."""
    if not isinstance(data, dict):
        raise ProposalFormatError(f"submit_patch input must be a JSON object, got {type(data).__name__}")
    try:
        patch = _SubmitPatch.model_validate(data)
        return Proposal(
            hypothesis=patch.hypothesis,
            rationale=patch.rationale,
            tags=patch.tags,
            skills_used=patch.skills_used,
            edits=[Edit(file=e.file, search=e.search, replace=e.replace) for e in patch.edits],
        )
    except ValidationError as exc:
        raise ProposalFormatError(_validation_summary(exc)) from exc


def _validation_summary(exc: ValidationError) -> str:
    """One line per problem, `path: message`, as the model needs it to correct itself."""
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- system text

ROLE = """You are the proposer of Knight, an optimizer for accelerator kernels. Each iteration you \
form ONE hypothesis about how to make the current champion kernel faster on a simulated \
Trainium2-like NPU, and a patch that tests it. Knight applies the patch, runs the candidate on the \
simulator, checks it bit for bit, measures it, and tells you what happened."""

RULES = """# Rules
- Correctness is bit-exact: on every workload and seed, including held-out workloads and \
adversarial routings you never see, the outputs must equal the baseline kernel's outputs bit for \
bit. Keep the rounding chain: the same accumulation order and K-tiling in PSUM, the same roundings \
to bf16 at the same points, the same order of additions. One differing bit rejects the candidate.
- Only `{kernel_file}` can be edited; every edit names it. Edits are search/replace pairs applied \
to the current champion source: `search` is copied exactly from it (without the line-number \
prefix shown to you) and must match exactly one place; include enough context to be unique.
- One hypothesis per patch. Prefer a focused change whose effect you can predict from the cost \
model; say in the rationale why it keeps the bits.
- The kernel is a pure function over the kernel language: it may import only knight.npu.nl, \
knight.npu.nisa and math; no I/O, reflection, exec/eval, try/with/raise, classes, global or \
module-level mutable state, private or dunder attributes (all rejected as forbidden_construct).
- Latency is simulated by an instruction-level model with ~10% error: small gains are weak \
evidence; structural wins (fewer or larger DMAs, better overlap across engines and queues) hold.
- Integrity: cheating is detected and rejected, and it wastes the iteration. Cheating is: reading \
input or output values on the host or steering Python by device values; caching results across \
calls or keyed by the inputs; computing only what the visible workloads need, or skipping work \
that happens to be zero or repeated on them; writing to or mutating the inputs; touching \
simulator, timer or harness internals; falling back to a reference implementation; \
nondeterminism. A latency below the physical floor (bytes that must move / HBM bandwidth) is an \
integrity failure, never a win."""


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f} us"


def machine_summary(m: MachineSpec) -> str:
    """The NPU facts a proposer needs, with numbers from the machine preset."""
    hbm = m.hbm_bw_pair_bytes_per_ns * m.hbm_efficiency
    return f"""# The machine ({m.name}: {m.description})
- Two physical cores form one logical core: the kernel is traced once per core with \
nl.program_id(0) in {{0, 1}}; both must issue the same instruction sequence (op and engine, in \
order) — only offsets, sizes and data may differ. SBUF and PSUM are private to a core; HBM is \
shared; nisa.sendrecv (<= {m.sendrecv_max_partition_bytes} B per partition) and \
nisa.core_barrier connect the cores.
- Engines per core, each an in-order queue: Tensor ({m.tensor_ghz} GHz: matmul, transpose), \
Vector ({m.vector_ghz} GHz), Scalar ({m.scalar_ghz} GHz: activation; HWDGE trigger), GpSimd \
({m.gpsimd_ghz} GHz; software DMA), Sync (HWDGE trigger). Dependencies come from overlapping \
memory regions (read-after-write, write-after-read, write-after-write); overlap comes from \
spreading independent work over engines and DMA queues and from double-buffering.
- SBUF: {m.partitions} partitions x {m.sbuf_partition_bytes // 1024} KiB; allocation is static \
and never freed (allocate outside loops). PSUM: {m.psum_banks} banks of \
{m.psum_bank_bytes // 1024} KiB per partition ({m.psum_bank_bytes // 4} fp32); each allocation \
takes whole banks; a matmul output stays within one bank.
- Compute instruction: {m.t_fixed_cycles} + max({m.min_ii_cycles}, work) cycles of occupancy, \
+{m.t_wb_cycles} cycles write-back before a dependant starts (a chain of tiny ops costs ~264 \
cycles each; batch them). VectorE perf modes: 16-bit SBUF tensor_copy/tensor_scalar \
{m.vector_perf_copy_factor}x, tensor_tensor {m.vector_perf_tt_factor}x. An innermost stride \
above {m.stride_penalty_bytes} B doubles the work.
- Matmul: dst[M, N] (PSUM fp32) = stationary[K, M].T @ moving[K, N] with K <= \
{m.matmul_max_contract} partitions, M <= {m.matmul_max_stationary}, N <= {m.matmul_max_moving}; \
issue max(N, {m.matmul_min_moving_cycles}) cycles (x{m.matmul_fp32_factor} for fp32 inputs), \
+{m.t_fill_cycles} fill; for a GEMV make the weight stationary and the vector moving.
- DMA: ~{_us(m.dma_t_fix_ns)} fixed latency per transfer, plus ~{_us(m.dma_t_issue_hwdge_ns)} on \
the issuing unit for HWDGE: SyncE for engine=nisa.engine.sync, ScalarE's descriptor generator for \
nisa.engine.scalar (it does not block ScalarE compute); SWDGE (nisa.engine.gpsimd) spends GpSimd \
time per descriptor; dge_mode=nisa.dge_mode.none (descriptors precomputed, static addresses only) \
costs no issue time. {m.dma_engines} DMA engines of {m.dma_bw_engine_bytes_per_ns:g} B/ns, each \
serving {m.dma_partitions_per_engine} partitions (spread transfers over all 128 partitions); \
descriptor efficiency s/(s+{m.dma_s0_bytes} B) for s-byte contiguous chunks (192 B: 27%, 2 KiB: \
80%); HBM ~{hbm:.0f} GB/s shared by the two cores. A transfer's queue follows its trigger engine and \
dge_mode (the kernel cannot choose one); FIFO within a queue, so spread transfers over engines. \
Few large contiguous transfers beat many small ones.
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
        "nl.psum, nl.hbm; activation ops " + ", ".join(f"nl.{o}" for o in nl.ACTIVATION_OPS)
        + "; ALU ops " + ", ".join(f"nl.{o}" for o in nl.ALU_OPS) + ".",
    ]
    lines += [f"- {_signature('nl', getattr(nl, n))}: {_doc(getattr(nl, n))}" for n in NL_FUNCTIONS]
    lines.append("Instructions (each records one instruction; nothing runs at trace time):")
    lines += [f"- {_signature('nisa', getattr(nisa, n))}: {_doc(getattr(nisa, n))}" for n in nisa.INSTRUCTIONS]
    lines.append(
        "Enums (NKI's spellings; engine=nisa.engine.unknown lets Knight pick as documented): "
        + "; ".join(_enum_line(n) for n in nisa.ENUMS)
        + ". The DMA queue follows the trigger engine and dge_mode; kernels never choose it."
    )
    lines.append(
        "Views: indexing/slicing (bounds-checked; an integer on an on-chip partition axis keeps "
        "the axis), view.reshape(*shape) (no copy), view.permute(*axes) (on chip the partition "
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
    """The static prefix: role, problem, rules, machine, language, skill catalog."""
    problem = (
        f"# Problem: {ctx.problem_title} ({ctx.problem_id})\n"
        f"{ctx.problem_description.strip()}\nEditable file: `{ctx.kernel_file}`."
    )
    return "\n\n".join([
        ROLE,
        problem,
        RULES.format(kernel_file=ctx.kernel_file),
        machine_summary(load_machine(machine or ctx.machine)),
        language_summary(),
        skill_catalog(ctx.skills, how_to_read_skills),
    ])


# ----------------------------------------------------------------------------- user turn


def numbered(source: str) -> str:
    """The source with right-aligned line numbers, `  12 | text`."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}} | {line}" for i, line in enumerate(lines, 1))


def _ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ns"


def _status_section(ctx: ProposalContext) -> str:
    text = f"Iteration {ctx.iteration}. Champion {ctx.champion_hash[:12]}: {_ns(ctx.champion_score_ns)}"
    if ctx.champion_score_ns and ctx.baseline_score_ns:
        text += (
            f" (baseline {_ns(ctx.baseline_score_ns)}; "
            f"speedup over the baseline {ctx.baseline_score_ns / ctx.champion_score_ns:.2f}x)"
        )
    return text + "."


def _source_section(ctx: ProposalContext) -> str:
    return (
        f"`{ctx.kernel_file}` (line numbers are for reference only, not part of the text):\n"
        f"```python\n{numbered(ctx.champion_source)}\n```"
    )


def _profile_section(ctx: ProposalContext) -> str:
    return f"{ctx.profile_summary.strip()}\n\nBottleneck: {ctx.bottleneck.strip()}"


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
    diff = list(difflib.unified_diff(
        edit.search.splitlines(), edit.replace.splitlines(), lineterm="", n=1
    ))[2:]  # drop the ---/+++ header
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
    if facts:
        lines.append("   " + "; ".join(facts))
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
    sections = [
        ("Status", _status_section(ctx)),
        ("Champion source", _source_section(ctx)),
        ("Profile of the champion", _profile_section(ctx)),
    ]
    if ctx.knobs:
        sections.append(("Knobs", _knobs_section(ctx)))
    sections.append(("Recent attempts", _attempts_section(ctx)))
    if ctx.lessons:
        sections.append(("Lessons recorded so far", _lessons_section(ctx)))
    return sections


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
