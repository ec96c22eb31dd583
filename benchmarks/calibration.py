"""Calibration: does the simulator reproduce the published figures for the decode MoE layer?

Runs the `moe_decode` baseline (the contest baseline's structure) and the calibration kernel with
the winners' published structure (benchmarks/calibration/moe_optimized.py) on the T=1 workload,
checks that the optimized kernel equals the baseline bit for bit on every workload and seed, and
prints one JSON line last:

  baseline_us, optimized_us, ratio, floor_us, optimized_dma_active, bit_exact  (+ targets)

Published (MOE.md): baseline ~204 us, winners ~53 us per layer, DMA utilisation ~80 %.
Usage: python benchmarks/calibration.py [--machine trn2|trn3] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from knight.npu import numerics
from knight.npu.machine import load_machine
from knight.npu.runtime import simulate
from knight.problems import load_kernel, load_problem

HERE = Path(__file__).resolve().parent
TARGETS = {"trn2": {"baseline_us": 204.0, "optimized_us": 53.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", default="trn2")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per workload for the bit-exact check")
    args = parser.parse_args()
    machine = load_machine(args.machine)
    problem = load_problem("moe_decode")
    base = load_kernel(problem.baseline_source(), "baseline.py", problem.spec.entry)
    opt = load_kernel((HERE / "calibration" / "moe_optimized.py").read_text(), "moe_optimized.py", "moe_decode")

    bit_exact = True
    t1 = {}
    for w in problem.all_workloads(heldout=True):
        for seed in w.seeds[: args.seeds] if args.seeds else w.seeds:
            start = time.perf_counter()
            inputs = problem.make_inputs(w, seed)
            outs = problem.output_specs(w)
            timed = w.name == "t1" and seed == w.seeds[0]
            rb = simulate(base, inputs, outs, machine=machine, timing=timed)
            ro = simulate(opt, inputs, outs, machine=machine, timing=timed)
            same = all(np.array_equal(numerics.bits(rb.outputs[n]), numerics.bits(ro.outputs[n])) for n in outs)
            bit_exact &= same
            print(f"{w.name:<14} seed {seed:<4} bit-exact {same}  ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
            if timed:
                t1 = {"base": rb, "opt": ro, "floor_ns": machine.floor_ns(problem.floor_bytes(inputs, w), problem.spec.grid)}

    rb, ro = t1["base"], t1["opt"]
    print("\nbaseline:\n" + rb.profile.summary_text(), file=sys.stderr)
    print("\noptimized:\n" + ro.profile.summary_text(), file=sys.stderr)
    result = {
        "machine": machine.name,
        "baseline_us": round(rb.latency_ns / 1000, 2),
        "optimized_us": round(ro.latency_ns / 1000, 2),
        "ratio": round(rb.latency_ns / ro.latency_ns, 3),
        "floor_us": round(t1["floor_ns"] / 1000, 2),
        "optimized_dma_active": round(ro.profile.dma["active_share"], 3),
        "bit_exact": bool(bit_exact),
    }
    if machine.name in TARGETS:
        tgt = TARGETS[machine.name]
        result["targets"] = {**tgt, "tolerance": 0.25, "ratio": round(tgt["baseline_us"] / tgt["optimized_us"], 2)}
        result["within_targets"] = all(
            abs(result[k] - v) <= 0.25 * v for k, v in tgt.items()
        ) and bit_exact
    print(json.dumps(result))


if __name__ == "__main__":
    main()
