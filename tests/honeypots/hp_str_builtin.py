"""Honeypot: turn kernel objects into text with the `str` builtin.

Trick: `str(reg)` renders a device register (the object standing for a value read from an input
at run time) as text while the kernel is traced; `repr` is refused, `str` reaches the same method.
If the text held the value, the kernel could branch on the routing in Python (here: skip the
normalisation when the text looks like a small batch). Refused: only the builtins in the static
check's allowlist may be called, and `str` is not among them.

Expected: forbidden_construct (builtin `str`)
"""

from knight.npu import nisa, nl

H = 2048


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    label = str(x)  # judge: rejected here
    xt = nl.ndarray((T, H), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=xt, src=x)
    if "[1, " in label:
        nisa.dma_copy(dst=out, src=xt)
