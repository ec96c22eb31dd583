"""The profile of a scheduled kernel, in the spirit of the Neuron profiler (NPU.md 1, PROF).

Engine busy time and utilisation, DMA bytes, bandwidth, DMA-active share and descriptor-size
histogram, instruction counts, the critical path by engine and by kernel source line, and a
one-line bottleneck verdict derived from those numbers.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from knight.npu.machine import MachineSpec
from knight.npu.program import Program
from knight.npu.timing import UNITS, DmaRecord, Schedule

# Descriptor-size buckets (NPU.md 2.4): overhead-bound, improving, near peak, saturating.
BUCKETS = (
    ("<256B", 0, 256),
    ("256B-2KiB", 256, 2048),
    ("2-4KiB", 2048, 4096),
    (">=4KiB", 4096, 1 << 62),
)
# Critical-path categories besides the compute engines.
DMA_PARTS = ("dma_issue", "dma_fixed", "dma_transfer")
ENGINE_LABEL = {
    "tensor": "TensorE",
    "vector": "VectorE",
    "scalar": "ScalarE",
    "gpsimd": "GpSimd",
    "sync": "SyncE",
    "scalar-dge": "ScalarE DGE",
}


@dataclass
class Profile:
    """What the profiler reports for one simulated kernel (times in ns)."""

    machine: str
    total_ns: float
    n_instructions: int
    engines: dict[
        str, dict[str, float]
    ]  # "core0.tensor", "core0.scalar-dge", "core0.dma" -> busy_ns, utilisation
    dma: dict
    cross_core: dict
    op_counts: dict[str, int]
    engine_counts: dict[str, int]
    critical_path_ns: float
    critical_by_engine: list[tuple[str, float]]  # category -> ns, largest first
    critical_by_line: list[tuple[str, float]]  # "file:line" -> ns, largest first
    bottleneck: str
    notes: list[str] = field(default_factory=list)
    # Share of the HBM bandwidth both cores share (hbm_bytes / (pair bandwidth x makespan)), to set
    # beside the DMA engines' utilisation: whichever is near 100% binds a DMA-bound kernel.
    hbm_utilisation: float = 0.0
    # The critical path's last instructions, oldest first: op, unit, core, line, part, start/end ns.
    critical_tail: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-safe dict (tuples become lists)."""
        d = asdict(self)
        d["critical_by_engine"] = [[k, v] for k, v in self.critical_by_engine]
        d["critical_by_line"] = [[k, v] for k, v in self.critical_by_line]
        return d

    def summary_text(self) -> str:
        """A compact human-readable summary, one topic per line."""
        us = self.total_ns / 1000.0
        lines = [f"latency   {us:.2f} us on {self.machine}, {self.n_instructions} instructions"]
        by_core: dict[str, list[str]] = defaultdict(list)
        for key, v in self.engines.items():
            core, eng = key.split(".", 1)
            by_core[core].append(f"{eng} {100 * v['utilisation']:.0f}%")
        lines.append("engines   " + " | ".join(f"{c}: {' '.join(v)}" for c, v in by_core.items()))
        d = self.dma
        if d["transfers"]:
            per_core = ", ".join(f"{c} {v['bandwidth_gbps']:.0f}" for c, v in d["per_core"].items())
            active = ", ".join(f"{c} {100 * v:.0f}%" for c, v in d["active_share_per_core"].items())
            lines.append(
                f"dma       {d['bytes'] / 1e6:.3f} MB in {d['transfers']} transfers ({d['descriptors']} descriptors), "
                f"{d['bandwidth_gbps']:.0f} GB/s effective ({per_core}); active {100 * d['active_share']:.0f}% ({active})"
            )
            hist = " | ".join(
                f"{b['bucket']} {b['count']} ({100 * b['bytes'] / max(1, d['bytes']):.0f}% of bytes)"
                for b in d["histogram"]
            )
            lines.append(f"desc      {hist}")
            lines.append(self.utilisation_text())
        if self.cross_core["sendrecv"] or self.cross_core["barriers"]:
            cc = self.cross_core
            lines.append(
                f"x-core    {cc['sendrecv']} sendrecv ({cc['sendrecv_bytes']} B), {cc['barriers']} barriers"
            )
        cp = self.critical_path_ns or 1.0
        lines.append(
            "critical  "
            + " | ".join(f"{k} {100 * v / cp:.0f}%" for k, v in self.critical_by_engine[:6])
        )
        lines.append(
            "lines     "
            + " | ".join(f"{k} {v / 1000:.2f} us" for k, v in self.critical_by_line[:5])
        )
        lines.append(f"verdict   {self.bottleneck}")
        return "\n".join(lines)

    def utilisation_text(self) -> str:
        """HBM utilisation beside the busiest core's DMA-engine utilisation: which one binds."""
        dma = max(
            (v["utilisation"] for k, v in self.engines.items() if k.endswith(".dma")), default=0.0
        )
        if max(self.hbm_utilisation, dma) < 0.5:
            binds = "neither near saturation"
        else:
            binds = ("HBM" if self.hbm_utilisation >= dma else "the DMA engines") + " binds first"
        return (
            f"hbm       {100 * self.hbm_utilisation:.0f}% of the shared HBM bandwidth; DMA engines "
            f"{100 * dma:.0f}% (busiest core) -> {binds}"
        )

    def tail_text(self) -> str:
        """The critical path's last instructions with their source lines, oldest first."""
        rows = [
            f"  {t['start_ns'] / 1000:9.2f}-{t['end_ns'] / 1000:9.2f} us  core{t['core']} "
            f"{t['unit']:<10} {t['op']:<14} {t['part']:<9} {t['line']}"
            for t in self.critical_tail
        ]
        return (
            "critical path, last instructions (start-end, core, unit, op, part, line):\n"
            + "\n".join(rows)
        )


def make_profile(program: Program, schedule: Schedule, m: MachineSpec) -> Profile:
    """Summarise a schedule as the profiler would (NPU.md 1, item 4)."""
    span = schedule.makespan_ps
    transfers = [r for r in schedule.dma.values() if r.mode != "sendrecv"]
    links = [r for r in schedule.dma.values() if r.mode == "sendrecv"]
    segments = schedule.critical_segments()
    by_engine, by_line = _critical_breakdown(schedule, segments)
    ops = Counter(ins.op for ins in schedule.instrs)
    return Profile(
        machine=m.name,
        total_ns=span / 1000.0,
        n_instructions=len(schedule),
        engines=_engine_usage(schedule, m, span),
        dma=_dma_stats(transfers, span, sorted(set(schedule.core))),
        cross_core={
            "sendrecv": len(links),
            "sendrecv_bytes": sum(r.bytes for r in links),
            "barriers": ops.get("barrier", 0),
        },
        op_counts=dict(sorted(ops.items())),
        engine_counts=dict(sorted(Counter(schedule.engine).items())),
        critical_path_ns=sum(t1 - t0 for _, t0, t1, _ in segments) / 1000.0,
        critical_by_engine=by_engine,
        critical_by_line=by_line[:20],
        bottleneck=_bottleneck(program, schedule, segments, by_engine),
        hbm_utilisation=_hbm_utilisation(transfers, span, m),
        critical_tail=_critical_tail(schedule, segments),
    )


CRITICAL_TAIL = 12  # instructions listed from the end of the critical path


def _hbm_utilisation(transfers: list[DmaRecord], span: int, m: MachineSpec) -> float:
    """HBM bytes moved over what the cores' shared HBM can move in the makespan."""
    cap = span / 1000.0 * m.hbm_bw_pair_bytes_per_ns * m.hbm_efficiency
    return sum(r.hbm_bytes for r in transfers) / cap if cap else 0.0


def _critical_tail(schedule: Schedule, segments: list[tuple[int, int, int, str]]) -> list[dict]:
    """The last CRITICAL_TAIL segments of the critical path (segments come latest first)."""
    out = []
    for i, t0, t1, part in segments[:CRITICAL_TAIL]:
        out.append(
            {
                "op": schedule.instrs[i].op,
                "unit": schedule.unit[i],
                "core": schedule.core[i],
                "line": loc_label(schedule, i),
                "part": _category(schedule, i, part),
                "start_ns": t0 / 1000.0,
                "end_ns": t1 / 1000.0,
            }
        )
    return out[::-1]


def _engine_usage(schedule: Schedule, m: MachineSpec, span: int) -> dict[str, dict[str, float]]:
    """Busy time (summed occupancy) and utilisation per core per in-order unit (the engines and
    ScalarE's descriptor generator, "scalar-dge"), plus the DMA engines."""
    busy: dict[str, int] = defaultdict(int)
    for c, u, o in zip(schedule.core, schedule.unit, schedule.occupancy_ps, strict=True):
        busy[f"core{c}.{u}"] += o
    for r in schedule.dma.values():
        if r.mode != "sendrecv":
            busy[f"core{r.core}.dma"] += r.engine_busy_ps
    out: dict[str, dict[str, float]] = {}
    for c in sorted(set(schedule.core)):
        for e in (*UNITS, "dma"):
            b = busy.get(f"core{c}.{e}", 0)
            cap = span * (m.dma_engines if e == "dma" else 1)
            out[f"core{c}.{e}"] = {"busy_ns": b / 1000.0, "utilisation": b / cap if cap else 0.0}
    return out


def _dma_stats(transfers: list[DmaRecord], span: int, cores: list[int]) -> dict:
    """Bytes, bandwidth, DMA-active share and the descriptor histogram (NPU.md 1, PROF)."""
    total = sum(r.bytes for r in transfers)
    span_ns = span / 1000.0
    per_core = {}
    active_per_core = {}
    for c in cores:
        mine = [r for r in transfers if r.core == c]
        b = sum(r.bytes for r in mine)
        per_core[f"core{c}"] = {
            "bytes": b,
            "transfers": len(mine),
            "bandwidth_gbps": b / span_ns if span_ns else 0.0,
        }
        active_per_core[f"core{c}"] = _union_ps(mine) / span if span else 0.0
    hist = []
    for name, lo, hi in BUCKETS:
        inside = [r for r in transfers if lo <= r.chunk_bytes < hi]
        hist.append(
            {
                "bucket": name,
                "count": sum(r.descriptors for r in inside),
                "bytes": sum(r.bytes for r in inside),
            }
        )
    return {
        "bytes": total,
        "hbm_bytes": sum(r.hbm_bytes for r in transfers),
        "transfers": len(transfers),
        "descriptors": sum(r.descriptors for r in transfers),
        "bandwidth_gbps": total / span_ns if span_ns else 0.0,  # B/ns = GB/s
        "per_core": per_core,
        "active_share": _union_ps(transfers) / span if span else 0.0,
        "active_share_per_core": active_per_core,
        "histogram": hist,
    }


def _union_ps(transfers: list[DmaRecord]) -> int:
    """Length of the union of data phases: "time when at least one DMA is transferring" (PROF)."""
    total, cur_lo, cur_hi = 0, -1, -1
    for lo, hi in sorted((r.first_data_ps, r.data_end_ps) for r in transfers):
        if lo > cur_hi:
            total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        elif hi > cur_hi:
            cur_hi = hi
    return total + cur_hi - cur_lo


def loc_label(schedule: Schedule, i: int) -> str:
    """`file:line` of instruction `i`, with the file's base name (kernels are single files)."""
    loc = schedule.instrs[i].loc
    return f"{os.path.basename(loc.file)}:{loc.line}"


def _category(schedule: Schedule, i: int, part: str) -> str:
    """Critical-path category of a segment: the engine for compute, else the DMA/cross-core part."""
    if part == "compute":
        return schedule.engine[i]
    if schedule.instrs[i].op in ("sendrecv", "barrier"):
        return "cross_core"
    return {"issue": "dma_issue", "fixed": "dma_fixed", "transfer": "dma_transfer"}.get(part, part)


def _critical_breakdown(
    schedule: Schedule, segments: list[tuple[int, int, int, str]]
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Critical-path time (ns) per category and per kernel source line, largest first."""
    by_cat: dict[str, int] = defaultdict(int)
    by_line: dict[str, int] = defaultdict(int)
    for i, t0, t1, part in segments:
        by_cat[_category(schedule, i, part)] += t1 - t0
        by_line[loc_label(schedule, i)] += t1 - t0

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        return sorted(((k, v / 1000.0) for k, v in d.items()), key=lambda kv: (-kv[1], kv[0]))

    return ranked(by_cat), ranked(by_line)


def _bottleneck(
    program: Program,
    schedule: Schedule,
    segments: list[tuple[int, int, int, str]],
    by_engine: list[tuple[str, float]],
) -> str:
    """One line naming what dominates the critical path, with the evidence (NPU.md 1)."""
    total = sum(v for _, v in by_engine)
    if total <= 0:
        return "empty: nothing on the critical path"
    groups: dict[str, float] = defaultdict(float)
    for cat, v in by_engine:
        groups["dma" if cat in DMA_PARTS else cat] += v
    top, share = max(groups.items(), key=lambda kv: kv[1])
    pct = 100 * share / total
    if top == "dma":
        return _dma_verdict(program, schedule, segments, pct, dict(by_engine), share)
    mine = [(i, t1 - t0) for i, t0, t1, part in segments if _category(schedule, i, part) == top]
    op, loc = _dominant(schedule, mine)
    if top == "cross_core":
        return (
            f"cross-core-bound: {pct:.0f}% of the critical path is sendrecv/barrier waits ({loc})"
        )
    return f"{ENGINE_LABEL.get(top, top)}-bound: {pct:.0f}% of the critical path is {top} instructions, mostly {op} ({loc})"


def _dma_verdict(
    program: Program,
    schedule: Schedule,
    segments: list[tuple[int, int, int, str]],
    pct: float,
    by_cat: dict[str, float],
    dma_ns: float,
) -> str:
    """DMA verdict: transfer- or latency-dominated, the main tensor, descriptor bucket and line."""
    mine = [
        (i, t1 - t0) for i, t0, t1, part in segments if _category(schedule, i, part) in DMA_PARTS
    ]
    weight: dict[str, int] = defaultdict(int)
    names: dict[str, int] = defaultdict(int)
    for i, dt in mine:
        rec = schedule.dma[i]
        bucket = next(name for name, lo, hi in BUCKETS if lo <= rec.chunk_bytes < hi)
        weight[f"{rec.chunk_bytes}-byte descriptors ({bucket})"] += dt
        ins = schedule.instrs[i]
        src = program.tensors.get(ins.reads[0].tensor, "?") if ins.reads else "?"
        names[src] += dt
    _, loc = _dominant(schedule, mine)
    desc = max(weight.items(), key=lambda kv: kv[1])[0]
    name = max(names.items(), key=lambda kv: kv[1])[0]
    fixed = by_cat.get("dma_fixed", 0.0) + by_cat.get("dma_issue", 0.0)
    if fixed > by_cat.get("dma_transfer", 0.0):
        return (
            f"DMA-latency-bound: {pct:.0f}% of the critical path is DMA, {100 * fixed / dma_ns:.0f}% of it "
            f"issue and fixed latency (many small dependent transfers; use more queues or fewer, larger "
            f"transfers), mostly '{name}' ({loc})"
        )
    return f"DMA-bound: {pct:.0f}% of the critical path is transfers of '{name}' in {desc} ({loc})"


def _dominant(schedule: Schedule, weighted: list[tuple[int, int]]) -> tuple[str, str]:
    """The op and the source line carrying the most time among (index, ps) pairs."""
    ops: dict[str, int] = defaultdict(int)
    locs: dict[str, int] = defaultdict(int)
    for i, dt in weighted:
        ops[schedule.instrs[i].op] += dt
        locs[loc_label(schedule, i)] += dt
    if not ops:
        return "?", "?"
    return max(ops.items(), key=lambda kv: kv[1])[0], max(locs.items(), key=lambda kv: kv[1])[0]
