"""Typed errors raised while tracing or running a kernel on the simulated NPU.

Every error carries a category from the failure taxonomy (DESIGN.md) and the kernel's own
file:line, so that a proposer (or a person) can go straight to the offending statement. These
classes are the one statement of the simulator's (trace-stage) categories: `CATEGORIES` is read off
them, and `knight.failure` builds its taxonomy from `CATEGORIES`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceLoc:
    """A place in kernel source: the file and line of the statement that issued an instruction."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class NpuError(Exception):
    """A kernel broke a rule the hardware enforces (or the simulator cannot model)."""

    category = "kernel_exception"

    def __init__(
        self,
        message: str,
        loc: SourceLoc | None = None,
        *,
        instr_index: int | None = None,
        engine: str | None = None,
        core: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.instr_index = instr_index
        self.engine = engine
        self.core = core

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}{self.category}: {self.message}"

    def to_dict(self) -> dict:
        return {
            "category": self.category,
            "message": self.message,
            "file": self.loc.file if self.loc else None,
            "line": self.loc.line if self.loc else None,
            "instr_index": self.instr_index,
            "engine": self.engine,
            "core": self.core,
        }


class ShapeError(NpuError):
    category = "shape_error"


class ResourceOverflow(NpuError):
    category = "resource_overflow"


class IllegalAccess(NpuError):
    category = "illegal_access"


class DtypeError(NpuError):
    category = "dtype_error"


class UninitializedRead(NpuError):
    category = "uninitialized_read"


class HostSync(NpuError):
    category = "host_sync"


class Race(NpuError):
    """Both cores touch the same HBM bytes, at least one writing, with no core_barrier between."""

    category = "race"


class KernelException(NpuError):
    category = "kernel_exception"


# The simulator's categories, in the order their classes are defined above (subclasses made
# elsewhere, such as the kernel loader's syntax error, belong to other stages).
CATEGORIES: tuple[str, ...] = tuple(
    dict.fromkeys(cls.category for cls in NpuError.__subclasses__() if cls.__module__ == __name__)
)
