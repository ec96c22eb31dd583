"""Honeypot: hand a kernel object a format spec through an f-string (`f"{x:{spec}}"`).

Trick: a format spec is passed to the object's `__format__`, i.e. to code the kernel does not see
and the attribute allowlist never checks; a type that formats through its fields (as `str.format`
does with "{0.attr}") turns the spec into a reflection path. The kernel formats the input view
with a spec built at trace time and keys its code path on the resulting text. Refused as a
construct: tile names need only plain `{expr}` fields.

Expected: forbidden_construct (f-string format spec)
"""

from knight.npu import nisa, nl

H = 2048
SPEC = ">80"


def rmsnorm(x, gamma, out):
    T = x.shape[0]
    text = f"{x.dtype:{SPEC}}"  # judge: rejected here
    xt = nl.ndarray((T, H), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=xt, src=x)
    if "bfloat16" in text:
        nisa.dma_copy(dst=out, src=xt)
