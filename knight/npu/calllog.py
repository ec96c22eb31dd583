"""The call log: a traced kernel as plain data, recorded where no data lives and replayed where it does.

Tracing (`record`) runs the kernel's Python against data-less HBM tensors and records every
outermost call of a public `nl`/`nisa` callable (the names in the modules' `__all__`, wrapped
generically, so no signature is written down here): the core, the function's public name, its
arguments and the kernel line that made the call. Tiles become (view id), views are listed once
as (tensor id, indexing steps), registers become (register id, scale, offset); everything else
must be a number, string, dtype, public constant or a tuple/list of those. The log is JSON.

Replaying (`replay`) calls the same public functions again, in the same order, on tensors that
hold the inputs. Every rule is re-checked and every cost recomputed by those functions, so a log
forged by an escaped kernel can only express what a kernel could have written directly; the log
carries no cost metadata to trust. Errors raised while replaying point at the recorded line.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from knight.npu import nisa, nl, tracer
from knight.npu.errors import KernelException, NpuError, SourceLoc
from knight.npu.tensor import RegExpr, View

FORMAT = 1
MODULES = {"nl": nl, "nisa": nisa}
MAX_DEPTH = 16  # nesting of tuples/lists in one argument
MAX_LOG_BYTES = 64 << 20  # a log larger than this is refused unread

# Indexing steps of a View (tensor.View._steps) and the public method that re-applies each.
_REG_FIELDS = tuple(f.name for f in dataclasses.fields(RegExpr))  # reg, scale, offset (, core)

STEP_METHODS = {
    "index": "__getitem__",
    "reshape": "reshape",
    "permute": "permute",
    "broadcast": "broadcast_to",
}


class CallLogError(KernelException):
    """A call log that no kernel could have produced (malformed, or naming unknown objects)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One outermost kernel-language call on one core."""

    fn: str  # "nisa.dma_copy"
    args: list[Any]
    kwargs: dict[str, Any]
    loc: SourceLoc


@dataclass
class CallLog:
    """A kernel's calls per core plus the table of views they pass (JSON-safe data only)."""

    cores: list[list[Call]]
    views: list[list[Any]] = field(default_factory=list)  # [tensor id, [[kind, encoded arg], ...]]

    def to_json(self) -> str:
        """Canonical text: two logs are the same program exactly when their texts are equal."""
        return json.dumps(
            {
                "format": FORMAT,
                "views": self.views,
                "cores": [
                    [[c.fn, c.args, c.kwargs, c.loc.file, c.loc.line] for c in core]
                    for core in self.cores
                ],
            },
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, text: str) -> CallLog:
        """Parse a log from an untrusted process: plain JSON, checked field by field."""
        if len(text) > MAX_LOG_BYTES:
            raise CallLogError(
                f"the call log is {len(text)} bytes; at most {MAX_LOG_BYTES} are accepted"
            )
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):
            raise CallLogError("the call log is not valid JSON") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise CallLogError("the call log has an unknown format")
        views, cores = raw.get("views"), raw.get("cores")
        if not isinstance(views, list) or not isinstance(cores, list):
            raise CallLogError("the call log lacks its views or cores")
        for v in views:
            if not (
                isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and isinstance(v[1], list)
            ):
                raise CallLogError("malformed view in the call log")
        out: list[list[Call]] = []
        for core in cores:
            if not isinstance(core, list):
                raise CallLogError("malformed core in the call log")
            calls = []
            for c in core:
                ok = (
                    isinstance(c, list)
                    and len(c) == 5
                    and isinstance(c[0], str)
                    and isinstance(c[1], list)
                )
                if not (ok and isinstance(c[2], dict) and isinstance(c[3], str) and _is_int(c[4])):
                    raise CallLogError("malformed call in the call log")
                calls.append(Call(c[0], c[1], c[2], SourceLoc(c[3], c[4])))
            out.append(calls)
        return cls(out, views)


def _is_int(x: object) -> bool:
    return type(x) is int


# ----------------------------------------------------------------------------- public objects


def public_callables() -> dict[str, Callable[..., Any]]:
    """Every kernel-language function by public name ("nl.ndarray", "nisa.dma_copy", ...)."""
    out = {}
    for mod_name, mod in MODULES.items():
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and not isinstance(obj, type):
                out[f"{mod_name}.{name}"] = obj
    return out


def _public_constants() -> dict[int, tuple[str, object]]:
    """id -> (public name, object) of every non-primitive public value: dtypes, op names, enum
    members, namespaces, classes. Looked up by identity, so a lookalike is never mistaken."""
    table: dict[int, tuple[str, object]] = {}
    for mod_name, mod in MODULES.items():
        for name in mod.__all__:
            obj = getattr(mod, name)
            path = f"{mod_name}.{name}"
            if type(obj) in (int, float, bool, str, tuple) or obj is None:
                continue
            table.setdefault(id(obj), (path, obj))
            if isinstance(obj, type) and issubclass(obj, enum.Enum):
                for member_name, member in obj.__members__.items():
                    table.setdefault(id(member), (f"{path}.{member_name}", member))
    return table


def _resolve_public(path: str) -> object:
    parts = path.split(".")
    if (
        len(parts) not in (2, 3)
        or parts[0] not in MODULES
        or parts[1] not in MODULES[parts[0]].__all__
    ):
        raise CallLogError(f"the call log names {path!r}, which is not part of the kernel language")
    obj = getattr(MODULES[parts[0]], parts[1])
    if len(parts) == 3:
        if not (
            isinstance(obj, type) and issubclass(obj, enum.Enum) and parts[2] in obj.__members__
        ):
            raise CallLogError(
                f"the call log names {path!r}, which is not part of the kernel language"
            )
        obj = obj.__members__[parts[2]]
    return obj


# ----------------------------------------------------------------------------- recording


class _Recorder:
    """Encodes the calls of one trace; owns the view table shared by both cores."""

    def __init__(self, n_cores: int) -> None:
        self.cores: list[list[Call]] = [[] for _ in range(n_cores)]
        self.views: list[list[Any]] = []
        self._view_ids: dict[int, tuple[int, View]] = {}  # id(view) -> (index, view kept alive)
        self._by_key: dict[tuple, int] = {}  # (tensor id, frozen steps) -> index
        self.constants = _public_constants()
        self.core = 0
        self.depth = 0

    def release(self) -> None:
        """Drop the views and wrappers the recording kept: the wrappers refer back to the recorder,
        and the cycle would leave every view of the trace to the cyclic collector (~0.3 s for
        the moe_decode baseline) instead of freeing it at once."""
        self._view_ids.clear()
        self._by_key.clear()
        self.constants = {}

    def wrap(self, path: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # a call made by the language itself (nl.zeros -> nisa.memset)
                return fn(*args, **kwargs)
            tr = tracer.active()
            loc = tracer.caller_loc()
            before = (len(tr.instrs), tr.shared.next_id)
            self.depth += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                self.depth -= 1
            if (len(tr.instrs), tr.shared.next_id) != before or _makes_handles(result):
                try:
                    call = Call(
                        path,
                        [self.encode(a, 0) for a in args],
                        {k: self.encode(v, 0) for k, v in kwargs.items()},
                        loc,
                    )
                except _Unrecordable as e:
                    raise KernelException(f"{path}: {e}", loc) from None
                self.cores[self.core].append(call)
            return result

        recorded.__name__ = recorded.__qualname__ = getattr(fn, "__name__", path)
        recorded.__doc__ = fn.__doc__
        self.constants.setdefault(id(recorded), (path, recorded))
        return recorded

    def encode(self, x: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Unrecordable("arguments nest too deeply")
        t = type(x)
        if x is None or t in (bool, int, str):
            return x
        if t is float:
            return x if math.isfinite(x) else {"float": repr(x)}
        hit = self.constants.get(id(x))
        if hit is not None and hit[1] is x:
            return {"ref": hit[0]}
        if isinstance(x, View):
            return {"view": self._view(x)}
        if t is RegExpr:
            return {"reg": [getattr(x, f) for f in _REG_FIELDS]}
        if t is tuple:
            return {"tuple": [self.encode(v, depth + 1) for v in x]}
        if t is list:
            return [self.encode(v, depth + 1) for v in x]
        if t is slice:
            return {"slice": [self.encode(v, depth + 1) for v in (x.start, x.stop, x.step)]}
        if isinstance(x, np.generic) and x.dtype.kind in "biuf":
            return {"scalar": [x.dtype.name, x.item() if x.dtype.kind != "f" else float(x)]}
        if isinstance(x, np.dtype):
            for path, obj in self.constants.values():
                if isinstance(obj, np.dtype) and obj == x:
                    return {"ref": path}
        raise _Unrecordable(
            f"an argument of type {t.__name__} cannot be passed to the kernel language"
        )

    def _view(self, v: View) -> int:
        """The view's index in the table; equal views (same tensor, same steps) share one."""
        hit = self._view_ids.get(id(v))
        if hit is not None and hit[1] is v:
            return hit[0]
        # repr is exact for the ints, slices and registers that steps hold, and cheap.
        key = (v._tensor.id, repr(v._steps))
        idx = self._by_key.get(key)
        if idx is None:
            steps = [[kind, self.encode(arg, 1)] for kind, arg in v._steps]
            idx = len(self.views)
            self.views.append([v._tensor.id, steps])
            self._by_key[key] = idx
        self._view_ids[id(v)] = (idx, v)  # the view is kept alive, so its id is not reused
        return idx


class _Unrecordable(Exception):
    pass


def _makes_handles(result: Any) -> bool:
    if isinstance(result, (View, RegExpr)):
        return True
    if type(result) in (tuple, list):
        return any(_makes_handles(r) for r in result)
    return False


@contextmanager
def recording(n_cores: int) -> Iterator[_Recorder]:
    """Route every public `nl`/`nisa` callable through a recorder while the block runs.

    Kernels look these up as module attributes (`nisa.dma_copy`) at call time, so swapping the
    attributes is enough; the originals are restored afterwards."""
    rec = _Recorder(n_cores)
    saved: list[tuple[object, str, object]] = []
    try:
        for path, fn in public_callables().items():
            mod_name, name = path.split(".")
            saved.append((MODULES[mod_name], name, fn))
            setattr(MODULES[mod_name], name, rec.wrap(path, fn))
        yield rec
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
        rec.release()


# ----------------------------------------------------------------------------- replaying


class _Replayer:
    """Decodes a log's arguments against the tensors and registers this replay created."""

    def __init__(self, log: CallLog, tensors: dict[int, Any]) -> None:
        self.log = log
        self.tensors = dict(tensors)  # tensor id -> Tensor (HBM inputs/outputs, then allocations)
        self.registers: dict[int, int] = {}  # register id -> the core that loaded it
        self.views: dict[int, View] = {}
        self.functions = public_callables()

    def call(self, core: int, c: Call) -> None:
        fn = self.functions.get(c.fn)
        if fn is None:
            raise CallLogError(
                f"the call log calls {c.fn!r}, which is not part of the kernel language", c.loc
            )
        args = [self.decode(a, 0, core) for a in c.args]
        kwargs = {str(k): self.decode(v, 0, core) for k, v in c.kwargs.items()}
        try:
            result = fn(*args, **kwargs)
        except NpuError:
            raise
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
        ) as e:  # a malformed call
            raise CallLogError(f"{c.fn}: {type(e).__name__}: {e}", c.loc) from None
        self._learn(result, core)

    def _learn(self, result: Any, core: int) -> None:
        if isinstance(result, View):
            self.tensors.setdefault(result._tensor.id, result._tensor)
        elif isinstance(result, RegExpr):
            self.registers.setdefault(result.reg, core)
        elif type(result) in (tuple, list):
            for r in result:
                self._learn(r, core)

    def decode(self, x: Any, depth: int, core: int) -> Any:
        if depth > MAX_DEPTH:
            raise CallLogError("arguments in the call log nest too deeply")
        if x is None or type(x) in (bool, int, str, float):
            return x
        if type(x) is list:
            return [self.decode(v, depth + 1, core) for v in x]
        if type(x) is not dict or len(x) != 1:
            raise CallLogError("malformed argument in the call log")
        ((kind, val),) = x.items()
        if kind == "ref" and isinstance(val, str):
            return _resolve_public(val)
        if kind == "view" and _is_int(val):
            return self._view(val, core)
        if kind == "reg" and _list_of_ints(val, len(_REG_FIELDS)):
            reg = RegExpr(**dict(zip(_REG_FIELDS, val, strict=True)))
            owner = self.registers.get(reg.reg)
            if owner is None:
                raise CallLogError(
                    f"the call log uses register {reg.reg}, which no register_load made"
                )
            if (
                getattr(reg, "core", owner) != owner
            ):  # the log may not move a register to another core
                raise CallLogError(
                    f"the call log says register {reg.reg} is core {reg.core}'s; core {owner} loaded it"
                )
            return reg
        if kind == "tuple" and isinstance(val, list):
            return tuple(self.decode(v, depth + 1, core) for v in val)
        if kind == "slice" and isinstance(val, list) and len(val) == 3:
            return slice(*(self.decode(v, depth + 1, core) for v in val))
        if kind == "float" and val in ("nan", "inf", "-inf"):
            return float(val)
        if kind == "scalar" and isinstance(val, list) and len(val) == 2 and isinstance(val[0], str):
            return _scalar(val[0], val[1])
        raise CallLogError(f"unknown argument kind {kind!r} in the call log")

    def _view(self, idx: int, core: int) -> View:
        hit = self.views.get(idx)
        if hit is not None:
            return hit
        if not 0 <= idx < len(self.log.views):
            raise CallLogError(f"the call log uses view {idx}, which it never defines")
        tid, steps = self.log.views[idx]
        tensor = self.tensors.get(tid)
        if tensor is None:
            raise CallLogError(f"the call log uses tensor {tid} before any call created it")
        v = View(tensor)
        for step in steps:
            if not (isinstance(step, list) and len(step) == 2 and step[0] in STEP_METHODS):
                raise CallLogError(f"unknown indexing step {step!r} in the call log")
            v = getattr(v, STEP_METHODS[step[0]])(self.decode(step[1], 1, core))
        self.views[idx] = v
        return v


def _list_of_ints(x: object, n: int) -> bool:
    return isinstance(x, list) and len(x) == n and all(_is_int(v) for v in x)


def _scalar(dtype: str, value: object) -> np.generic:
    allowed = {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
    if dtype not in allowed or type(value) not in (bool, int, float):
        raise CallLogError(f"unsupported scalar {dtype!r} in the call log")
    return np.dtype(dtype).type(value)


def replay(
    log: CallLog, tensors: dict[int, Any], grid: int, make_tracer: Callable[[int], Any]
) -> list[Any]:
    """Re-issue every call of `log` core by core, each on a fresh tracer from `make_tracer(core)`;
    returns the tracers. Errors carry the recorded kernel line of the call that raised them."""
    if len(log.cores) != grid:
        raise CallLogError(f"the call log has {len(log.cores)} cores; the grid has {grid}")
    rp = _Replayer(log, tensors)
    tracers = []
    for core, calls in enumerate(log.cores):
        tr = make_tracer(core)
        tracer.set_active(tr)
        try:
            for c in calls:
                tr.replay_loc = c.loc
                try:
                    rp.call(core, c)
                except NpuError as e:
                    e.core = core
                    e.loc = e.loc or c.loc
                    if e.instr_index is None:
                        e.instr_index = len(tr.instrs)
                    raise
                finally:
                    tr.replay_loc = None
        finally:
            tracer.set_active(None)
        tracers.append(tr)
    return tracers


__all__ = ["Call", "CallLog", "CallLogError", "public_callables", "recording", "replay"]
