"""`applies-when` conditions: when a skill fits, stated over the champion's profile.

A condition is clauses `name op value` joined by `and` / `or` (`and` binds tighter), e.g.
`bottleneck == dma and dma_small_chunk_share > 0.3`. Names are the metrics of `profile_metrics`
(documented in docs/skills.md); `op` is one of == != < <= > >=; a value is a number or a word.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

# What each metric means; the one list both the parser and docs/skills.md rely on.
METRICS: dict[str, str] = {
    "bottleneck": "the verdict's resource: dma, dma_latency, tensor, vector, scalar, gpsimd, "
    "sync, cross_core",
    "cores": "physical cores the kernel runs on (the problem's grid)",
    "dma_small_chunk_share": "share of DMA bytes moved in contiguous runs below 2 KiB",
    "dma_active_share": "share of the makespan during which some DMA moves data",
    "dma_engine_utilisation": "busy time of the busiest core's 16 DMA engines / (16 x makespan)",
    "hbm_utilisation": "HBM bytes / what the shared HBM can move in the makespan",
    "sendrecv": "number of sendrecv exchanges between the cores",
    **{
        f"critical_{c}": f"share of the critical path spent in {c}"
        for c in (
            "tensor",
            "vector",
            "scalar",
            "gpsimd",
            "sync",
            "dma_issue",
            "dma_fixed",
            "dma_transfer",
            "cross_core",
        )
    },
}

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CLAUSE = re.compile(r"^\s*([a-z_]+)\s*(==|!=|<=|>=|<|>)\s*([A-Za-z_][A-Za-z0-9_]*|-?[0-9.]+)\s*$")
_VERDICTS = (  # verdict prefix -> bottleneck word (knight/npu/profile.py writes the verdicts)
    ("DMA-latency-bound", "dma_latency"),
    ("DMA-bound", "dma"),
    ("cross-core-bound", "cross_core"),
    ("TensorE-bound", "tensor"),
    ("VectorE-bound", "vector"),
    ("ScalarE DGE-bound", "scalar"),
    ("ScalarE-bound", "scalar"),
    ("GpSimd-bound", "gpsimd"),
    ("SyncE-bound", "sync"),
)

Clause = tuple[str, str, float | str]


class ConditionError(ValueError):
    """An applies-when condition that does not parse; the message says where."""


def parse_condition(text: str) -> list[list[Clause]]:
    """The condition as alternatives (or) of conjunctions (and) of clauses."""
    alternatives = []
    for alt in re.split(r"\bor\b", text):
        clauses = []
        for part in re.split(r"\band\b", alt):
            m = _CLAUSE.match(part)
            if not m:
                raise ConditionError(f"cannot read clause {part.strip()!r} in {text!r}")
            name, op, raw = m.groups()
            if name not in METRICS:
                raise ConditionError(f"unknown metric {name!r} in {text!r}")
            value: float | str = raw if re.match(r"[A-Za-z_]", raw) else float(raw)
            if isinstance(value, str) and op not in ("==", "!="):
                raise ConditionError(f"{name} {op} needs a number in {text!r}")
            clauses.append((name, op, value))
        alternatives.append(clauses)
    return alternatives


def bottleneck_word(verdict: str) -> str:
    """The resource a profile verdict names (`dma`, `vector`, ...), or `unknown`."""
    return next((word for prefix, word in _VERDICTS if verdict.startswith(prefix)), "unknown")


def profile_metrics(profile: dict[str, Any]) -> dict[str, float | str]:
    """The metrics conditions test, from a profile dict (`Profile.to_dict()`)."""
    dma = profile.get("dma", {})
    moved = max(1, dma.get("bytes", 0))
    small = sum(
        b["bytes"] for b in dma.get("histogram", []) if b["bucket"] in ("<256B", "256B-2KiB")
    )
    engines = profile.get("engines", {})
    cp = profile.get("critical_path_ns") or 1.0
    critical = {k: v for k, v in profile.get("critical_by_engine", [])}
    out: dict[str, float | str] = {
        "bottleneck": bottleneck_word(profile.get("bottleneck", "")),
        "cores": len({k.split(".")[0] for k in engines}) or 1,
        "dma_small_chunk_share": small / moved if dma.get("bytes") else 0.0,
        "dma_active_share": dma.get("active_share", 0.0),
        "dma_engine_utilisation": max(
            (v["utilisation"] for k, v in engines.items() if k.endswith(".dma")), default=0.0
        ),
        "hbm_utilisation": profile.get("hbm_utilisation", 0.0),
        "sendrecv": profile.get("cross_core", {}).get("sendrecv", 0),
    }
    for name in METRICS:
        if name.startswith("critical_"):
            out[name] = critical.get(name.removeprefix("critical_"), 0.0) / cp
    return out


def matches(condition: str, metrics: dict[str, float | str]) -> bool:
    """Whether `metrics` satisfy `condition` (ConditionError when it does not parse)."""
    return any(
        all(_OPS[op](metrics[name], value) for name, op, value in clauses)
        for clauses in parse_condition(condition)
    )
