"""Micro-programs showing each published cost of issue 9 ("What to build" 2-6) in the direction and
size the Neuron documentation gives. Each test's docstring names its source (keys as in NPU.md 0:
DMAOV = nki-dma-overview.rst, DMABW = nki-dma-bandwidth-guide.rst, DGE = nki-dge.rst,
ARCH2 = trainium2_arch.rst, PROF = Neuron Explorer overview-summary-page.rst).

The programs are built directly from `Instr` records (as the tracer would emit them), so they
measure the timing model alone; tests of the same mechanisms through the kernel language are in
test_timing_mechanisms.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from knight.npu import nisa, nl
from knight.npu.access import region_for
from knight.npu.errors import Race, SourceLoc
from knight.npu.machine import load_machine
from knight.npu.program import DmaShape, Instr, Program, Region
from knight.npu.runtime import simulate
from knight.npu.timing import descriptor_ns, dma_efficiency, schedule

M2 = load_machine("trn2")
P = 128
W, OUT = 50, 51  # HBM tensors (shared by both cores)

# DMAOV figure "DMA throughput across different number of bytes per partition", read off the plot
# relative to 32 KiB per partition (issue 9).
PUBLISHED_CURVE = {64: 0.026, 256: 0.10, 512: 0.21, 1024: 0.42, 2048: 0.81, 4096: 0.97}


def _i(op: str, engine: str, reads=(), writes=(), line: int = 1, **kw) -> Instr:
    return Instr(
        op, engine, 0, 0, SourceLoc("k.py", line), reads=tuple(reads), writes=tuple(writes), **kw
    )


def _prog(*streams: list[Instr]) -> Program:
    for c, stream in enumerate(streams):
        for k, ins in enumerate(stream):
            ins.index, ins.core = k, c
    n = len(streams)
    return Program([list(s) for s in streams], {W: "w", OUT: "out"}, [0] * n, [0] * n)


def _load(
    dst: int,
    chunk: int,
    engine: str = "sync",
    mode: str = "hwdge",
    parts: int = P,
    runs: int = 1,
    off: int = 0,
) -> Instr:
    """HBM -> SBUF: `parts` partitions x `runs` contiguous runs of `chunk` bytes."""
    total = parts * runs * chunk
    shape = DmaShape(
        mode, {"sync": 0, "scalar": 1, "gpsimd": 2}[engine], 0, parts, runs, chunk, total, total
    )
    return _i(
        "dma_copy",
        engine,
        (Region(W, 0, 1, off, off + total),),
        (Region(dst, 0, parts, 0, runs * chunk),),
        dma=shape,
    )


def _vec(
    reads=(), writes=(), elems: int = 512, engine: str = "vector", op: str = "tensor_scalar"
) -> Instr:
    return _i(op, engine, reads, writes, elems=elems)


# ----------------------------------------------------------------------------- 3. the DMA curve


@pytest.mark.parametrize("size", sorted(PUBLISHED_CURVE))
def test_dma_throughput_follows_the_published_curve(size):
    """DMAOV throughput-vs-size figure (128 partitions): a stream of transfers of `size` bytes per
    partition reaches the published share of the 32 KiB throughput, within 25 %."""

    def throughput(chunk: int) -> float:
        n = max(4, (1 << 20) // (P * chunk))  # >= 1 MiB so the fixed latency is amortised
        loads = [_load(1 + k % 4, chunk, off=k * P * chunk) for k in range(n)]
        s = schedule(_prog(loads), M2)
        first = min(r.first_data_ps for r in s.dma.values())
        last = max(r.data_end_ps for r in s.dma.values())
        return n * P * chunk / (last - first)

    rel = throughput(size) / throughput(32768)
    assert rel == pytest.approx(PUBLISHED_CURVE[size], rel=0.25)


def test_dma_efficiency_from_64_bytes_to_64_kib():
    """DMABW: "< 256 B severely overhead-bound; 256 B - 2 KiB improving; >= 4 KiB saturates"; the
    per-descriptor cost stays within 25 % of the DMAOV curve at every published point and at full
    rate from 4 KiB to 64 KiB."""
    ref = dma_efficiency(32768, M2)
    for size, pub in PUBLISHED_CURVE.items():
        assert dma_efficiency(size, M2) / ref == pytest.approx(pub, rel=0.25), size
    for size in (8192, 16384, 65536):
        assert dma_efficiency(size, M2) / ref == pytest.approx(1.0, rel=0.25)
    assert (
        dma_efficiency(192, M2) < 0.10
    )  # the baseline's 192-byte runs: deep in the overhead regime


def test_isolated_transfer_latencies_match_the_published_profile():
    """DMAOV profile (one engine, 32 KiB): the first byte moves 1,006 ns after the SyncE trigger,
    the data takes 1,416 ns, and the consumer starts ~316 ns after the last byte. DMABW: the total
    fixed cost is ~1,300 ns per transfer."""
    load = _load(1, 8192, parts=4)
    use = _vec(reads=(Region(1, 0, 4, 0, 8192),), writes=(Region(2, 0, 4, 0, 64),))
    s = schedule(_prog([load, use]), M2)
    rec = s.dma[0]
    assert (rec.data_start_ps - rec.issue_start_ps) / 1000 == pytest.approx(1006, rel=0.05)
    assert (rec.data_end_ps - rec.data_start_ps) / 1000 == pytest.approx(1416, rel=0.05)
    assert (s.start_ps[1] - rec.data_end_ps) / 1000 == pytest.approx(316, rel=0.10)
    fixed = (rec.data_start_ps - rec.issue_start_ps) + (s.start_ps[1] - rec.data_end_ps)
    assert fixed / 1000 == pytest.approx(1300, rel=0.05)


def test_descriptors_are_one_per_contiguous_run_per_partition():
    """DMAOV: a transfer is cut into one element per contiguous run; 16 engines, each serving 8
    partitions; the 128 x 2 KiB example keeps every engine busy with 8 runs."""
    s = schedule(_prog([_load(1, 2048)]), M2)
    rec = s.dma[0]
    assert rec.descriptors == P and len(rec.engines) == 16
    assert (rec.data_end_ps - rec.first_data_ps) / 1000 == pytest.approx(
        8 * descriptor_ns(2048, M2), rel=0.01
    )
    few = schedule(_prog([_load(1, 2048, parts=8)]), M2).dma[0]
    assert len(few.engines) == 1  # 8 partitions: one engine, so the same bytes take 16x longer


# ----------------------------------------------------------------------------- 2. queues and DGE


def test_dge_modes_cost_their_trigger_engine_as_documented():
    """DGE: HWDGE "takes approximately 600 ns" per instruction on the triggering SyncE/ScalarE;
    SWDGE "consumes GpSimd Engine cycles"; `none` has "zero on-device overhead"."""
    for engine, mode, unit in (
        ("sync", "hwdge", "sync"),
        ("gpsimd", "swdge", "gpsimd"),
        ("sync", "none", "sync"),
    ):
        s = schedule(_prog([_load(1, 4096, engine=engine, mode=mode)]), M2)
        occ = s.occupancy_ps[0] / 1000
        assert s.unit[0] == unit
        if mode == "hwdge":
            assert occ == pytest.approx(600)
        elif mode == "swdge":
            assert occ >= M2.dma_t_swdge_ns
        else:
            assert occ == 0


def test_scalar_triggered_dma_waits_for_its_inputs_inside_scalar_order():
    """ARCH2 (DGE): the DGE work of a ScalarE-triggered DMA hides only behind *earlier* ScalarE
    compute; the instruction itself is in ScalarE's in-order stream. A DMA waiting for a slow
    VectorE result therefore holds back the ScalarE work after it (issue 9: the old model let it
    wait outside the stream, a 1.37x undercharge)."""
    slow = _vec(writes=(Region(9, 0, P, 0, 4),), elems=20_000)  # ~21 us of VectorE
    dma = _i(
        "dma_copy",
        "scalar",
        (Region(9, 0, P, 0, 4),),
        (Region(OUT, 0, 1, 0, 512),),
        dma=DmaShape("hwdge", 1, 0, P, 1, 4, 512, 512),
    )
    after = [
        _vec(writes=(Region(10 + k, 0, P, 0, 64),), elems=4000, engine="scalar") for k in range(5)
    ]
    s = schedule(_prog([slow, dma, *after]), M2)
    assert s.start_ps[2] >= s.finish_ps[0]  # ScalarE's next instruction waited for the DMA's input
    independent = schedule(_prog([slow, *after]), M2)
    assert s.makespan_ps > 1.3 * independent.makespan_ps


def test_fixed_latency_pipelining_is_a_switch_calibrated_both_ways():
    """DMAOV: "DMA transfers within a queue on the same DMA engine are executed in order";
    DMABW: small transfers are packet-rate (PPS) bound. Whether one queue overlaps consecutive
    transfers' fixed latency is not published: `dma_queue_pipelined` decides, and a serial queue
    pays the ~1 us first-byte latency once per transfer."""
    loads = [_load(1 + k % 2, 512, parts=8, off=k * 4096) for k in range(10)]
    pipelined = schedule(_prog(loads), M2).makespan_ps
    serial = schedule(_prog(loads), dataclasses.replace(M2, dma_queue_pipelined=False)).makespan_ps
    assert serial - pipelined > 8 * 0.9 * M2.dma_first_byte_ns * 1000 - 10 * 600_000


# ----------------------------------------------------------------------------- 4. cross-core race


def _race_program(barrier: bool) -> Program:
    def stream(core: int) -> list[Instr]:
        write = _i(
            "dma_copy",
            "sync",
            (Region(1, 0, P, 0, 64),),
            (Region(OUT, 0, 1, core * 8192, (core + 1) * 8192),),
            dma=DmaShape("hwdge", 0, 0, P, 1, 64, 8192, 8192),
            line=10,
        )
        other = 1 - core
        read = _i(
            "dma_copy",
            "sync",
            (Region(OUT, 0, 1, other * 8192, (other + 1) * 8192),),
            (Region(2, 0, P, 0, 64),),
            dma=DmaShape("hwdge", 0, 0, P, 1, 64, 8192, 8192),
            line=12,
        )
        return [write, *([_i("barrier", "sync", line=11)] if barrier else []), read]

    p = _prog(stream(0), stream(1))
    for c, s in enumerate(p.cores):  # on-chip tiles are per core
        for ins in s:
            ins.reads = tuple(
                r if r.tensor >= W else dataclasses.replace(r, tensor=r.tensor + 100 * c)
                for r in ins.reads
            )
            ins.writes = tuple(
                r if r.tensor >= W else dataclasses.replace(r, tensor=r.tensor + 100 * c)
                for r in ins.writes
            )
    return p


def test_cross_core_hbm_read_after_write_without_barrier_is_a_race():
    """LNC / ARCH2: the two physical cores of a logical core run unsynchronised except through
    `core_barrier` (or sendrecv); reading HBM bytes the other core wrote without one is a race."""
    with pytest.raises(Race) as err:
        schedule(_race_program(barrier=False), M2)
    assert err.value.category == "race" and err.value.loc.line == 12 and "'out'" in str(err.value)
    s = schedule(_race_program(barrier=True), M2)  # with the barrier it is ordered
    assert s.makespan_ps > 0


# ----------------------------------------------------------------------------- 5. exact access patterns


def test_interleaved_halves_of_one_tile_do_not_serialise():
    """ARCH1: operands are access patterns (partition range x strided free dims), so writes to the
    even and the odd columns of one tile touch disjoint bytes and may run concurrently."""
    tile = np.zeros((P, 1024), dtype=np.float32)
    even = region_for(3, tile[:, 0::2], tile, True, 0)
    odd = region_for(3, tile[:, 1::2], tile, True, 0)
    a = _vec(writes=(even,), elems=512, engine="vector")
    b = _vec(writes=(odd,), elems=512, engine="gpsimd")
    whole = region_for(3, tile, tile, True, 0)
    exact = schedule(_prog([a, b]), M2)
    assert exact.start_ps[1] == 0  # no WAW on disjoint interleaved halves
    box = schedule(
        _prog([_vec(writes=(whole,), engine="vector"), _vec(writes=(whole,), engine="gpsimd")]), M2
    )
    assert box.start_ps[1] > 0 and box.makespan_ps > 1.6 * exact.makespan_ps
    # ...and a read of the whole tile still waits for both halves.
    c = _vec(reads=(whole,), writes=(Region(4, 0, P, 0, 64),), engine="scalar")
    s = schedule(_prog([a, b, c]), M2)
    assert s.start_ps[2] >= max(s.finish_ps[0], s.finish_ps[1])


# ----------------------------------------------------------------------------- 6. throttling


def _matmul(k: int) -> Instr:
    return _i(
        "matmul",
        "tensor",
        (Region(1, 0, P, 0, 256), Region(2, 0, P, 0, 1024)),
        (Region(5, 0, P, 0, 2048),),
        moving=512,
        stationary=P,
        contract=P,
        accumulate=k > 0,
    )


def test_tensor_engine_starts_at_half_rate_and_ramps_over_3_us():
    """PROF ("Understanding throttling"): on Trn2 the Tensor Engine "starts at roughly 50%
    utilization ... and ramps to full over about the first ~3 microseconds"; an idle gap (utilization
    below 50 % over ~3 us) re-engages the limit."""
    burst = [_matmul(k) for k in range(40)]  # 40 x 213 ns of full-rate work
    s = schedule(_prog(burst), M2)
    full = 512 / M2.tensor_ghz * 1000  # ps
    assert 1.8 * full < s.occupancy_ps[0] <= 2 * full  # about half rate at the start (ramping)
    assert s.occupancy_ps[-1] == pytest.approx(full, rel=0.01)  # full rate after the ramp
    ramp_loss = s.start_ps[-1] + s.occupancy_ps[-1] - 40 * full
    # A linear ramp from 50 % to 100 % over 3 us averages 75 %: a quarter of 3 us is lost.
    assert ramp_loss / 1e6 == pytest.approx(0.75, rel=0.1)
    off = schedule(
        _prog([_matmul(k) for k in range(40)]), dataclasses.replace(M2, tensor_throttle=False)
    )
    assert off.occupancy_ps[0] == pytest.approx(full, rel=0.01)


# ----------------------------------------------------------------------------- through the language


def _exchange_kernel(barrier: bool):
    """Each core writes its half of `out` to HBM, then reads the other core's half back."""

    def kernel(x, out, back):
        c = nl.program_id(0)
        mine = nl.ndarray((P, 64), dtype=nl.float32, name="mine")
        nisa.dma_copy(dst=mine, src=x[c], engine=nisa.engine.sync)
        nisa.dma_copy(dst=out[c], src=mine, engine=nisa.engine.sync)
        if barrier:
            nisa.core_barrier(out, (0, 1))
        theirs = nl.ndarray((P, 64), dtype=nl.float32, name="theirs")
        nisa.dma_copy(dst=theirs, src=out[1 - c], engine=nisa.engine.sync)  # the reading line
        nisa.dma_copy(dst=back[c], src=theirs, engine=nisa.engine.sync)

    return kernel


def test_reading_the_other_cores_hbm_write_without_core_barrier_is_a_race_at_that_line():
    """NKI `core_barrier`: "wait until both physical cores reach this point, so that what each
    wrote to the shared HBM tensor is visible to the other". Without it the read is a race."""
    import inspect

    x = np.arange(2 * P * 64, dtype=np.float32).reshape(2, P, 64)
    outs = {"out": ((2, P, 64), np.float32), "back": ((2, P, 64), np.float32)}
    kernel = _exchange_kernel(barrier=False)
    with pytest.raises(Race) as err:
        simulate(kernel, {"x": x}, outs, machine="trn2", grid=2)
    src, first = inspect.getsourcelines(_exchange_kernel)
    reading = first + next(i for i, line in enumerate(src) if "the reading line" in line)
    assert err.value.loc.line == reading and err.value.category == "race"
    ok = simulate(_exchange_kernel(barrier=True), {"x": x}, outs, machine="trn2", grid=2)
    assert ok.latency_ns > 0


def test_interleaved_halves_written_by_two_engines_overlap_in_a_kernel():
    """ARCH1 access patterns: VectorE writing the even columns and GpSimd the odd columns of one
    tile touch disjoint bytes, so they run at the same time (issue 9: 26 -> 42 us when serialised)."""

    def kernel(x, out):
        t = nl.ndarray((P, 4096), dtype=nl.float32, name="t")
        nisa.memset(t[:, 0::2], 1.0, engine=nisa.engine.vector)
        nisa.memset(t[:, 1::2], 2.0, engine=nisa.engine.gpsimd)
        nisa.dma_copy(dst=out, src=t, engine=nisa.engine.sync)

    res = simulate(
        kernel,
        {"x": np.zeros((1, 1), np.float32)},
        {"out": ((P, 4096), np.float32)},
        machine="trn2",
        grid=1,
    )
    s = res.schedule
    even, odd = (i for i, ins in enumerate(s.instrs) if ins.op == "memset")
    assert s.start_ps[odd] < s.finish_ps[even]  # concurrent, not after the even half
    assert np.all(res.outputs["out"][:, 0::2] == 1.0) and np.all(res.outputs["out"][:, 1::2] == 2.0)


def test_tensor_engine_throttle_reengages_after_an_idle_gap():
    """PROF: "If utilization drops below 50% over any ~3 microsecond window — for example during an
    idle gap — the limit re-engages, so the next burst again runs at roughly 50%"."""
    full = 512 / M2.tensor_ghz * 1000
    gap = _vec(
        reads=(Region(5, 0, P, 0, 2048),), writes=(Region(6, 0, P, 0, 64),), elems=4000
    )  # ~4 us
    later = _i(
        "matmul",
        "tensor",
        (Region(1, 0, P, 0, 256), Region(6, 0, P, 0, 64)),
        (Region(7, 0, P, 0, 2048),),
        moving=512,
        stationary=P,
        contract=P,
    )
    s = schedule(_prog([*(_matmul(k) for k in range(40)), gap, later]), M2)
    assert (
        s.start_ps[-1] - (s.start_ps[39] + s.occupancy_ps[39]) > 1_500_000
    )  # idle > half a window
    assert s.occupancy_ps[-1] > 1.8 * full  # throttled again
