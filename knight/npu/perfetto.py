"""Export a schedule as a Chrome Trace Event file, viewable in Perfetto or chrome://tracing.

One process per physical core, one track per in-order unit (instruction occupancy: the five
engines, then "scalar-dge", ScalarE's descriptor generator, where ScalarE-triggered HWDGE DMAs are
issued) and one per DMA queue (fixed latency and data phase of each transfer), as the Neuron
profiler's timeline shows (NPU.md 1, PROF). Times are microseconds, as the format requires.
"""

from __future__ import annotations

import json
import os

from knight.npu.program import Program
from knight.npu.timing import UNITS, Schedule

QUEUE_TID_BASE = 100  # DMA queue q of a core is track 100 + q; units are tracks 1..6 (UNITS order)
LINK_TID = 99  # sendrecv transfers


def _us(ps: int) -> float:
    return ps / 1e6


def chrome_trace(program: Program, schedule: Schedule) -> dict:
    """The schedule as a Chrome Trace Event JSON object (`traceEvents`, `displayTimeUnit`)."""
    cores = sorted(set(schedule.core)) or list(range(len(program.cores)))
    meta: list[dict] = []
    events: list[dict] = []
    tracks: set[tuple[int, int, str]] = set()
    for c in cores:
        meta.append(
            {"ph": "M", "name": "process_name", "pid": c, "tid": 0, "args": {"name": f"core {c}"}}
        )
        meta.append(
            {"ph": "M", "name": "process_sort_index", "pid": c, "tid": 0, "args": {"sort_index": c}}
        )
        for k, e in enumerate(UNITS):
            tracks.add((c, k + 1, e))
    for i in range(len(schedule)):
        ins = schedule.instrs[i]
        c = schedule.core[i]
        core_index = schedule.origin[i][1]
        args = {
            "loc": str(ins.loc),
            "index": core_index,
            "merged_index": i,
            "finish_us": _us(schedule.finish_ps[i]),
            "bound_by": schedule.bind_kind[i],
        }
        rec = schedule.dma.get(i)
        if rec is not None:
            args["bytes"] = rec.bytes
            args["trigger"] = schedule.engine[i]
        unit = schedule.unit[i]
        events.append(
            {
                "ph": "X",
                "name": ins.op,
                "cat": unit,
                "pid": c,
                "tid": UNITS.index(unit) + 1,
                "ts": _us(schedule.start_ps[i]),
                "dur": _us(schedule.occupancy_ps[i]),
                "args": args,
            }
        )
    for rec in schedule.dma.values():
        ins = schedule.instrs[rec.index]
        if rec.mode == "sendrecv":
            tid, label = LINK_TID, "sendrecv"
        else:
            tid, label = QUEUE_TID_BASE + rec.queue, f"dma queue {rec.queue}"
        tracks.add((rec.core, tid, label))
        args = {
            "loc": str(ins.loc),
            "index": schedule.origin[rec.index][1],
            "merged_index": rec.index,
            "bytes": rec.bytes,
            "descriptors": rec.descriptors,
            "chunk_bytes": rec.chunk_bytes,
            "engines": list(rec.engines),
            "limit": rec.limit,
        }
        if rec.data_start_ps > rec.queue_start_ps:
            events.append(
                {
                    "ph": "X",
                    "name": "fixed latency",
                    "cat": "dma",
                    "pid": rec.core,
                    "tid": tid,
                    "ts": _us(rec.queue_start_ps),
                    "dur": _us(rec.data_start_ps - rec.queue_start_ps),
                    "args": {"merged_index": rec.index},
                }
            )
        events.append(
            {
                "ph": "X",
                "name": ins.op,
                "cat": "dma",
                "pid": rec.core,
                "tid": tid,
                "ts": _us(rec.data_start_ps),
                "dur": _us(rec.finish_ps - rec.data_start_ps),
                "args": args,
            }
        )
    for c, tid, label in sorted(tracks):
        meta.append(
            {"ph": "M", "name": "thread_name", "pid": c, "tid": tid, "args": {"name": label}}
        )
        meta.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": c,
                "tid": tid,
                "args": {"sort_index": tid},
            }
        )
    events.sort(key=lambda ev: (ev["pid"], ev["tid"], ev["ts"]))
    return {"traceEvents": meta + events, "displayTimeUnit": "ns"}


def write_chrome_trace(path: str | os.PathLike[str], program: Program, schedule: Schedule) -> None:
    """Write the trace JSON to `path` (open it in ui.perfetto.dev)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(chrome_trace(program, schedule), fh, separators=(",", ":"))
