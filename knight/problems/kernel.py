"""Turning kernel source text into a callable, under the name its errors should carry."""

from __future__ import annotations

from collections.abc import Callable

from knight.npu.errors import KernelException, SourceLoc


class KernelSyntaxError(KernelException):
    category = "syntax_error"


def load_kernel(source: str, filename: str, entry: str) -> Callable[..., None]:
    """Compile `source` as `filename` and return its function `entry` (trusted callers only:
    untrusted candidates run this inside an evaluation worker, after the static checks)."""
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as e:
        raise KernelSyntaxError(f"{e.msg}", SourceLoc(filename, e.lineno or 0)) from None
    namespace: dict = {"__name__": "knight_kernel", "__file__": filename}
    try:
        exec(code, namespace)  # noqa: S102 - the kernel module's top level (imports, constants)
    except Exception as e:
        raise KernelException(
            f"{type(e).__name__} while loading the kernel: {e}", SourceLoc(filename, 0)
        ) from None
    fn = namespace.get(entry)
    if not callable(fn):
        raise KernelException(
            f"the kernel file defines no function {entry!r}", SourceLoc(filename, 1)
        )
    return fn
