"""Timing model, profile and trace export, on hand-built Programs (no kernel language needed)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from knight.npu.access import overlaps
from knight.npu.costs import instruction_cost
from knight.npu.errors import SourceLoc
from knight.npu.machine import load_machine
from knight.npu.perfetto import chrome_trace
from knight.npu.profile import make_profile
from knight.npu.program import DmaShape, Instr, Program, Region
from knight.npu.timing import Calendar, lower, run_schedule, schedule

M2 = load_machine("trn2")
M3 = load_machine("trn3")
P = 128

# Tensor ids used below: 1..9 on-chip tiles, 50+ HBM tensors.
HBM_W, HBM_OUT = 50, 51


def I(op: str, engine: str, reads=(), writes=(), core: int = 0, line: int = 1, **kw) -> Instr:  # noqa: E743
    """An instruction at kernel.py:`line`."""
    return Instr(
        op,
        engine,
        core,
        0,
        SourceLoc("kernel.py", line),
        reads=tuple(reads),
        writes=tuple(writes),
        **kw,
    )


def R(t: int, p0: int = 0, p1: int = P, b0: int = 0, b1: int = 64) -> Region:
    return Region(t, p0, p1, b0, b1)


def _on_core(r: Region, c: int) -> Region:
    """On-chip tiles (ids below 50) are per core, as the tracer allocates them; HBM is shared."""
    return r if r.tensor >= HBM_W or c == 0 else Region(r.tensor + 1000 * c, r.p0, r.p1, r.b0, r.b1)


def prog(*streams: list[Instr]) -> Program:
    """A Program from per-core instruction lists (indices, cores and per-core tile ids filled in)."""
    for c, stream in enumerate(streams):
        for k, ins in enumerate(stream):
            ins.index, ins.core = k, c
            ins.reads = tuple(_on_core(r, c) for r in ins.reads)
            ins.writes = tuple(_on_core(r, c) for r in ins.writes)
    n = len(streams)
    return Program(
        [list(s) for s in streams],
        {HBM_W: "w_experts", HBM_OUT: "out", 1: "tile"},
        [0] * n,
        [0] * n,
    )


def dma(
    dst: int = 1,
    engine: str = "sync",
    queue: int = 0,
    partitions: int = P,
    chunks: int = 1,
    chunk: int = 4096,
    src_off: int = 0,
    line: int = 1,
    deps_on: tuple[Region, ...] = (),
) -> Instr:
    """An HBM -> SBUF load of `partitions` x `chunks` x `chunk` bytes."""
    mode = "swdge" if engine == "gpsimd" else "hwdge"
    per = chunks * chunk
    total = partitions * per
    shape = DmaShape(mode, queue, 0, partitions, chunks, chunk, total, total)
    src = Region(HBM_W, 0, 1, src_off, src_off + total)
    return I(
        "dma_copy",
        engine,
        reads=(src, *deps_on),
        writes=(R(dst, 0, partitions, 0, per),),
        dma=shape,
        line=line,
    )


def vec(reads=(), writes=(), elems: int = 512, engine: str = "vector", line: int = 1) -> Instr:
    return I("tensor_scalar", engine, reads, writes, elems=elems, line=line)


def mm(dst: Region, st: Region, mv: Region, accumulate: bool = False, n: int = 512) -> Instr:
    reads = (st, mv, dst) if accumulate else (st, mv)
    return I(
        "matmul",
        "tensor",
        reads,
        (dst,),
        moving=n,
        stationary=P,
        contract=P,
        accumulate=accumulate,
        psum_access=True,
    )


# ----------------------------------------------------------------------------- costs


def test_compute_cost_rules():
    one = I("activation", "scalar", elems=1)
    occ, lat = instruction_cost(one, M2)
    assert occ == M2.cycles_to_ps("scalar", 100 + 64)
    assert lat == M2.cycles_to_ps("scalar", 100 + 64 + 100)
    big = I("tensor_tensor", "vector", elems=1000, n_inputs=2)
    assert instruction_cost(big, M2)[0] == M2.cycles_to_ps("vector", 100 + 2000)
    fast = I("tensor_tensor", "vector", elems=1000, n_inputs=2, perf="tt_sbuf16")
    assert instruction_cost(fast, M2)[0] == M2.cycles_to_ps("vector", 100 + 1000)
    strided = I("tensor_copy", "vector", elems=1000, strided=True)
    assert instruction_cost(strided, M2)[0] == M2.cycles_to_ps("vector", 100 + 2000)
    dyn = I("tensor_copy", "gpsimd", elems=10, dynamic=True)
    assert instruction_cost(dyn, M2)[0] == M2.cycles_to_ps("gpsimd", 100 + 600)
    gemv = I("matmul", "tensor", moving=1, stationary=P)
    assert instruction_cost(gemv, M2) == (
        M2.cycles_to_ps("tensor", 64),
        M2.cycles_to_ps("tensor", 64 + 256),
    )
    fp32 = I("matmul", "tensor", moving=512, stationary=P, fp32_matmul=True)
    assert instruction_cost(fp32, M2)[0] == M2.cycles_to_ps("tensor", 4 * 512)
    with pytest.raises(ValueError):
        instruction_cost(I("dma_copy", "sync"), M2)


# ----------------------------------------------------------------------------- engines and deps


def test_in_order_engine_uses_occupancy_not_latency():
    a, b = vec(writes=[R(1)]), vec(writes=[R(2)])
    c = vec(writes=[R(3)], engine="scalar")
    s = schedule(prog([a, b, c]), M2)
    occ, _ = instruction_cost(a, M2)
    assert s.start_ps == [0, occ, 0]
    assert s.bind_kind == ["none", "engine", "none"] and s.bind[1] == 0


def test_raw_war_waw():
    w = vec(writes=[R(1)])  # 0: writes tile 1
    r = vec(reads=[R(1)], writes=[R(2)], engine="scalar")  # 1: RAW on 0
    war = vec(writes=[R(1, b0=32, b1=48)], engine="gpsimd")  # 2: WAR on 1, WAW on 0
    other = vec(reads=[R(1, p0=0, p1=P, b0=64, b1=128)], engine="sync")  # 3: disjoint bytes: no dep
    low = lower(prog([w, r, war, other]), M2)
    assert low.deps == [(), (0,), (0, 1), ()]
    s = schedule(prog([w, r, war, other]), M2)
    assert s.start_ps[1] == s.finish_ps[0] and s.bind_kind[1] == "dep"
    assert s.start_ps[2] == s.finish_ps[1] and s.bind[2] == 1
    assert s.start_ps[3] == 0


def test_covered_entries_are_dropped_and_partition_ranges_matter():
    a = vec(writes=[R(1, 0, 64)])
    b = vec(writes=[R(1, 64, 128)], engine="scalar")
    c = vec(writes=[R(1)], engine="gpsimd")  # covers both: WAW on both
    d = vec(reads=[R(1, 0, 32)], writes=[R(2)], engine="sync")  # only c remains
    assert lower(prog([a, b, c, d]), M2).deps == [(), (), (0, 1), (2,)]


def test_a_dependency_implied_by_a_later_one_on_the_same_engine_is_dropped():
    a = vec(writes=[R(1)])  # 0: VectorE
    b = vec(writes=[R(2)])  # 1: VectorE, after a: finishes strictly later
    c = vec(writes=[R(3)], engine="gpsimd")  # 2: another engine
    d = vec(reads=[R(1), R(2), R(3)], writes=[R(4)], engine="scalar")
    low = lower(prog([a, b, c, d]), M2)
    assert low.deps[3] == (1, 2)  # waiting for b implies waiting for a
    s = schedule(prog([a, b, c, d]), M2)
    assert s.start_ps[3] == max(s.finish_ps[:3]) == s.finish_ps[1]
    assert s.bind[3] == 1 and s.bind_kind[3] == "dep"


def test_many_disjoint_writers_each_reader_finds_exactly_its_own():
    # 70 slots of one tile written by alternating engines, then reads of one slot and of a span
    # (the writers are kept sorted by first byte: a read visits only those that can reach it).
    writes = [
        vec(writes=[R(1, b0=8 * k, b1=8 * k + 8)], engine=("vector", "gpsimd")[k % 2])
        for k in range(70)
    ]
    one = vec(reads=[R(1, b0=8 * 40, b1=8 * 41)], writes=[R(2)], engine="scalar")
    span = vec(reads=[R(1, b0=8 * 10 + 4, b1=8 * 13 - 4)], writes=[R(3)], engine="scalar")
    wide = vec(writes=[R(1, b0=0, b1=8 * 30)], engine="sync")  # supersedes slots 0..29 (WAW)
    after = vec(reads=[R(1, b0=8 * 29, b1=8 * 31)], writes=[R(4)], engine="scalar")
    low = lower(prog([*writes, one, span, wide, after]), M2)
    assert low.deps[70] == (40,)
    assert low.deps[71] == (11, 12)  # slot 10 on VectorE is implied by slot 12's later finish
    assert low.deps[72] == (28, 29, 71)  # WAW on the last writer per engine, WAR on span
    assert low.deps[73] == (30, 72)  # slot 29's writer is superseded by the wide write


def _strip(k: int, rows: int = 128, row_bytes: int = 1024, width: int = 8) -> Region:
    """Columns [k * width, (k + 1) * width) bytes of every row of a tall HBM tensor: one run per
    row, so its bounding box spans nearly the whole tensor."""
    starts = tuple(r * row_bytes + k * width for r in range(rows))
    ends = tuple(s + width for s in starts)
    return Region(HBM_OUT, 0, 1, starts[0], ends[-1], 1, (starts, ends))


def test_column_strips_of_a_tall_tensor_each_find_exactly_their_own_accesses():
    # 100 strips written one by one (the output store of a kernel tiled along the free axis):
    # every strip's box meets every other's, but no bytes do, so no write waits for another.
    writes = [vec(writes=[_strip(k)], engine=("vector", "gpsimd")[k % 2]) for k in range(100)]
    one = vec(reads=[_strip(41)], writes=[R(2)], engine="scalar")
    rows = vec(reads=[Region(HBM_OUT, 0, 1, 0, 1024 * 3)], writes=[R(3)], engine="scalar")
    again = vec(writes=[_strip(41)], engine="sync")  # WAW on strip 41's writer, WAR on `one`
    # every 4th partition of a tile, then strips of those partitions only
    stepped = [
        vec(writes=[Region(1, k, 128, 0, 64, 4)], engine=e)
        for k, e in enumerate(("vector", "gpsimd", "vector", "sync"))
    ]
    odd = vec(reads=[Region(1, 1, 128, 16, 32, 2)], writes=[R(4)], engine="scalar")
    low = lower(prog([*writes, one, rows, again, *stepped, odd]), M2)
    assert all(d == () for d in low.deps[:100])
    assert low.deps[100] == (41,)
    assert low.deps[101] == (98, 99)  # all 100 strips, implied by the last one on each engine
    assert low.deps[102] == (41, 101)  # the read of strip 41 (100) is implied by 101 (ScalarE)
    assert low.deps[107] == (104, 106)  # partitions 1, 3, 5, ...: the writers from 1 and 3


def _random_region(rng: random.Random) -> Region:
    """A region of tile 1 or 2 (partition steps, byte runs), a PSUM bank (tile 3) or rows x
    columns of a 16 x 256-byte HBM tensor (one run per row)."""
    t = rng.choice((1, 2, 3, HBM_OUT))
    if t == HBM_OUT:
        r0 = rng.randrange(16)
        r1 = rng.randrange(r0 + 1, 17)
        c0 = rng.randrange(0, 256, 2)
        c1 = min(256, c0 + rng.choice((2, 4, 16, 64, 256)))
        if r1 - r0 == 1 or c1 - c0 == 256:
            return Region(t, 0, 1, r0 * 256 + c0, (r1 - 1) * 256 + c1)
        starts = tuple(r * 256 + c0 for r in range(r0, r1))
        return Region(
            t,
            0,
            1,
            starts[0],
            starts[-1] + c1 - c0,
            1,
            (starts, tuple(s + c1 - c0 for s in starts)),
        )
    pstep = rng.choice((1, 1, 2, 4))
    n_p = rng.randrange(1, 128 // pstep + 1)
    p0 = rng.randrange(0, 128 - (n_p - 1) * pstep)
    if n_p == 1:
        pstep = 1
    b0 = rng.randrange(0, 256, 8)
    if rng.random() < 0.3 and b0 <= 256 - 32:  # every other 8 bytes
        starts = tuple(range(b0, rng.randrange(b0 + 32, 264, 16), 16))
        ends = tuple(x + 8 for x in starts)
        return Region(t, p0, p0 + (n_p - 1) * pstep + 1, starts[0], ends[-1], pstep, (starts, ends))
    b1 = rng.randrange(b0 + 8, 264, 8)
    return Region(t, p0, p0 + (n_p - 1) * pstep + 1, b0, b1, pstep)


def _random_program(rng: random.Random, n: int) -> list[Instr]:
    out: list[Instr] = []
    for _ in range(n):
        if rng.random() < 0.2:  # a matmul into a PSUM bank, sometimes accumulating
            bank = rng.choice((0, 64))
            dst = Region(3, 0, P, bank, bank + 64)
            out.append(mm(dst, R(1), R(2), accumulate=rng.random() < 0.6))
            continue
        reads = [_random_region(rng) for _ in range(rng.randrange(0, 3))]
        engine = rng.choice(("vector", "gpsimd", "scalar", "sync"))
        out.append(vec(reads=reads, writes=[_random_region(rng)], engine=engine))
    return out


def _every_dependency(instrs: list[Instr]) -> list[tuple[int, ...]]:
    """RAW, WAR and WAW against every earlier access, by exact overlap, with the accumulate
    exemption (an accumulating matmul ignores earlier matmuls: in-order issue orders them, and an
    earlier matmul's PSUM read is of bytes it also wrote): the definition the tracker's
    supersession, pieces and pruning must not change."""

    def meet(xs: tuple[Region, ...], ys: tuple[Region, ...]) -> bool:
        return any(x.tensor == y.tensor and overlaps(x, y) for x in xs for y in ys)

    deps: list[tuple[int, ...]] = []
    for i, ins in enumerate(instrs):
        exempt_from_matmuls = ins.op == "matmul" and ins.accumulate
        mine = []
        for j, other in enumerate(instrs[:i]):
            exempt = exempt_from_matmuls and other.op == "matmul"
            hazards = (
                meet(ins.reads, other.writes)  # RAW
                or meet(ins.writes, other.reads)  # WAR
                or meet(ins.writes, other.writes)  # WAW
            )
            if hazards and not exempt:
                mine.append(j)
        deps.append(tuple(mine))
    return deps


@pytest.mark.parametrize("seed", range(40))
def test_inferred_dependencies_time_a_program_as_every_dependency_would(seed):
    """Supersession, pieces and pruning only save work: random programs of dense, strided and
    many-run accesses get the same start and finish times with every pairwise dependency."""
    program = prog(_random_program(random.Random(seed), 80))
    low = lower(program, M2)
    reference = dataclasses.replace(low, deps=_every_dependency(low.instrs))
    ours, theirs = run_schedule(low, M2), run_schedule(reference, M2)
    assert ours.start_ps == theirs.start_ps and ours.finish_ps == theirs.finish_ps


def test_accumulate_is_pipelined_behind_same_engine_matmul():
    ps, st, mv = R(5, b1=2048), R(1), R(2)
    first = mm(ps, st, mv)
    acc = mm(ps, st, mv, accumulate=True)
    over = mm(ps, st, mv)  # a new group: waits for the previous writer (WAW)
    low = lower(prog([first, acc, over]), M2)
    assert low.deps[1] == ()
    assert low.deps[2] == (1,)
    s = schedule(prog([first, acc, over]), M2)
    assert s.start_ps[1] == s.occupancy_ps[0]  # issues back to back, not after t_fill


def test_accumulate_still_waits_for_other_writers():
    ps = R(5, b1=2048)
    memset = vec(writes=[ps])
    acc = mm(ps, R(1), R(2), accumulate=True)
    assert lower(prog([memset, acc]), M2).deps[1] == (0,)


def test_dependent_scalar_chain_issues_every_264_cycles():
    t = R(1, b1=4)
    chain = [I("activation", "scalar", [t], [t], elems=1) for _ in range(6)]
    s = schedule(prog(chain), M2)
    gaps = {b - a for a, b in zip(s.start_ps, s.start_ps[1:], strict=False)}
    assert gaps == {M2.cycles_to_ps("scalar", 264)}
    assert abs(M2.cycles_to_ps("scalar", 264) / 1000 - 220) < 0.5  # ~220 ns at 1.2 GHz (NPU.md 4)


# ----------------------------------------------------------------------------- DMA


def test_single_engine_32k_transfer_matches_published_example():
    # DMAOV: one engine moved 32 KiB in 1416 ns, 1,006 ns after the SyncE trigger, and the
    # consumer started ~300 ns after the last byte.
    s = schedule(prog([dma(partitions=4, chunks=1, chunk=8192)]), M2)
    rec = s.dma[0]
    assert rec.engines == (0,)
    data_ns = (rec.data_end_ps - rec.data_start_ps) / 1000
    assert data_ns == pytest.approx(1416, rel=0.03)
    assert (rec.data_start_ps - rec.issue_start_ps) / 1000 == pytest.approx(1006, rel=0.05)
    assert (rec.finish_ps - rec.data_end_ps) / 1000 == pytest.approx(300, rel=0.10)
    assert (rec.issue_end_ps - rec.issue_start_ps) / 1000 == pytest.approx(M2.dma_t_issue_hwdge_ns)


def test_fragmented_descriptors_are_much_slower():
    per = 192 * 256  # bytes per partition
    frag = schedule(prog([dma(chunks=256, chunk=192)]), M2)
    cont = schedule(prog([dma(chunks=1, chunk=per)]), M2)
    assert frag.dma[0].bytes == cont.dma[0].bytes
    assert frag.makespan_ps >= 3 * cont.makespan_ps


def test_queue_fixed_latency_overlaps_only_when_pipelined():
    # Eight back-to-back 64 KiB loads from one queue. A pipelined queue overlaps each transfer's
    # first-byte latency with the previous one's data; a serial queue pays it every time.
    serial = dataclasses.replace(M2, dma_queue_pipelined=False)

    def run(m, engines: tuple[str, ...]) -> int:
        loads = [
            dma(
                dst=1 + k,
                engine=engines[k % len(engines)],
                queue=k % len(engines),
                chunks=1,
                chunk=512,
                partitions=8,
                src_off=k * P * 512,
            )
            for k in range(8)
        ]
        return schedule(prog(loads), m).makespan_ps

    one_q = run(serial, ("sync",))
    assert one_q > 8 * M2.dma_first_byte_ns * 1000  # every transfer waits a full latency
    assert run(M2, ("sync",)) < 0.75 * one_q
    assert run(serial, ("sync", "scalar")) < 0.75 * one_q  # two queues overlap their latencies


def test_transfer_ready_earlier_is_not_blocked_by_earlier_program_order():
    slow = vec(writes=[R(9, b1=4)], elems=200_000)  # ~200 us of VectorE
    waiting = dma(dst=1, engine="sync", queue=0, deps_on=(R(9, b1=4),))  # waits for it
    free = dma(dst=2, engine="scalar", queue=1, src_off=P * 4096)  # later in program order, no deps
    s = schedule(prog([slow, waiting, free]), M2)
    a, b = s.dma[1], s.dma[2]
    assert a.data_start_ps > s.finish_ps[0]
    assert b.finish_ps < a.data_start_ps  # used the engines before the waiting transfer
    assert b.data_start_ps == b.issue_start_ps + int(M2.dma_first_byte_ns * 1000)


def test_hbm_cap_limits_the_two_core_speedup():
    per = 64 * 1024  # 64 KiB per partition: engines near peak, fixed latency negligible

    def loads(core_slice: range) -> list[Instr]:
        return [dma(dst=1 + k % 4, queue=k % 4, chunk=per, src_off=k * P * per) for k in core_slice]

    one = schedule(prog(loads(range(8))), M2).makespan_ps
    two = schedule(prog(loads(range(4)), loads(range(4, 8))), M2).makespan_ps
    assert 1.3 < one / two < 1.95
    # Trn3's pair cap is about twice one core's DMA rate, so the split gains more there.
    one3 = schedule(prog(loads(range(8))), M3).makespan_ps
    two3 = schedule(prog(loads(range(4)), loads(range(4, 8))), M3).makespan_ps
    assert one3 / two3 > one / two


def test_swdge_holds_gpsimd_per_descriptor():
    s = schedule(prog([dma(engine="gpsimd", chunks=4, chunk=1024)]), M2)
    descs = P * 4
    expect = (M2.dma_t_swdge_ns + descs * M2.dma_t_swdge_per_desc_ns) * 1000
    assert s.occupancy_ps[0] == pytest.approx(expect, abs=1)


def test_scalar_hwdge_is_dispatched_in_scalar_order_and_generated_on_its_dge():
    """ARCH2 (Descriptor Generation Engine): a ScalarE-triggered DGE DMA "could be hidden behind
    earlier compute instructions ... in program order": its ~600 ns of descriptor generation
    overlaps earlier ScalarE work, but it is dispatched in ScalarE's in-order stream, so it waits
    for its inputs there and later ScalarE instructions wait behind it."""
    issue = int(M2.dma_t_issue_hwdge_ns * 1000)
    act = I("activation", "scalar", writes=[R(9)], elems=4096)  # 0: ~3.5 us of ScalarE compute
    load_a = dma(dst=1, engine="scalar", queue=1)  # 1: hides behind 0 (same dispatch time)
    act2 = I("activation", "scalar", writes=[R(8)], elems=16)  # 2: not delayed by the DGE work
    load_b = dma(dst=2, engine="scalar", queue=2, src_off=P * 4096)  # 3: dispatched after 2 starts
    dep = dma(dst=3, engine="scalar", queue=3, src_off=2 * P * 4096, deps_on=(R(8),))  # 4: RAW on 2
    act3 = I("activation", "scalar", writes=[R(7)], elems=16)  # 5: waits for 4's dispatch
    s = schedule(prog([act, load_a, act2, load_b, dep, act3]), M2)
    occ = instruction_cost(act, M2)[0]
    assert s.unit == ["scalar", "scalar-dge", "scalar", "scalar-dge", "scalar-dge", "scalar"]
    assert s.engine == ["scalar"] * 6 and s.dma[1].trigger == "scalar"
    assert s.start_ps[1] == 0 and s.bind_kind[1] == "none"
    assert s.start_ps[2] == occ and s.bind[2] == 0  # behind the activation only
    assert s.start_ps[3] == occ and (s.bind[3], s.bind_kind[3]) == (2, "engine")
    assert s.start_ps[4] == s.start_ps[3] + issue  # in order behind 3 on the DGE
    # 4 waited in ScalarE's stream for 2's result, so 5 cannot start before that result either,
    # though ScalarE itself was free earlier.
    assert s.start_ps[5] == s.finish_ps[2] > s.start_ps[2] + instruction_cost(act2, M2)[0]
    assert s.occupancy_ps[1] == s.occupancy_ps[3] == issue


def test_sync_hwdge_and_gpsimd_swdge_still_hold_their_engine():
    for engine in ("sync", "gpsimd"):
        work = vec(writes=[R(9)], elems=4096, engine=engine)
        load = dma(dst=1, engine=engine, queue=1)
        after = vec(writes=[R(8)], elems=16, engine=engine)
        s = schedule(prog([work, load, after]), M2)
        assert s.unit == [engine] * 3
        assert s.start_ps[1] == s.occupancy_ps[0] and s.bind_kind[1] == "engine"
        assert s.start_ps[2] == s.start_ps[1] + s.occupancy_ps[1]


def test_barrier_fences_the_scalar_dge():
    stream = [
        vec(writes=[R(9)], elems=4096, engine="scalar"),
        I("barrier", "sync"),
        dma(dst=1, engine="scalar", queue=1),
    ]
    s = schedule(prog(stream), M2)
    assert s.unit[2] == "scalar-dge"
    assert s.start_ps[1] == s.finish_ps[0]  # the barrier waits for ScalarE's compute
    assert s.start_ps[2] == s.finish_ps[1] and s.bind[2] == 1  # the DGE's next DMA waits for it


def test_scalar_dge_in_profile_trace_and_critical_path():
    issue = int(M2.dma_t_issue_hwdge_ns * 1000)
    loads = [
        dma(dst=1 + k, engine="scalar", queue=k, chunk=512, src_off=k * P * 512, line=20 + k)
        for k in range(4)
    ]
    p = prog(
        [
            vec(writes=[R(9)], elems=8192, engine="scalar", line=10),
            *loads,
            vec(reads=[R(1 + k, b1=512) for k in range(4)], writes=[R(8)], line=30),
        ]
    )
    s = schedule(p, M2)
    assert [s.start_ps[1 + k] for k in range(4)] == [k * issue for k in range(4)]
    prof = make_profile(p, s, M2)
    assert prof.engines["core0.scalar-dge"]["busy_ns"] == pytest.approx(4 * issue / 1000)
    assert prof.engines["core0.scalar"]["busy_ns"] == pytest.approx(s.occupancy_ps[0] / 1000)
    assert sum(v for _, v in prof.critical_by_engine) == pytest.approx(prof.total_ns, rel=1e-9)
    assert sum(t1 - t0 for _, t0, t1, _ in s.critical_segments()) == s.makespan_ps
    assert "scalar-dge" in prof.summary_text()
    trace = chrome_trace(p, s)["traceEvents"]
    tids = {
        e["args"]["name"]: e["tid"] for e in trace if e["ph"] == "M" and e["name"] == "thread_name"
    }
    dge = [e for e in trace if e["ph"] == "X" and e["tid"] == tids["scalar-dge"]]
    assert len(dge) == 4 and all(
        e["name"] == "dma_copy" and e["args"]["trigger"] == "scalar" for e in dge
    )
    assert [e["dur"] for e in dge] == [issue / 1e6] * 4


def test_calendar_fills_gaps_and_merges():
    cal = Calendar()
    assert cal.fill(100, 50, owner=1) == (100, 100, 150, -1)
    assert cal.fill(0, 30, owner=2) == (0, 0, 30, -1)
    # Starts inside [0, 30): fills the gap [30, 100), then [150, 180) after job 1.
    first, last, end, blame = cal.fill(20, 100, owner=3)
    assert (first, last, end, blame) == (30, 150, 180, 1)
    assert cal.starts == [0] and cal.ends == [180]


# ----------------------------------------------------------------------------- cross-core


def test_sendrecv_and_barrier_are_joint_events():
    def stream(delay: int) -> list[Instr]:
        return [
            vec(writes=[R(1, b1=512)], elems=delay, engine="gpsimd"),
            I("sendrecv", "gpsimd", [R(1, b1=512)], [R(2, b1=512)], xfer_bytes=P * 512),
            vec(reads=[R(2, b1=512)], writes=[R(3)]),
            I("barrier", "sync"),
            vec(writes=[R(4)], engine="scalar"),
        ]

    s = schedule(prog(stream(10), stream(5000)), M2)
    sr0, sr1 = 2, 3  # merged order: core0[1], core1[1]
    assert s.finish_ps[sr0] == s.finish_ps[sr1]
    issue_end = max(s.start_ps[sr0], s.start_ps[sr1]) + int(M2.dma_t_issue_hwdge_ns * 1000)
    xfer = P * 512 / (M2.dma_bw_engine_bytes_per_ns * 16) * 1000
    t_fix = (M2.dma_first_byte_ns + M2.dma_completion_ns) * 1000  # DMABW's ~1.3 us cross-engine
    assert s.finish_ps[sr0] == pytest.approx(issue_end + t_fix + xfer, abs=1)
    b0, b1 = 6, 7
    assert s.finish_ps[b0] == s.finish_ps[b1] == max(s.start_ps[b0], s.start_ps[b1]) + int(t_fix)
    # The barrier fences the core: the ScalarE op after it waits, though it has no data deps.
    assert s.start_ps[8] >= s.finish_ps[b0] and s.start_ps[9] >= s.finish_ps[b1]


# ----------------------------------------------------------------------------- determinism, trace, profile


def _mixed() -> Program:
    streams = []
    for c in range(2):
        s = []
        for k in range(6):
            s.append(
                dma(
                    dst=1 + k % 2,
                    engine=("sync", "scalar", "gpsimd")[k % 3],
                    queue=k % 3,
                    chunks=16,
                    chunk=192,
                    src_off=(2 * k + c) * P * 3072,
                    line=42,
                )
            )
            s.append(mm(R(5, b1=2048), R(1 + k % 2, b1=3072), R(3)))
            s.append(
                I(
                    "activation",
                    "scalar",
                    [R(5, b1=2048)],
                    [R(6, b1=2048)],
                    elems=512,
                    psum_access=True,
                    line=50,
                )
            )
        s.append(
            I(
                "dma_copy",
                "sync",
                [R(6, b1=2048)],
                [Region(HBM_OUT, 0, 1, c * P * 2048, (c + 1) * P * 2048)],
                dma=DmaShape("hwdge", 0, 0, P, 1, 2048, P * 2048, P * 2048),
                line=60,
            )
        )
        streams.append(s)
    return prog(*streams)


def test_schedule_is_deterministic():
    a, b = schedule(_mixed(), M2), schedule(_mixed(), M2)
    assert a.start_ps == b.start_ps and a.finish_ps == b.finish_ps and a.bind == b.bind
    assert a.dma == b.dma and a.makespan_ps == b.makespan_ps


def test_chrome_trace_structure():
    p = _mixed()
    s = schedule(p, M2)
    trace = json.loads(json.dumps(chrome_trace(p, s)))
    assert trace["displayTimeUnit"] == "ns"
    events = trace["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    spans = [e for e in events if e["ph"] == "X"]
    names = {e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert names == {"core 0", "core 1"}
    threads = [(e["pid"], e["tid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"]
    assert len({(p_, t) for p_, t, _ in threads}) == len(threads)  # one name per track
    labels = {n for _, _, n in threads}
    assert {
        "tensor",
        "vector",
        "scalar",
        "gpsimd",
        "sync",
        "scalar-dge",
        "dma queue 0",
        "dma queue 1",
        "dma queue 2",
    } <= labels
    for e in spans:
        assert {"name", "ph", "ts", "dur", "pid", "tid", "args"} <= e.keys()
        assert e["ts"] >= 0 and e["dur"] >= 0
    assert sum(1 for e in spans if e["cat"] != "dma") == len(s)
    assert any(e["cat"] == "dma" and e["args"].get("bytes") for e in spans)


def test_profile_fields():
    p = _mixed()
    s = schedule(p, M2)
    prof = make_profile(p, s, M2)
    d = prof.dma
    assert 0.0 <= d["active_share"] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in d["active_share_per_core"].values())
    assert sum(b["count"] for b in d["histogram"]) == d["descriptors"]
    assert sum(b["bytes"] for b in d["histogram"]) == d["bytes"]
    assert d["histogram"][0]["count"] == 2 * 6 * P * 16  # the 192-byte descriptors
    assert prof.total_ns == pytest.approx(s.makespan_ps / 1000)
    assert sum(v for _, v in prof.critical_by_engine) == pytest.approx(prof.total_ns, rel=1e-9)
    assert sum(v for _, v in prof.critical_by_line) == pytest.approx(prof.total_ns, rel=1e-9)
    assert all(0.0 <= v["utilisation"] <= 1.0 for v in prof.engines.values())
    assert prof.op_counts["dma_copy"] == 14 and prof.engine_counts["tensor"] == 12
    assert prof.bottleneck.startswith("DMA")
    assert "192-byte" in prof.bottleneck and "kernel.py:42" in prof.bottleneck
    json.dumps(prof.to_dict())
    text = prof.summary_text()
    assert "latency" in text and "verdict" in text and len(text.splitlines()) >= 5


def test_compute_bound_verdict_and_critical_lines():
    t = R(1, b1=4)
    chain = [I("activation", "scalar", [t], [t], elems=4096, line=7) for _ in range(10)]
    p = prog(chain)
    s = schedule(p, M2)
    prof = make_profile(p, s, M2)
    assert prof.critical_by_engine[0][0] == "scalar"
    assert prof.critical_by_line[0][0] == "kernel.py:7"
    assert prof.bottleneck.startswith("ScalarE-bound")
    assert prof.dma["transfers"] == 0 and prof.dma["active_share"] == 0.0


def test_critical_path_tiles_the_makespan_with_dma_contention():
    loads = [dma(dst=1 + k, queue=k, chunk=8192, src_off=k * P * 8192) for k in range(4)]
    loads.append(vec(reads=[R(1 + k, b1=8192) for k in range(4)], writes=[R(9)]))
    s = schedule(prog(loads), M2)
    segs = s.critical_segments()
    total = sum(t1 - t0 for _, t0, t1, _ in segs)
    assert total == s.makespan_ps
    assert all(t1 > t0 for _, t0, t1, _ in segs)
    assert any(s.finish_bind[i].kind in ("dma_engine", "queue") for i in s.finish_bind)


def test_cost_memo_is_shared_by_equal_machines_and_bounded():
    """Issue 10 item 5: a memo keyed by the machine object kept one table per run alive."""
    from knight.npu import costs

    one = I("activation", "scalar", elems=7)
    first = instruction_cost(one, load_machine("trn2"))
    for _ in range(20):  # every run loads its own (equal) machine object
        assert instruction_cost(one, load_machine("trn2")) == first
    assert costs._CACHES[M2.hash] is costs._CACHES[load_machine("trn2").hash]
    for k in range(10):  # distinct presets evict the oldest tables
        instruction_cost(one, dataclasses.replace(M2, t_fixed_cycles=100 + k))
    assert costs.cached_machines() <= costs.MAX_MACHINES
