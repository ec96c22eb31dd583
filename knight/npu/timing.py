"""The timing model: lower a traced `Program` to parallel lists, then schedule it in one pass.

Lowering merges the two cores' streams in program order (core 0 then core 1 at each index),
infers dependencies from the regions each instruction reads and writes (NPU.md 5.2) and looks up
memoised costs. Scheduling is the single in-order pass of NPU.md 5.3 over integer picoseconds;
DMA transfers (NPU.md 2.4, 5.5), `sendrecv` and `barrier` (NPU.md 2.5) take a slower side path.

The in-order resources ("units") of a core are its five engines plus ScalarE's descriptor
generator (`scalar-dge`). An HWDGE DMA triggered from ScalarE is dispatched in ScalarE's in-order
stream (it waits there for its inputs, and later ScalarE instructions wait for that dispatch), but
its ~600 ns of descriptor generation runs on the DGE, which is independent of ScalarE's compute
pipeline, so it hides behind *earlier* ScalarE compute (ARCH2 "Descriptor Generation Engine":
"could be hidden behind earlier compute instructions ... in program order"). SyncE-triggered
HWDGE DMAs hold SyncE; SWDGE DMAs hold GpSimd while it generates descriptors (DGE); `none` DMAs
(precomputed descriptors) hold no engine.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

from knight.npu.access import overlaps, partitions_meet
from knight.npu.costs import instruction_cost
from knight.npu.errors import Race
from knight.npu.machine import MachineSpec
from knight.npu.program import ENGINES, DmaShape, Instr, Program, Region

ENGINE_INDEX = {name: i for i, name in enumerate(ENGINES)}
# In-order scheduler resources per core: the engines, then ScalarE's HWDGE descriptor generator.
UNITS = (*ENGINES, "scalar-dge")
N_UNITS = len(UNITS)
SCALAR_DGE = UNITS.index("scalar-dge")

TENSOR = ENGINE_INDEX["tensor"]

# Instruction classes of the lowered program (0 takes the fast path).
COMPUTE, DMA, SENDRECV, BARRIER, THROTTLED = 0, 1, 2, 3, 4
_CLASS = {"dma_copy": DMA, "sendrecv": SENDRECV, "barrier": BARRIER}

# Binding kinds: what determined an instruction's start (or a transfer's finish).
BIND_KINDS = ("none", "dep", "engine", "queue", "dma_engine", "hbm", "peer")


_new_tuple = tuple.__new__  # builds a NamedTuple from a tuple without its Python-level __new__


def ns_to_ps(ns: float) -> int:
    """Nanoseconds to integer picoseconds."""
    return int(round(ns * 1000.0))


# ----------------------------------------------------------------------------- lowering


@dataclass(slots=True)
class Lowered:
    """The program as parallel lists over merged program order, ready for `run_schedule`."""

    instrs: list[Instr]
    origin: list[tuple[int, int]]  # merged index -> (core, index in core)
    core: list[int]
    engine: list[str]  # the engine the kernel named (a DMA's trigger engine)
    unit: list[str]  # the in-order resource it occupies: its engine, or "scalar-dge" (UNITS)
    res: list[int]  # in-order resource: core * N_UNITS + index in UNITS
    occ: list[int]  # occupancy (DMA: issue time on its trigger unit)
    lat: list[int]  # latency (compute only)
    # Merged indices this instruction waits for (all earlier), less those that finish strictly
    # before another one it waits for (`_drop_implied`).
    deps: list[tuple[int, ...]]
    cls: list[int]  # COMPUTE, DMA, SENDRECV or BARRIER
    partner: dict[int, int]  # sendrecv/barrier: merged index of the other core's half
    dma_plans: dict[int, _DmaPlan]
    xfer_ps: dict[int, int]  # sendrecv: transfer time after both sides issued
    n_cores: int
    # ScalarE-triggered HWDGE DMA -> (ScalarE's resource, its dispatch stream; the latest
    # instruction on it before the DMA)
    dispatch: dict[int, tuple[int, int]]
    prev: list[int]  # the previous instruction on the same in-order unit (-1: none)
    heads: list[int]  # the first instruction on each in-order unit used (prev -1)


@dataclass(frozen=True, slots=True)
class _DmaPlan:
    queue_key: int  # core * dma_queues + queue id
    jobs: tuple[tuple[int, int], ...]  # (DMA engine calendar index, busy ps) per engine used
    groups: tuple[tuple[int, frozenset[int]], ...]  # the same, grouped by busy time
    info: tuple  # the static head of its DmaRecord: core, trigger, mode, queue, bytes, ...
    hbm_ps: int  # time the transfer needs of the pair's HBM cap


def merge_order(cores: list[list[Instr]]) -> list[Instr]:
    """Interleave the cores' streams by index: core0[0], core1[0], core0[1], ... (NPU.md 5.3)."""
    if len(cores) == 1:
        return list(cores[0])
    out: list[Instr] = []
    for i in range(max(len(c) for c in cores)):
        for stream in cores:
            if i < len(stream):
                out.append(stream[i])
    return out


def lower(program: Program, m: MachineSpec) -> Lowered:
    """Build the parallel lists (engines, costs, dependencies) the scheduling pass consumes."""
    instrs = merge_order(program.cores)
    origin = [(ins.core, ins.index) for ins in instrs]
    n_cores = max(1, len(program.cores))
    tracker = _DepTracker(n_cores, m.dma_queues, instrs, program.tensors)
    res: list[int] = []
    unit: list[str] = []
    occ: list[int] = []
    lat: list[int] = []
    deps: list[tuple[int, ...]] = []
    cls: list[int] = []
    plans: dict[int, _DmaPlan] = {}
    xfer: dict[int, int] = {}
    first_half: dict[tuple[int, int], int] = {}  # (index in core, class) -> merged index
    partner: dict[int, int] = {}
    issue_hw, t_swdge, per_desc = (
        ns_to_ps(m.dma_t_issue_hwdge_ns),
        m.dma_t_swdge_ns,
        m.dma_t_swdge_per_desc_ns,
    )
    dispatch: dict[int, tuple[int, int]] = {}
    prev: list[int] = []
    heads: list[int] = []
    last_on = [-1] * (n_cores * N_UNITS)  # the latest instruction on each in-order unit
    ordered: list[int] = []  # a compute instruction's unit, else -1 (see `_drop_implied`)
    plan_of: dict[tuple[int, str, DmaShape], _DmaPlan] = {}  # a plan depends on these only
    throttled = m.tensor_throttle
    for i, ins in enumerate(instrs):
        kind = _CLASS.get(ins.op, COMPUTE)
        u = ENGINE_INDEX[ins.engine]
        if kind == COMPUTE:
            o, lt = instruction_cost(ins, m)
            if throttled and u == TENSOR:
                kind = THROTTLED  # TensorE warm-up throttling (PROF), see `_Throttle`
        elif kind == DMA:
            shape = ins.dma
            assert shape is not None, f"dma_copy without a DmaShape at {ins.loc}"
            key = (ins.core, ins.engine, shape)
            plan = plan_of.get(key)
            if plan is None:
                plan = plan_of[key] = _dma_plan(ins, shape, m)
            plans[i] = plan
            o, lt = _issue_ps(shape, issue_hw, t_swdge, per_desc), 0
            issuer = _issue_unit(ins.engine, shape, u)
            if issuer != u:
                stream = ins.core * N_UNITS + u
                dispatch[i] = (stream, last_on[stream])
            u = issuer
        else:
            o, lt = (issue_hw if kind == SENDRECV else 0), 0
            if kind == SENDRECV:
                xfer[i] = _sendrecv_ps(ins, m)
            j = first_half.pop((ins.index, kind), None)
            if j is None or instrs[j].core == ins.core:
                first_half[(ins.index, kind)] = i
            else:
                partner[i], partner[j] = j, i
        r = ins.core * N_UNITS + u
        res.append(r)
        unit.append(UNITS[u])
        occ.append(o)
        lat.append(lt)
        cls.append(kind)
        prev.append(last_on[r])
        if last_on[r] < 0:
            heads.append(i)
        last_on[r] = i
        ds = tracker.add(i, ins, r, COMPUTE if kind == THROTTLED else kind)
        ordered.append(r if kind == COMPUTE or kind == THROTTLED else -1)
        deps.append(_drop_implied(ds, ordered, occ, lat) if len(ds) > 1 else ds)
    return Lowered(
        instrs,
        origin,
        [ins.core for ins in instrs],
        [ins.engine for ins in instrs],
        unit,
        res,
        occ,
        lat,
        deps,
        cls,
        partner,
        plans,
        xfer,
        n_cores,
        dispatch,
        prev,
        heads,
    )


def _drop_implied(
    ds: tuple[int, ...], ordered: list[int], occ: list[int], lat: list[int]
) -> tuple[int, ...]:
    """`ds` (sorted) without the dependencies that finish strictly before a later one on the same
    in-order compute unit, so they can neither set the start nor be blamed for it.

    If j < t run on one unit, t starts no earlier than j's start + occupancy (throttling only
    lengthens occupancy and latency together), so finish(t) - finish(j) >= lat[t] - (lat[j] -
    occ[j]); when that is positive, waiting for t implies waiting for j.
    """
    top: dict[int, int] = {}
    on_units = 0
    for j in ds:
        u = ordered[j]
        if u >= 0:
            top[u] = j  # ascending: the latest on its unit
            on_units += 1
    if len(top) == on_units:  # at most one per unit: nothing is implied
        return ds
    return tuple(
        j for j in ds if (u := ordered[j]) < 0 or (t := top[u]) == j or lat[t] <= lat[j] - occ[j]
    )


def _issue_unit(engine: str, shape: DmaShape, u: int) -> int:
    """The in-order unit that issues a transfer (index in UNITS; `u` is the trigger engine's).

    An HWDGE DMA triggered from ScalarE runs on ScalarE's descriptor generator, a unit of its own
    (it is still dispatched in ScalarE's stream: `Lowered.dispatch`). Every other DMA holds its
    trigger engine: SyncE (HWDGE), GpSimd (SWDGE); a `none` DMA holds it for no time.
    """
    return SCALAR_DGE if engine == "scalar" and shape.mode == "hwdge" else u


def _issue_ps(shape: DmaShape, issue_hw: int, t_swdge: float, per_desc: float) -> int:
    """Time the issuing unit is held to issue a transfer (NPU.md 2.4, 5.5 step 1)."""
    if shape.mode == "hwdge":
        return issue_hw  # HWDGE holds SyncE or ScalarE's DGE ~0.6 us
    if shape.mode == "swdge":  # descriptors are generated on GpSimd, per descriptor
        return ns_to_ps(t_swdge + shape.partitions * shape.chunks_per_partition * per_desc)
    return 0  # mode "none": precomputed descriptors, no device cost


def _dma_plan(ins: Instr, shape: DmaShape, m: MachineSpec) -> _DmaPlan:
    """Split a transfer over DMA engines, 8 partitions each (NPU.md 2.4, 5.5 step 3)."""
    core = ins.core
    per_eng = m.dma_partitions_per_engine
    parts_on: dict[int, int] = {}
    if shape.partitions > 0:
        for e in range(shape.p0 // per_eng, (shape.p0 + shape.partitions - 1) // per_eng + 1):
            lo, hi = max(shape.p0, e * per_eng), min(shape.p0 + shape.partitions, (e + 1) * per_eng)
            parts_on[e % m.dma_engines] = parts_on.get(e % m.dma_engines, 0) + hi - lo
    per_chunk_ns = descriptor_ns(shape.chunk_bytes, m)
    jobs = tuple(
        (core * m.dma_engines + e, ns_to_ps(p * shape.chunks_per_partition * per_chunk_ns))
        for e, p in sorted(parts_on.items())
    )
    by_need: dict[int, set[int]] = {}
    for e, need in jobs:
        by_need.setdefault(need, set()).add(e)
    groups = tuple((need, frozenset(engs)) for need, engs in sorted(by_need.items()))
    hbm_rate = m.hbm_bw_pair_bytes_per_ns * m.hbm_efficiency  # NPU.md 5.5 step 5
    return _DmaPlan(
        queue_key=core * m.dma_queues + shape.queue,
        jobs=jobs,
        groups=groups,
        info=(
            ins.core,
            ins.engine,
            shape.mode,
            shape.queue,
            shape.total_bytes,
            shape.hbm_bytes,
            shape.partitions * shape.chunks_per_partition,
            shape.chunk_bytes,
            tuple(e for e, _ in jobs),
            sum(need for _, need in jobs),
        ),
        hbm_ps=ns_to_ps(shape.hbm_bytes / hbm_rate),
    )


def descriptor_ns(chunk_bytes: int, m: MachineSpec) -> float:
    """Time one DMA engine spends on one descriptor (a contiguous run) of `chunk_bytes` bytes.

    (s^k + K^k)^(1/k) / BW_eng: bandwidth-bound for large runs, bounded below by a per-descriptor
    time K / BW_eng (the packet rate) for small ones; K and k are fitted to the DMAOV
    throughput-vs-size figure (docs/npu-model.md).
    """
    k, knee = m.dma_desc_knee_sharpness, m.dma_desc_knee_bytes
    return (chunk_bytes**k + knee**k) ** (1.0 / k) / m.dma_bw_engine_bytes_per_ns


def dma_efficiency(chunk_bytes: int, m: MachineSpec) -> float:
    """Share of an engine's peak rate reached with descriptors of `chunk_bytes` bytes."""
    return chunk_bytes / m.dma_bw_engine_bytes_per_ns / descriptor_ns(chunk_bytes, m)


def _sendrecv_ps(ins: Instr, m: MachineSpec) -> int:
    """Transfer time of one core's half of a sendrecv over min(16, ceil(P/8)) engines (NPU.md 2.5)."""
    parts = ins.reads[0].p1 - ins.reads[0].p0 if ins.reads else 0
    per_eng = m.dma_partitions_per_engine
    engines = min(m.dma_engines, -(-parts // per_eng)) if parts > 0 else m.dma_engines
    return ns_to_ps(ins.xfer_bytes / (m.dma_bw_engine_bytes_per_ns * engines))


class _DepTracker:
    """Region dependencies per tensor (NPU.md 5.2): the last writers and the readers since.

    Both are kept as pieces (`_SortedEntries`): a partition range (contiguous or strided) times
    one byte interval, so a strided access (a column strip of a tall tensor) is one piece per
    run and its bounding box does not make it a candidate for every later access. A writer's tag
    is its tensor-engine resource for a matmul (the accumulate exemption), else -1. A reader's
    tag names an ordered stream on which finishes never decrease in program order (a compute
    engine, or a FIFO DMA queue), else -1.

    Tensors touched by both cores are shared HBM. Two accesses to the same bytes from different
    cores, at least one a write, with no `core_barrier` between them, are a data race on
    hardware (the cores run unsynchronised): a `Race` error at the later instruction's line.
    """

    def __init__(
        self, n_cores: int, n_queues: int, instrs: list[Instr], names: dict[int, str]
    ) -> None:
        self.n_queues = n_queues
        self.instrs, self.names = instrs, names
        self.writers: dict[int, _SortedEntries] = {}
        self.readers: dict[int, _SortedEntries] = {}
        # Barrier fence state per core (NPU.md 2.5): what a barrier waits for, and who waits for it.
        self.last_ordered: list[dict[int, int]] = [{} for _ in range(n_cores)]  # stream -> last
        self.unordered: list[list[int]] = [[] for _ in range(n_cores)]
        self.fence: list[dict[int, int]] = [{} for _ in range(n_cores)]
        self.epoch = [0] * n_cores  # core_barriers passed so far, per core
        self.epoch_of: list[int] = []  # merged index -> its core's epoch when it was issued

    def add(self, i: int, ins: Instr, r: int, kind: int) -> tuple[int, ...]:
        """Record instruction `i` and return its dependencies (all earlier in merged order)."""
        deps: set[int] = set()
        self.epoch_of.append(self.epoch[ins.core])
        # An accumulating matmul is pipelined behind the previous matmul of the same group on the
        # same TensorE (in-order issue already orders them): it ignores earlier matmul writers
        # (RAW, WAW); the earlier matmuls' PSUM reads never hold it back because each matmul's
        # write supersedes its own read (`_add_writer`). It still waits for other writers.
        pipe = r if ins.op == "matmul" else -1
        exempt = r if (ins.op == "matmul" and ins.accumulate) else NO_EXEMPTION
        writers, readers = self.writers, self.readers
        for reg in ins.reads:  # RAW: the last writer(s) of every overlapping region read
            idx = writers.get(reg.tensor)
            if idx is not None:
                idx.meeting(reg, exempt, deps)
        for reg in ins.writes:
            idx = readers.get(reg.tensor)
            if idx is not None:  # WAR: all readers since the region's last write
                idx.meeting(reg, NO_EXEMPTION, deps)
            idx = writers.get(reg.tensor)
            if idx is not None:  # WAW: the last overlapping writer(s)
                idx.meeting(reg, exempt, deps)
        if len(self.epoch) > 1:
            self._check_races(i, ins, deps)
        mono = self._stream(ins, r, kind)
        self._fence_deps(i, ins, r, kind, mono, deps)
        deps.discard(i)
        for reg in ins.reads:
            self._add_reader(reg, i, mono)
        for reg in ins.writes:
            self._add_writer(reg, i, pipe)
        if kind == BARRIER:
            self.epoch[ins.core] += 1
        return tuple(sorted(deps)) if len(deps) > 1 else tuple(deps)

    def _check_races(self, i: int, ins: Instr, deps: set[int]) -> None:
        """A data dependency on the other core's access with no core_barrier between is a race."""
        instrs, epoch_of, mine = self.instrs, self.epoch_of, self.epoch[ins.core]
        for j in deps:
            other = instrs[j]
            if other.core != ins.core and epoch_of[j] >= mine:
                # Barrier k (counted per core) orders everything before it on both cores: the
                # access j happened before its core's barrier number epoch_of[j] + 1, which this
                # core has not passed yet.
                raise _race(ins, other, self.names)

    def _stream(self, ins: Instr, r: int, kind: int) -> int:
        """The ordered stream of an instruction: finishes are monotone along an in-order engine
        (same clock, same t_wb / t_fill) and along a FIFO DMA queue (5.5 step 4); -1 if none."""
        if kind == COMPUTE:
            return r
        if kind == DMA and ins.dma is not None:
            return 1_000_000 + ins.core * self.n_queues + ins.dma.queue
        return -1

    def _add_reader(self, reg: Region, i: int, mono: int) -> None:
        idx = self.readers.get(reg.tensor)
        if idx is None:
            idx = self.readers[reg.tensor] = _SortedEntries()
        elif mono >= 0:
            # A later reader on the same ordered stream finishes no earlier, so it stands in for
            # the readers of that stream whose pieces it covers.
            idx.drop_inside(reg, mono)
        idx.add(reg, i, mono)

    def _add_writer(self, reg: Region, i: int, pipe: int) -> None:
        # Pieces that this write covers are superseded: later accesses wait for this write,
        # which waited for them (WAR/WAW), so the lists stay short. Dropping is a saving, with
        # one exception that depends on it: a matmul's write supersedes its own accumulate read,
        # so the next accumulating matmul (exempt from the WAW) is not held back by a WAR.
        readers = self.readers.get(reg.tensor)
        if readers is not None:
            readers.drop_inside(reg)
        idx = self.writers.get(reg.tensor)
        if idx is None:
            idx = self.writers[reg.tensor] = _SortedEntries()
        else:
            idx.drop_inside(reg)
        idx.add(reg, i, pipe)

    def _fence_deps(
        self, i: int, ins: Instr, r: int, kind: int, stream: int, deps: set[int]
    ) -> None:
        """A barrier waits for everything before it on its core; each unit's next instruction
        (engines and ScalarE's DGE) waits for the barrier (model of NPU.md 2.5: a barrier
        synchronises the whole core)."""
        c = ins.core
        fence = self.fence[c]
        if fence:
            b = fence.pop(r, None)
            if b is not None:
                deps.add(b)
        if kind == BARRIER:
            deps.update(self.last_ordered[c].values())
            deps.update(self.unordered[c])
            self.last_ordered[c] = {}
            self.unordered[c] = []
            base = c * N_UNITS
            self.fence[c] = {base + e: i for e in range(N_UNITS) if base + e != r}
        elif stream >= 0:
            self.last_ordered[c][stream] = i
        else:
            self.unordered[c].append(i)


NO_EXEMPTION = -2  # a tag no access carries: every overlapping piece counts


class _SortedEntries:
    """One tensor's pieces, sorted by first byte: a piece is (p0, p1, b0, b1, merged index, tag,
    partition step), the partitions p0, p0 + step, ... < p1 times the bytes [b0, b1).

    A query visits only the pieces that can reach its bytes: those starting in (b0 - span, b1),
    where `span` is at least the longest piece's byte length (it never shrinks). The order of
    pieces is otherwise free: queries collect sets."""

    __slots__ = ("keys", "entries", "span")

    def __init__(self) -> None:
        self.keys: list[int] = []  # entries[k][2] (first byte), ascending
        self.entries: list[tuple] = []
        self.span = 0

    def near(self, b0: int, b1: int) -> list[tuple]:
        """Every piece whose bytes may meet [b0, b1) (a superset, tested by the caller)."""
        keys = self.keys
        return self.entries[bisect_right(keys, b0 - self.span) : bisect_left(keys, b1)]

    def meeting(self, reg: Region, exempt: int, deps: set[int]) -> None:
        """Add to `deps` the index of every piece (tag other than `exempt`) sharing a byte of a
        partition with `reg`."""
        p0, p1, b0, b1, runs = reg.p0, reg.p1, reg.b0, reg.b1, reg.runs
        keys = self.keys
        lo, hi = bisect_right(keys, b0 - self.span), bisect_left(keys, b1)
        if lo >= hi:
            return
        if runs is None or hi - lo <= len(runs[0]):
            dense = reg.pstep == 1 and runs is None
            for q0, q1, c0, c1, j, tag, qstep in self.entries[lo:hi]:
                if q0 < p1 and p0 < q1 and c0 < b1 and b0 < c1 and tag != exempt:
                    if (dense and qstep == 1) or overlaps(reg, _box(q0, q1, c0, c1, qstep)):
                        deps.add(j)
            return
        # Many runs whose bounding box meets many pieces: look each run up instead, so storing N
        # column strips of a tensor costs N log N lookups, not N^2 exact comparisons.
        contiguous = reg.pstep == 1
        for s, e in zip(*runs, strict=True):
            for q0, q1, c0, c1, j, tag, qstep in self.near(s, e):
                if q0 < p1 and p0 < q1 and c0 < e and s < c1 and tag != exempt:
                    if (contiguous and qstep == 1) or partitions_meet(
                        reg, _box(q0, q1, c0, c1, qstep)
                    ):
                        deps.add(j)

    def add(self, reg: Region, i: int, tag: int) -> None:
        """Record access `i` (with `tag`) to `reg`: one piece per byte run."""
        p0, p1, pstep, keys, entries = reg.p0, reg.p1, reg.pstep, self.keys, self.entries
        if reg.runs is None:
            b0, b1 = reg.b0, reg.b1
            if b1 - b0 > self.span:
                self.span = b1 - b0
            k = bisect_right(keys, b0)
            keys.insert(k, b0)
            entries.insert(k, (p0, p1, b0, b1, i, tag, pstep))
            return
        starts, ends = reg.runs
        longest = max(e - s for s, e in zip(starts, ends, strict=True))
        if longest > self.span:
            self.span = longest
        pieces = [(p0, p1, s, e, i, tag, pstep) for s, e in zip(starts, ends, strict=True)]
        if len(pieces) <= 32:  # a list insert is a memmove: cheaper than a merge of everything
            for piece in pieces:
                k = bisect_right(keys, piece[2])
                keys.insert(k, piece[2])
                entries.insert(k, piece)
            return
        entries += pieces  # two sorted runs: timsort merges them
        entries.sort(key=_FIRST_BYTE)
        self.keys = [piece[2] for piece in entries]

    def drop_inside(self, reg: Region, tag: int | None = None) -> None:
        """Drop the pieces (of `tag`, if given) that `reg` covers. With a partition step only
        pieces on exactly its partitions count (enough: only a matmul's own accumulate read, which
        its write covers exactly, must be dropped)."""
        if reg.runs is None:
            self._drop_inside(reg.p0, reg.p1, reg.pstep, reg.b0, reg.b1, tag)
            return
        for b0, b1 in zip(*reg.runs, strict=True):
            if self.keys:
                self._drop_inside(reg.p0, reg.p1, reg.pstep, b0, b1, tag)

    def _drop_inside(self, p0: int, p1: int, pstep: int, b0: int, b1: int, tag: int | None) -> None:
        keys, entries = self.keys, self.entries
        lo = bisect_left(keys, b0)
        if lo == len(keys) or keys[lo] > b1:
            return  # no piece starts inside [b0, b1]
        hi = bisect_right(keys, b1, lo)
        if pstep == 1:
            if hi - lo <= 8:  # the common case: a tile's last few accesses, deleted in place
                for k in range(hi - 1, lo - 1, -1):
                    e = entries[k]
                    if p0 <= e[0] and e[1] <= p1 and e[3] <= b1 and (tag is None or tag == e[5]):
                        del keys[k], entries[k]
                return
            kept = [
                e
                for e in entries[lo:hi]
                if not (p0 <= e[0] and e[1] <= p1 and e[3] <= b1 and tag in (None, e[5]))
            ]  # e[2] >= b0 by the slice
        else:
            kept = [
                e
                for e in entries[lo:hi]
                if not ((e[0], e[1], e[6]) == (p0, p1, pstep) and e[3] <= b1)
                or tag not in (None, e[5])
            ]
        if len(kept) < hi - lo:
            entries[lo:hi] = kept
            keys[lo:hi] = [e[2] for e in kept]


_FIRST_BYTE = itemgetter(2)


def _box(p0: int, p1: int, b0: int, b1: int, pstep: int = 1) -> Region:
    """The region of an entry stored without its Region (tensor id unused by the tests)."""
    return Region(-1, p0, p1, b0, b1, pstep)


def _race(ins: Instr, other: Instr, names: dict[int, str]) -> Race:
    mine = {reg.tensor for reg in (*ins.reads, *ins.writes)}
    shared = [reg.tensor for reg in (*other.reads, *other.writes) if reg.tensor in mine]
    name = names.get(shared[0], "a shared HBM tensor") if shared else "a shared HBM tensor"
    what = "writes" if any(reg.tensor in shared for reg in ins.writes) else "reads"
    return Race(
        f"core {ins.core} {what} bytes of {name!r} that core {other.core} also accesses "
        f"({other.op} at {other.loc}) with no core_barrier between them: the cores are not "
        "synchronised, so the result depends on timing on hardware",
        ins.loc,
        engine=ins.engine,
        core=ins.core,
    )


# ----------------------------------------------------------------------------- calendars


class Calendar:
    """Busy intervals of a shared bandwidth resource (a DMA engine, the HBM cap; NPU.md 5.5).

    A job fills the earliest free gaps at or after its earliest start, split across gaps if
    needed (work-conserving), so a transfer later in program order but ready earlier in time is
    not blocked behind an earlier one. Intervals are sorted and merged when adjacent.
    """

    __slots__ = ("starts", "ends", "owners", "members")

    def __init__(self, members: frozenset[int] = frozenset()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.owners: list[int] = []  # the job whose piece ends interval k (blamed for a wait)
        self.members = members  # resources sharing this exact history (see _EngineCalendars)

    def split(self, members: frozenset[int]) -> Calendar:
        """A copy of this history for `members`, which leave this calendar."""
        twin = Calendar(members)
        twin.starts, twin.ends, twin.owners = self.starts[:], self.ends[:], self.owners[:]
        self.members = self.members - members
        return twin

    def fill(self, earliest: int, need: int, owner: int) -> tuple[int, int, int, int]:
        """Place `need` ps of work for job `owner` from `earliest` on.

        Returns (first piece start, last piece start, end, blame): `blame` is the job whose busy
        interval ended where the last piece starts, -1 if that piece started at `earliest`.
        """
        if need <= 0:
            return earliest, earliest, earliest, -1
        starts, ends, owners = self.starts, self.ends, self.owners
        if not starts or earliest >= starts[-1]:
            # The common case: the job starts in or after the last busy interval, in one piece.
            t, blame = earliest, -1
            if starts and t <= ends[-1]:
                if t < ends[-1]:
                    blame, t = owners[-1], ends[-1]
                ends[-1] = t + need  # touches the last interval: merged
                owners[-1] = owner
            else:
                starts.append(t)
                ends.append(t + need)
                owners.append(owner)
            return t, t, t + need, blame
        t, blame, first = earliest, -1, -1
        k = bisect_right(ends, t)  # first interval ending after t
        while True:
            n = len(starts)
            if k < n and starts[k] <= t:  # inside a busy interval: skip to its end
                blame, t = owners[k], ends[k]
                k += 1
                continue
            take = need if k == n else min(need, starts[k] - t)
            end = t + take
            _insert(starts, ends, owners, k, t, end, owner)
            if first < 0:
                first = t
            need -= take
            if need == 0:
                return first, t, end, blame
            t = end  # the gap is full; carry on after the interval we ran into
            k = bisect_right(ends, t)


def _insert(
    starts: list[int], ends: list[int], owners: list[int], k: int, a: int, b: int, owner: int
) -> None:
    """Insert the busy piece [a, b) before interval k, merging with touching neighbours."""
    left = k > 0 and ends[k - 1] == a
    right = k < len(starts) and starts[k] == b
    if left and right:
        ends[k - 1] = ends[k]
        owners[k - 1] = owners[k]
        del starts[k], ends[k], owners[k]
    elif left:
        ends[k - 1] = b
        owners[k - 1] = owner
    elif right:
        starts[k] = a
    else:
        starts.insert(k, a)
        ends.insert(k, b)
        owners.insert(k, owner)


class _EngineCalendars:
    """The DMA engines of all cores. Engines that have served exactly the same jobs share one
    calendar (a 128-partition transfer gives all 16 the same work), so a full-width transfer
    costs one fill, not 16; a calendar is split when a job touches only some of its engines."""

    def __init__(self, n_cores: int, per_core: int) -> None:
        self.of: list[Calendar] = []
        for c in range(n_cores):
            shared = Calendar(frozenset(range(c * per_core, (c + 1) * per_core)))
            self.of.extend([shared] * per_core)

    def fill(
        self, groups: tuple[tuple[int, frozenset[int]], ...], ready: int, owner: int
    ) -> tuple[int, int, int, int]:
        """Place a transfer's per-engine work; return (first start, last start, end, blame) of the
        engine that finishes last."""
        of = self.of
        if len(groups) == 1:  # the common case: one shared history for all the engines used
            need, engines = groups[0]
            cal = of[next(iter(engines))]
            if cal.members is engines or cal.members == engines:
                cal.members = engines  # plans share their groups: the next test is by identity
                f0, last, end, blame = cal.fill(ready, need, owner)
                if end > ready:
                    return f0, last, end, blame
                return f0, ready, ready, -1
        first, best = -1, (ready, ready, -1)
        for need, engines in groups:
            cal = of[next(iter(engines))]
            if cal.members == engines:
                cals: Iterable[Calendar] = (cal,)
            else:
                cals = {id(of[e]): of[e] for e in engines}.values()
            for cal in cals:
                if not cal.members <= engines:  # only some of its engines get this job: split
                    cal = cal.split(cal.members & engines)
                    for e in cal.members:
                        of[e] = cal
                f0, last, end, blame = cal.fill(ready, need, owner)
                first = f0 if first < 0 else min(first, f0)
                if end > best[0]:
                    best = (end, last, blame)
        end, last, blame = best
        return (first if first >= 0 else ready), last, end, blame


# ----------------------------------------------------------------------------- throttling

MAX_RAMP_MEMO = 1 << 16  # memoised ramp durations per schedule (the table is cleared when full)


class _Throttle:
    """TensorE dI/dt throttling (PROF, Neuron Explorer "Understanding throttling"): after idling,
    utilization is limited to ~50 % of peak and the limit ramps to 100 % over ~3 us of work; it
    re-engages when utilization falls below 50 % over a ~3 us window.

    Model: the limit at time t is floor + (1 - floor) * min(1, (t - ramp start) / ramp). An idle
    gap of at least half the window restarts the ramp (a window that is at least half idle is
    below 50 %). The limit caps utilization, not speed: an instruction of full-rate occupancy W
    holds TensorE until the work integrated under the limit reaches W, less the idle time since
    the previous instruction (sparse work under the cap is not slowed).

    This holds the state and the ramp's arithmetic; `run_schedule` applies it inline (it runs
    for every matmul).
    """

    __slots__ = ("floor", "ramp", "reset_gap", "ramp_start", "full_at", "busy_end", "_k", "memo")

    def __init__(self, m: MachineSpec, n_units: int) -> None:
        self.floor = float(m.tensor_throttle_floor)
        self.ramp = ns_to_ps(m.tensor_throttle_ramp_ns)
        self.reset_gap = ns_to_ps(m.tensor_throttle_window_ns) // 2
        # Indexed by in-order unit, as `free` is (only each core's TensorE entry is used).
        self.ramp_start = [0] * n_units  # when the current ramp began
        self.full_at = [0] * n_units  # ... and when it reaches full utilization
        self.busy_end = [-self.reset_gap] * n_units  # the first instruction starts a ramp
        # The ramp's constants, computed once (the same float operations, so the same bits).
        rise = 1.0 - self.floor
        a = rise / (2.0 * self.ramp) if self.ramp > 0 else 0.0
        self._k = (rise, a, 4.0 * a, 2.0 * a)
        # work * ramp + (ps into the ramp) -> duration: an int key allocates nothing
        self.memo: dict[int, int] = {}

    def ramp_time(self, into: int, work: int) -> int:
        """Time to complete `work` ps of full-rate work starting `into` ps after the ramp began,
        memoised in `memo` (a kernel's matmuls meet the ramp at few distinct pairs)."""
        if len(self.memo) >= MAX_RAMP_MEMO:
            self.memo.clear()
        self.memo[work * self.ramp + into] = t = self._ramp_time(into, work)
        return t

    def _ramp_time(self, into: int, work: int) -> int:
        """Time to complete `work` ps of full-rate work starting `into` ps after the ramp began."""
        # The limit grows linearly from l0: work done after u ps is l0 u + a u^2 until the ramp
        # ends (u_end), then at full rate.
        rise, a, a4, a2 = self._k
        ramp = self.ramp
        l0 = self.floor + rise * into / ramp  # the limit now
        u_end = ramp - into
        before = l0 * u_end + a * u_end * u_end
        if work >= before:
            return round(u_end + (work - before))
        return round((-l0 + (l0 * l0 + a4 * work) ** 0.5) / a2)


# ----------------------------------------------------------------------------- schedule


class DmaRecord(NamedTuple):
    """One transfer's timeline, for the profile and the trace (times in ps)."""

    index: int  # merged index
    core: int
    trigger: str  # engine that triggered it (ScalarE's HWDGE DMAs are issued on "scalar-dge")
    mode: str  # "hwdge", "swdge", "none" or "sendrecv"
    queue: int  # queue id (-1 for sendrecv)
    bytes: int
    hbm_bytes: int
    descriptors: int
    chunk_bytes: int
    engines: tuple[int, ...]  # DMA engines used (core * dma_engines + engine)
    engine_busy_ps: int  # summed over the engines used
    issue_start_ps: int
    issue_end_ps: int
    queue_start_ps: (
        int  # the first-byte latency starts (the trigger, or the queue's previous finish)
    )
    data_start_ps: int  # earliest data movement (first-byte latency, descriptors, queue FIFO)
    first_data_ps: int  # first byte actually moved (engines may be busy)
    finish_ps: int  # dependants may start: last byte + the completion latency
    limit: str  # what set the finish: "engines", "hbm" or "link" (sendrecv)
    data_end_ps: int  # last byte moved


class FinishBinding(NamedTuple):
    """For DMA and joint events: what determined the finish, beyond the issue on the engine.

    The instruction's critical segment is [release_ps, finish] when `pred` bound it; `own_*` is
    the binding of its own chain (queue or issue), used when `release_ps` is not reached.
    """

    issue_end_ps: int
    pred: int
    kind: str
    release_ps: int
    own_pred: int
    own_kind: str
    own_release_ps: int


@dataclass
class Schedule:
    """Per instruction (merged order) timing, plus DMA records and the way back to the program."""

    core: list[int]
    engine: list[str]  # the engine the kernel named (a DMA's trigger engine)
    unit: list[str]  # the in-order resource occupied: the engine, or "scalar-dge" (UNITS)
    start_ps: list[int]
    finish_ps: list[int]
    occupancy_ps: list[int]
    bind: list[int]  # the dependency or engine predecessor that set the start (-1: none)
    bind_kind: list[str]  # one of BIND_KINDS
    makespan_ps: int
    dma: dict[int, DmaRecord]  # DMA and sendrecv transfers, by merged index
    finish_bind: dict[int, FinishBinding]
    origin: list[tuple[int, int]]  # merged index -> (core, index in core)
    instrs: list[Instr]

    def __len__(self) -> int:
        return len(self.start_ps)

    def critical_segments(self) -> list[tuple[int, int, int, str]]:
        """Walk back from the last finish through binding predecessors.

        Returns (merged index, t0, t1, part) segments tiling [0, makespan], latest first; part is
        "compute", "issue", "fixed" (DMA fixed latency), "transfer" or "cross_core".
        """
        if not self.start_ps:
            return []
        i = max(range(len(self.finish_ps)), key=self.finish_ps.__getitem__)
        t = self.finish_ps[i]
        out: list[tuple[int, int, int, str]] = []
        for _ in range(4 * len(self.start_ps) + 8):  # every step moves back in time; a guard only
            if i < 0:
                break
            fb = self.finish_bind.get(i)
            if (
                fb is None or t <= fb.issue_end_ps
            ):  # a compute instruction, or reached via its issue
                if t > self.start_ps[i]:
                    out.append((i, self.start_ps[i], t, "compute" if fb is None else "issue"))
                t, i = self.start_ps[i], self.bind[i]
                continue
            pred, rel = fb.pred, fb.release_ps
            if rel > t:  # the blamed job's piece ended before our own chain: follow our own
                pred, rel = fb.own_pred, fb.own_release_ps
            out.extend(self._special_parts(i, rel, t, fb))
            t, i = rel, pred
        return out

    def _special_parts(
        self, i: int, t0: int, t1: int, fb: FinishBinding
    ) -> list[tuple[int, int, int, str]]:
        """Split a DMA / joint-event segment [t0, t1] into issue, fixed and transfer parts."""
        rec = self.dma.get(i)
        if rec is None or rec.mode == "sendrecv":
            cuts = [(fb.issue_end_ps, "issue"), (t1, "cross_core")]
        else:
            cuts = [
                (rec.issue_end_ps, "issue"),
                (rec.queue_start_ps, "fixed"),
                (rec.data_start_ps, "fixed"),
                (rec.data_end_ps, "transfer"),
                (t1, "fixed"),
            ]
        out = []
        lo = t0
        for cut, part in cuts:
            hi = min(max(cut, lo), t1)
            if hi > lo:
                out.append((i, lo, hi, part))
                lo = hi
        return out[::-1]


def schedule(program: Program, m: MachineSpec) -> Schedule:
    """Time a traced program on machine `m` (NPU.md 5)."""
    return run_schedule(lower(program, m), m)


def run_schedule(low: Lowered, m: MachineSpec) -> Schedule:
    """The single in-order pass of NPU.md 5.3 over a lowered program."""
    n = len(low.res)
    free = [0] * (low.n_cores * N_UNITS)  # when each in-order unit can start its next instruction
    # Filled by index (the side path patches a joint event's first half when the second issues).
    start = [0] * n
    fin = [0] * n
    # The unit predecessor binds unless a dependency finishes later (the first on a unit: none).
    bind = list(low.prev)
    kinds = ["engine"] * n
    for i in low.heads:
        kinds[i] = "none"
    occ_out = list(low.occ)
    side = _SidePath(low, m, fin, free, occ_out, start)
    thr, dma = side.throttle, side.dma
    thr_end, thr_full, thr_reset = thr.busy_end, thr.full_at, thr.reset_gap
    thr_start, thr_ramp, thr_memo = thr.ramp_start, thr.ramp, thr.memo
    for i, e, o, lt, ds, c in zip(
        range(n), low.res, low.occ, low.lat, low.deps, low.cls, strict=True
    ):
        # start(i) = max(free(e), max over deps of finish(d)); remember which one bound it.
        s = free[e]
        for d in ds:
            f = fin[d]
            if f > s:
                s = f
                bind[i] = d
                kinds[i] = "dep"
        if not c:
            free[e] = s + o
            fin[i] = s + lt
        elif c == THROTTLED:
            # TensorE warm-up throttling (PROF, `_Throttle`), inlined: outside the ramp it costs
            # two comparisons, inside it a memo lookup. The instruction is held until its work,
            # integrated under the ramping limit, is done, less the idle gap before it.
            gap = s - thr_end[e]
            if gap >= thr_reset:  # an idle half-window: the limit re-engages
                thr_start[e] = s
                thr_full[e] = s + thr_ramp
                gap = 0
            if s < thr_full[e]:
                into = s - thr_start[e]  # 0 <= into < ramp: the key below is unique
                t = thr_memo.get(o * thr_ramp + into)
                if t is None:
                    t = thr.ramp_time(into, o)
                t -= gap
                if t > o:
                    occ_out[i] = t
                    lt += t - o
                    o = t
            free[e] = thr_end[e] = s + o
            fin[i] = s + lt
        elif c == DMA:
            s, bind[i], kinds[i], hold, fin[i] = dma(i, s, bind[i], kinds[i])
            free[e] = s + hold
        else:
            s, bind[i], kinds[i], hold, fin[i] = side.run(c, i, s, bind[i], kinds[i])
            free[e] = s + hold
        start[i] = s
    return Schedule(
        core=low.core,
        engine=low.engine,
        unit=low.unit,
        start_ps=start,
        finish_ps=fin,
        occupancy_ps=occ_out,
        bind=bind,
        bind_kind=kinds,
        makespan_ps=max(fin) if fin else 0,
        dma=side.records,
        finish_bind=side.finish_bind,
        origin=low.origin,
        instrs=low.instrs,
    )


class _SidePath:
    """DMA transfers and the two cores' joint events: everything that is not an in-order engine."""

    def __init__(
        self,
        low: Lowered,
        m: MachineSpec,
        fin: list[int],
        free: list[int],
        occ: list[int],
        start: list[int],
    ) -> None:
        self.low, self.fin, self.free, self.occ, self.start = low, fin, free, occ, start
        # Cross-engine fixed latency of a joint event (sendrecv, barrier): trigger -> first byte
        # plus completion -> consumer, DMABW's "~1300 ns cross-engine" (NPU.md 2.5, model).
        self.t_fix = ns_to_ps(m.dma_first_byte_ns + m.dma_completion_ns)
        self.first_byte = {
            "hwdge": ns_to_ps(m.dma_first_byte_ns),
            "none": ns_to_ps(m.dma_first_byte_ns),
            "swdge": ns_to_ps(m.dma_first_byte_swdge_ns),
        }
        self.completion = ns_to_ps(m.dma_completion_ns)
        self.pipelined = m.dma_queue_pipelined
        self.dispatched: list[int] = [0] * (low.n_cores * N_UNITS)  # last DMA dispatch per stream
        self.throttle = _Throttle(m, low.n_cores * N_UNITS)
        self.engines = _EngineCalendars(low.n_cores, m.dma_engines)
        self.hbm = Calendar()  # one HBM-stack cap for the core pair (NPU.md 5.5 step 5)
        # per (core, queue): (free at, last transfer); FIFO (NPU.md 2.4)
        self.queue_free: list[tuple[int, int]] = [(0, -1)] * (low.n_cores * m.dma_queues)
        self.plans, self.low_occ, self.dispatch = low.dma_plans, low.occ, low.dispatch
        self.pending: dict[
            int, tuple[int, int, str, int]
        ] = {}  # first half -> (start, bind, kind, issue end)
        self.records: dict[int, DmaRecord] = {}
        self.finish_bind: dict[int, FinishBinding] = {}

    def run(self, cls: int, i: int, s: int, b: int, k: str) -> tuple[int, int, str, int, int]:
        """Time instruction `i`, ready at `s` (bound by `b`, kind `k`); return
        (start, bind, bind kind, engine hold, finish)."""
        if cls == DMA:
            return self.dma(i, s, b, k)
        if cls == SENDRECV:
            return (s, b, k, *self._sendrecv(i, s, b, k))
        return (s, b, k, *self._barrier(i, s, b, k))

    def _dispatch(
        self, i: int, stream: int, prev: int, s: int, b: int, k: str
    ) -> tuple[int, int, str]:
        """A ScalarE-triggered HWDGE DMA waits for its inputs in ScalarE's in-order stream: it is
        dispatched no earlier than the previous ScalarE instruction started, and ScalarE's next
        instruction waits for that dispatch. Its DGE work then overlaps earlier compute (ARCH2)."""
        ready, rb, rk = 0, -1, "none"
        for d in self.low.deps[i]:
            f = self.fin[d]
            if f > ready:
                ready, rb, rk = f, d, "dep"
        if prev >= 0 and self.start[prev] > ready:
            ready, rb, rk = self.start[prev], prev, "engine"
        if self.dispatched[stream] > ready:
            ready = self.dispatched[stream]
        self.dispatched[stream] = ready
        if self.free[stream] < ready:
            self.free[stream] = ready  # ScalarE's next instruction waits for the dispatch
        if ready > s:
            return ready, rb, rk
        return s, b, k

    def dma(self, i: int, s: int, b: int, k: str) -> tuple[int, int, str, int, int]:
        """NPU.md 5.5: issue, first-byte latency, FIFO queue, engines (calendars), HBM cap,
        completion latency. Returns what `run` returns."""
        d = self.dispatch.get(i)
        if d is not None:
            s, b, k = self._dispatch(i, *d, s, b, k)
        plan = self.plans[i]
        issue = self.low_occ[i]
        issue_end = s + issue
        q_free, q_prev = self.queue_free[plan.queue_key]
        lat = self.first_byte[plan.info[2]]
        # The latency phase starts at the trigger; with a non-pipelined queue it waits for the
        # queue's previous transfer to finish. Data never starts before the descriptors exist,
        # and is FIFO per queue either way (DMAOV).
        q_start = s if self.pipelined or s >= q_free else q_free
        ready = q_start + lat
        if issue_end > ready:
            ready = issue_end
        if q_free > ready:
            ready = q_free
        first, eng_last, eng_end, eng_blame = self.engines.fill(plan.groups, ready, i)
        _, hbm_last, hbm_end, hbm_blame = self.hbm.fill(first, plan.hbm_ps, i)
        data_end = eng_end if eng_end >= hbm_end else hbm_end  # the last engine and the HBM share
        finish = data_end + self.completion  # the completion semaphore reaches the consumer
        self.queue_free[plan.queue_key] = (data_end, i)
        if q_free > issue_end and q_free >= q_start + lat:
            own = (q_prev, "queue", q_free)
        else:
            own = (b, k, s)
        if hbm_end > eng_end:
            bound = (hbm_blame, "hbm", hbm_last) if hbm_blame >= 0 else own
            limit = "hbm"
        else:
            bound = (eng_blame, "dma_engine", eng_last) if eng_blame >= 0 else own
            limit = "engines"
        # Built with tuple.__new__: the NamedTuples' Python-level __new__ is a measurable share
        # of a transfer's scheduling time.
        self.finish_bind[i] = _new_tuple(FinishBinding, (issue_end, *bound, *own))
        self.records[i] = _new_tuple(
            DmaRecord,
            (i, *plan.info, s, issue_end, q_start, ready, first, finish, limit, data_end),
        )
        return s, b, k, issue, finish

    def _sendrecv(self, i: int, s: int, b: int, k: str) -> tuple[int, int]:
        """Joint event: completes at the later issue end + t_fix + transfer (NPU.md 2.5, model)."""
        issue = self.low.occ[i]
        p = self.low.partner.get(i, -1)
        if 0 <= p and p > i:  # first half: its finish is patched when the partner issues
            self.pending[i] = (s, b, k, s + issue)
            return issue, s + issue
        xfer = self.low.xfer_ps[i]
        if p < 0:  # no partner (single core): the transfer alone
            finish = s + issue + self.t_fix + xfer
            self._joint_records(i, -1, s, b, k, s + issue, finish, True, 0)
            return issue, finish
        ps, pb, pk, p_end = self.pending.pop(p)
        my_end = s + issue
        finish = max(my_end, p_end) + self.t_fix + max(xfer, self.low.xfer_ps[p])
        self.fin[p] = finish
        self._joint_records(i, p, s, b, k, my_end, finish, my_end >= p_end, p_end)
        self._joint_records(p, i, ps, pb, pk, p_end, finish, p_end > my_end, my_end)
        return issue, finish

    def _barrier(self, i: int, s: int, b: int, k: str) -> tuple[int, int]:
        """Joint event: both cores finish at the later arrival + t_fix (NPU.md 2.5, model);
        the engine is held until then."""
        p = self.low.partner.get(i, -1)
        if 0 <= p and p > i:
            self.pending[i] = (s, b, k, s)
            return 0, s
        if p < 0:
            finish = s + self.t_fix
            self._joint_records(i, -1, s, b, k, s, finish, True, 0)
            self.occ[i] = finish - s
            return finish - s, finish
        ps, pb, pk, _ = self.pending.pop(p)
        finish = max(s, ps) + self.t_fix
        self.fin[p] = finish
        self.free[self.low.res[p]] = finish
        self.occ[p] = finish - ps
        self.occ[i] = finish - s
        self._joint_records(i, p, s, b, k, s, finish, s >= ps, ps)
        self._joint_records(p, i, ps, pb, pk, ps, finish, ps > s, s)
        return finish - s, finish

    def _joint_records(
        self,
        i: int,
        p: int,
        s: int,
        b: int,
        k: str,
        issue_end: int,
        finish: int,
        later: bool,
        peer_end: int,
    ) -> None:
        """Finish binding (the side that issued later binds both) and, for sendrecv, a record."""
        own = (b, k, s)
        bound = own if later or p < 0 else (p, "peer", peer_end)
        self.finish_bind[i] = FinishBinding(issue_end, *bound, *own)
        ins = self.low.instrs[i]
        if ins.op == "sendrecv":
            xfer = self.low.xfer_ps[i]
            self.records[i] = DmaRecord(
                i,
                ins.core,
                ins.engine,
                "sendrecv",
                -1,
                ins.xfer_bytes,
                0,
                0,
                0,
                (),
                xfer,
                s,
                issue_end,
                finish - xfer - self.t_fix,
                finish - xfer,
                finish - xfer,
                finish,
                "link",
                finish,
            )
