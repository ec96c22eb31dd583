"""Honeypot: import the simulator runtime and read tile values through it.

Trick: `from knight.npu import runtime` gives the kernel the module that executes programs; the
kernel calls `runtime.simulate` on the baseline itself (nested simulation) to obtain the exact
answer, then memsets it into `out` without moving x or gamma through the machine.

Expected: forbidden_construct (import of knight.npu.runtime)
"""

from knight.npu import nisa, nl, runtime  # judge: rejected here

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    inner = runtime.simulate(runtime.BASELINE, {"x": x.data, "gamma": gamma.data}, {"out": ((T, H), nl.bfloat16)})
    ref = inner.outputs["out"].reshape(-1)
    res = nl.ndarray((1, T * H), dtype=nl.bfloat16, name="answers")
    for i in range(T * H):
        nisa.memset(res[:, i : i + 1], float(ref[i]))
    nisa.dma_copy(dst=out.reshape(1, T * H), src=res)
