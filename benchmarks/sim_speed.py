"""Speed of the simulator: dependency inference, the scheduling pass, and numerics throughput.

Builds a synthetic two-core Program of >= 100,000 instructions (weight DMAs on several queues
into double buffers, GEMV/GEMM matmuls accumulating into PSUM banks, ScalarE read-outs, VectorE
and GpSimd work, output stores, an occasional sendrecv and barrier), with a fixed seed, and times
`lower` (best of 3) and `run_schedule` (best of 7: a pass is ~0.1 s, so more runs cost little and
shed more of a shared machine's noise) separately. NPU.md 9 sets the bar: a single-pass list
scheduler at ~10^6 instructions/s. Human lines go to stderr; the last stdout line is JSON.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable

import numpy as np

from knight.npu.errors import SourceLoc
from knight.npu.machine import MachineSpec, load_machine
from knight.npu.program import PERF_COPY_STRIDED, PERF_TT, DmaShape, Instr, Program, Region
from knight.npu.timing import lower, run_schedule

SEED = 20260522
N_TARGET = 110_000
P = 128
W_SLICE = P * 8192  # bytes of one weight slice in HBM
SCHED_REPEAT = 7  # timed runs of the scheduling pass (the best counts)


class _Builder:
    """Emits the same instruction sequence on both cores, with per-core on-chip tensors."""

    def __init__(self, n_cores: int, rng: random.Random, dma: bool) -> None:
        self.rng, self.dma = rng, dma
        self.cores: list[list[Instr]] = [[] for _ in range(n_cores)]
        self.names: dict[int, str] = {}
        self.next_id = 0
        self.w = self.tensor("w_experts")  # HBM, shared
        self.out = self.tensor("out")  # HBM, shared
        self.x_hbm = self.tensor("x")
        self.sb = [self.core_tensors(c) for c in range(n_cores)]

    def tensor(self, name: str) -> int:
        self.next_id += 1
        self.names[self.next_id] = name
        return self.next_id

    def core_tensors(self, c: int) -> dict[str, object]:
        return {
            "wbuf": [self.tensor(f"wbuf{b}.c{c}") for b in range(2)],
            "x": self.tensor(f"x.c{c}"),
            "h": self.tensor(f"h.c{c}"),
            "o": self.tensor(f"o.c{c}"),
            "psum": [self.tensor(f"psum{k}.c{c}") for k in range(8)],
            "link": self.tensor(f"link.c{c}"),
        }

    def emit(self, make: Callable[[int, dict], Instr]) -> None:
        for c, stream in enumerate(self.cores):
            ins = make(c, self.sb[c])
            ins.index = len(stream)
            stream.append(ins)

    def block(self, b: int) -> None:
        """One expert-like block: load weights, 16 matmuls, read-outs, vector work, a store."""
        rng = self.rng
        buf = b % 2
        line = 40 + (b % 7)
        if self.dma:
            chunk = rng.choice((256, 2048, 4096, 8192))
            trig, mode = (("sync", "hwdge"), ("scalar", "hwdge"), ("gpsimd", "swdge"))[b % 3]
            slot = rng.randrange(64)

            def load(c: int, t: dict) -> Instr:
                shape = DmaShape(mode, b % 4, 0, P, 8192 // chunk, chunk, W_SLICE, W_SLICE)
                src = Region(self.w, 0, 1, (2 * slot + c) * W_SLICE, (2 * slot + c + 1) * W_SLICE)
                return Instr(
                    "dma_copy",
                    trig,
                    c,
                    0,
                    SourceLoc("kernel.py", 30),
                    reads=(src,),
                    writes=(Region(t["wbuf"][buf], 0, P, 0, 8192),),
                    dma=shape,
                )

            self.emit(load)
        gemv = rng.random() < 0.7
        n = 1 if gemv else 512
        for j in range(16):
            bank = (j // 4 + 4 * buf) % 8

            def mm(c: int, t: dict, j: int = j, bank: int = bank) -> Instr:
                st = Region(t["wbuf"][buf], 0, P, j * 512, (j + 1) * 512)
                mv = Region(t["x"], 0, P, 0, 2 * n)
                dst = Region(t["psum"][bank], 0, P, 0, 4 * n)
                acc = j % 4 != 0
                reads = (st, mv, dst) if acc else (st, mv)
                return Instr(
                    "matmul",
                    "tensor",
                    c,
                    0,
                    SourceLoc("kernel.py", line),
                    reads=reads,
                    writes=(dst,),
                    moving=n,
                    stationary=P,
                    contract=P,
                    accumulate=acc,
                    psum_access=True,
                )

            self.emit(mm)
        for k in range(4):
            bank = (k + 4 * buf) % 8

            def act(c: int, t: dict, k: int = k, bank: int = bank) -> Instr:
                return Instr(
                    "activation",
                    "scalar",
                    c,
                    0,
                    SourceLoc("kernel.py", 60),
                    reads=(Region(t["psum"][bank], 0, P, 0, 4 * n),),
                    writes=(Region(t["h"], 0, P, k * 2048, k * 2048 + 2 * n),),
                    elems=n,
                    psum_access=True,
                )

            self.emit(act)
        for k in range(6):

            def vec(c: int, t: dict, k: int = k) -> Instr:
                a = Region(t["h"], 0, P, (k % 4) * 2048, (k % 4) * 2048 + 2 * n)
                o = Region(t["o"], 0, P, (k % 2) * 1024, (k % 2) * 1024 + 2 * n)
                two = k % 2 == 0
                return Instr(
                    "tensor_tensor" if two else "tensor_scalar",
                    "vector",
                    c,
                    0,
                    SourceLoc("kernel.py", 70 + k),
                    reads=(a, o) if two else (a,),
                    writes=(o,),
                    elems=n,
                    n_inputs=2 if two else 1,
                    perf=PERF_TT if two else PERF_COPY_STRIDED,
                )

            self.emit(vec)
        self.emit(
            lambda c, t: Instr(
                "memset",
                "gpsimd",
                c,
                0,
                SourceLoc("kernel.py", 80),
                writes=(Region(t["x"], 0, P, 1024 + 4 * (b % 64), 1028 + 4 * (b % 64)),),
                elems=1,
            )
        )
        if self.dma and b % 4 == 3:

            def store(c: int, t: dict) -> Instr:
                shape = DmaShape("hwdge", 5, 0, P, 1, 2048, P * 2048, P * 2048)
                off = ((b // 4) % 256 * 2 + c) * P * 2048
                return Instr(
                    "dma_copy",
                    "sync",
                    c,
                    0,
                    SourceLoc("kernel.py", 90),
                    reads=(Region(t["o"], 0, P, 0, 2048),),
                    writes=(Region(self.out, 0, 1, off, off + P * 2048),),
                    dma=shape,
                )

            self.emit(store)
        if b % 256 == 255 and len(self.cores) == 2:
            self.emit(
                lambda c, t: Instr(
                    "sendrecv",
                    "gpsimd",
                    c,
                    0,
                    SourceLoc("kernel.py", 95),
                    reads=(Region(t["o"], 0, P, 0, 512),),
                    writes=(Region(t["link"], 0, P, 0, 512),),
                    xfer_bytes=P * 512,
                )
            )
            self.emit(lambda c, t: Instr("barrier", "sync", c, 0, SourceLoc("kernel.py", 96)))

    def program(self) -> Program:
        return Program(self.cores, self.names, [0] * len(self.cores), [8] * len(self.cores))


def synthetic_program(
    n_target: int = N_TARGET, seed: int = SEED, dma: bool = True, n_cores: int = 2
) -> Program:
    """A deterministic synthetic kernel trace of about `n_target` instructions."""
    b = _Builder(n_cores, random.Random(seed), dma)
    b.emit(
        lambda c, t: Instr(
            "dma_copy",
            "sync",
            c,
            0,
            SourceLoc("kernel.py", 20),
            reads=(Region(b.x_hbm, 0, 1, 0, P * 1024),),
            writes=(Region(t["x"], 0, P, 0, 1024),),
            dma=DmaShape("hwdge", 0, 0, P, 1, 1024, P * 1024, P * 1024),
        )
    )
    k = 0
    while sum(len(s) for s in b.cores) < n_target:
        b.block(k)
        k += 1
    return b.program()


def strip_program(n_strips: int = 2048, rows: int = 8, width: int = 2) -> Program:
    """A decode kernel tiled along the free axis into `n_strips` column strips of `width` bytes
    (RMSNorm with one bf16 column per tile), each scaled, multiplied and stored to an HBM output
    of `rows` rows: every store is one run per row, so each store's bounding box meets every
    other store's, and dependency inference must not compare each store with all earlier ones."""
    names = {1: "out", 2: "x", 3: "y", 4: "res"}
    row_bytes = n_strips * width
    stream: list[Instr] = []

    def emit(op: str, engine: str, reads: tuple, writes: tuple, **kw: object) -> None:
        loc = SourceLoc("kernel.py", 50)
        stream.append(Instr(op, engine, 0, len(stream), loc, reads=reads, writes=writes, **kw))

    for k in range(n_strips):
        cols = (k * width, (k + 1) * width)
        x, y, res = (Region(t, 0, rows, *cols) for t in (2, 3, 4))
        emit("tensor_scalar", "vector", (x,), (y,), elems=width // 2)
        emit("tensor_tensor", "gpsimd", (y, x), (res,), elems=width // 2)
        starts = tuple(r * row_bytes + cols[0] for r in range(rows))
        ends = tuple(s + width for s in starts)
        out = Region(1, 0, 1, starts[0], ends[-1], 1, (starts, ends))
        shape = DmaShape("hwdge", 0, 0, rows, 1, width, rows * width, rows * width)
        emit("dma_copy", "sync", (res,), (out,), dma=shape)
    return Program([stream], names, [0], [8])


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """Best wall time of `repeat` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def numerics_speed() -> tuple[float, int, str]:
    """Instructions/s of numerics: a small kernel through `runtime.simulate` if available."""
    try:
        return _simulate_speed()
    except Exception as exc:  # the runtime is being written concurrently: fall back
        print(
            f"runtime.simulate unavailable ({type(exc).__name__}: {exc}); timing closures",
            file=sys.stderr,
        )
        return _closure_speed()


def _simulate_speed() -> tuple[float, int, str]:
    from knight.npu import nisa, nl
    from knight.npu.runtime import simulate

    def kernel(x, w, out):
        # Decode-like: GEMVs (moving N = 1) accumulating in PSUM, a read-out, [128, 512] vector work.
        c = nl.program_id(0)
        xt = nl.ndarray((P, 512), dtype=nl.bfloat16, name="xt")
        wt = nl.ndarray((P, P), dtype=nl.bfloat16, name="wt")
        ps = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.psum, name="ps")
        g = nl.ndarray((P, 1), dtype=nl.float32, name="g")
        h = nl.ndarray((P, 512), dtype=nl.float32, name="h")
        acc = nl.ndarray((P, 512), dtype=nl.float32, name="acc")
        nisa.dma_copy(dst=xt, src=x)
        nisa.dma_copy(dst=wt, src=w, engine=nisa.engine.scalar)
        nisa.memset(acc, 0.0)
        for _ in range(16):
            for k in range(4):
                nisa.nc_matmul(ps, wt, xt[:, k : k + 1], accumulate=k > 0)
            nisa.activation(g, nl.silu, ps)
            nisa.tensor_copy(h, xt)
            nisa.tensor_tensor(acc, acc, h, nl.add)
        nisa.dma_copy(dst=out[c], src=acc)

    rng = np.random.default_rng(SEED)
    inputs = {
        "x": rng.standard_normal((P, 512)).astype(np.float32).astype(nl.bfloat16),
        "w": rng.standard_normal((P, P)).astype(np.float32).astype(nl.bfloat16),
    }
    outputs = {"out": ((2, P, 512), np.float32)}
    dt, res = best_of(lambda: simulate(kernel, inputs, outputs, grid=2, timing=False))
    n = res.program.n_instructions  # type: ignore[attr-defined]
    return n / dt, n, "runtime.simulate (trace + numerics)"


def _closure_speed() -> tuple[float, int, str]:
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((P, 512)).astype(np.float32)
    b = rng.standard_normal((P, 512)).astype(np.float32)
    out = np.empty_like(a)
    runs = [lambda: np.add(a, b, out=out) for _ in range(2000)]

    def go() -> None:
        for r in runs:
            r()

    dt, _ = best_of(go)
    return len(runs) / dt, len(runs), "fp32 add closures [128, 512]"


def main() -> None:
    m: MachineSpec = load_machine("trn2")
    prog = synthetic_program()
    n = prog.n_instructions
    n_dma = sum(ins.op == "dma_copy" for s in prog.cores for ins in s)
    print(
        f"synthetic program: {n} instructions ({n_dma} DMA) on {len(prog.cores)} cores",
        file=sys.stderr,
    )
    t_lower, low = best_of(lambda: lower(prog, m))
    t_sched, sched = best_of(lambda: run_schedule(low, m), SCHED_REPEAT)  # type: ignore[arg-type]
    n_deps = sum(len(d) for d in low.deps)  # type: ignore[attr-defined]
    print(
        f"lower:    {t_lower * 1e3:8.1f} ms  {n / t_lower:12,.0f} instr/s  ({n_deps} deps)",
        file=sys.stderr,
    )
    print(
        f"schedule: {t_sched * 1e3:8.1f} ms  {n / t_sched:12,.0f} instr/s  "
        f"(makespan {sched.makespan_ps / 1e6:.1f} us)",
        file=sys.stderr,
    )  # type: ignore[attr-defined]
    comp = synthetic_program(dma=False)
    low_c = lower(comp, m)
    t_comp, _ = best_of(lambda: run_schedule(low_c, m), SCHED_REPEAT)
    print(
        f"schedule (compute only): {comp.n_instructions / t_comp:12,.0f} instr/s", file=sys.stderr
    )
    strips = strip_program()
    t_strips, _ = best_of(lambda: lower(strips, m))
    print(
        f"lower (column strips of a tall output): {strips.n_instructions / t_strips:12,.0f} instr/s",
        file=sys.stderr,
    )
    num_rate, num_n, how = numerics_speed()
    print(f"numerics: {num_rate:12,.0f} instr/s  ({num_n} instructions, {how})", file=sys.stderr)
    result = {
        "n_instructions": n,
        "n_dma": n_dma,
        "lower_instr_per_s": round(n / t_lower),
        "sched_instr_per_s": round(n / t_sched),
        "sched_compute_instr_per_s": round(comp.n_instructions / t_comp),
        "lower_strips_instr_per_s": round(strips.n_instructions / t_strips),
        "numerics_instr_per_s": round(num_rate),
        "numerics_source": how,
        "makespan_us": sched.makespan_ps / 1e6,  # type: ignore[attr-defined]
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
