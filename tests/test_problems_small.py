"""The small problems `rmsnorm` and `moe_router`: spec, inputs, baseline correctness against the
float64 reference, determinism, and bit-neutral TUNABLES."""

from __future__ import annotations

import ast
import re

import numpy as np
import pytest

from knight.npu import numerics
from knight.npu.runtime import simulate
from knight.problems import load_kernel, load_problem

PROBLEMS = ["rmsnorm", "moe_router"]
# The workload the TUNABLES sweep runs on: more than one token, still quick.
KNOB_WORKLOAD = {"rmsnorm": "t4", "moe_router": "t4"}


def _cases(problem_id: str) -> list[tuple[str, int]]:
    prob = load_problem(problem_id)
    return [(w.name, s) for w in prob.all_workloads(heldout=True) for s in w.seeds]


ALL_CASES = [(pid, name, seed) for pid in PROBLEMS for name, seed in _cases(pid)]


def _simulate(prob, source: str, workload_name: str, seed: int):
    kernel = load_kernel(source, prob.spec.kernel_file, prob.spec.entry)
    w = prob.workload(workload_name)
    return simulate(
        kernel,
        prob.make_inputs(w, seed),
        prob.output_specs(w),
        machine=prob.spec.machine,
        grid=prob.spec.grid,
        timing=False,
    )


def _run(prob, source: str, workload_name: str, seed: int) -> dict[str, np.ndarray]:
    return _simulate(prob, source, workload_name, seed).outputs


def _signature(program) -> list[tuple]:
    """What the timing model sees of a traced program (engines, DMA shapes, regions, sizes)."""
    return [
        (i.op, i.engine, i.dma, i.reads, i.writes, i.elems) for core in program.cores for i in core
    ]


def _tunables(source: str) -> dict[str, list]:
    """The kernel's TUNABLES mapping, read from its source without running it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "TUNABLES" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("the baseline declares no TUNABLES")


def _set_constant(source: str, name: str, value) -> str:
    """Rewrite the module-level line `NAME = ...` (keeping any trailing comment)."""
    pattern = re.compile(rf"^{name} = [^#\n]*?(\s*#.*)?$", re.M)
    assert len(pattern.findall(source)) == 1, (
        f"{name} must be assigned exactly once at module level"
    )
    return pattern.sub(lambda m: f"{name} = {value!r}{m.group(1) or ''}", source)


def _default(source: str, name: str):
    m = re.search(rf"^{name} = ([^#\n]*)", source, re.M)
    assert m is not None
    return ast.literal_eval(m.group(1).strip())


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_problem_loads(problem_id):
    prob = load_problem(problem_id)
    assert prob.id == problem_id
    assert prob.spec.correctness == "bit_exact"
    assert prob.spec.grid in (1, 2)
    assert abs(sum(w.weight for w in prob.spec.workloads) - 1.0) < 1e-9
    assert prob.spec.heldout, "a problem needs held-out workloads"
    assert prob.baseline_path.is_file()
    assert (prob.root / "README.md").is_file()
    tun = _tunables(prob.baseline_source())
    assert tun, "TUNABLES must not be empty"
    for name, values in tun.items():
        assert _default(prob.baseline_source(), name) in values


@pytest.mark.parametrize(("problem_id", "workload", "seed"), ALL_CASES)
def test_inputs_match_spec(problem_id, workload, seed):
    prob = load_problem(problem_id)
    w = prob.workload(workload)
    inputs = prob.make_inputs(w, seed)
    assert set(inputs) == set(prob.spec.inputs)
    for name, ts in prob.spec.inputs.items():
        assert inputs[name].shape == ts.resolve(w.params)
        assert inputs[name].dtype == ts.np_dtype
        assert np.isfinite(inputs[name].astype(np.float64)).all()
    again = prob.make_inputs(w, seed)
    for name in inputs:
        assert np.array_equal(numerics.bits(inputs[name]), numerics.bits(again[name])), (
            "inputs must be reproducible"
        )
    assert prob.floor_bytes(inputs, w) > 0


@pytest.mark.parametrize(("problem_id", "workload", "seed"), ALL_CASES)
def test_baseline_matches_reference(problem_id, workload, seed):
    prob = load_problem(problem_id)
    w = prob.workload(workload)
    inputs = prob.make_inputs(w, seed)
    outs = _run(prob, prob.baseline_source(), workload, seed)
    ref = prob.reference(inputs, w)
    tol = prob.spec.reference_tolerance
    for name, (shape, dtype) in prob.output_specs(w).items():
        got = outs[name]
        assert got.shape == shape and got.dtype == dtype
        if np.dtype(dtype) == np.int32:
            # Integer outputs (expert ids) must match the float64 ranking exactly wherever that
            # ranking is not near-tied; the generator keeps near-ties out of every workload.
            amb = prob._module.ambiguous_ids(inputs)
            if w.params.get("family") != "order":  # the order family plants ties on purpose
                assert not amb.any(), "the generator should avoid near-tied rankings"
            np.testing.assert_array_equal(got[~amb], ref[name][~amb])
        else:
            np.testing.assert_allclose(
                got.astype(np.float64), ref[name], rtol=tol.rtol, atol=tol.atol
            )
    if problem_id == "moe_router":
        ids = outs["expert_ids"]
        assert ((ids >= 0) & (ids < 128)).all()
        # Tied probabilities (planted in the order family) still go to distinct experts.
        assert all(len(set(row)) == 8 for row in ids.tolist()), "ids within a token must differ"
        wts = outs["expert_weights"]
        assert (np.diff(wts, axis=1) <= 0).all(), "weights come in descending order"


def test_moe_router_ranks_tied_probabilities_lower_expert_first():
    """On the order family's planted ties (exact and ulp-apart logits with equal fp32
    probabilities) the baseline's ids are the contract's: a stable descending sort of probs."""
    prob = load_problem("moe_router")
    w = prob.workload("t4_order")
    seed = w.seeds[0]
    inputs = prob.make_inputs(w, seed)
    outs = _run(prob, prob.baseline_source(), "t4_order", seed)
    chain = prob._module._contract(inputs["hidden"], inputs["w_router"])
    assert (prob._module.ambiguous_ids(inputs)[0]).any(), "token 0 carries planted ties"
    np.testing.assert_array_equal(outs["expert_ids"], chain["ids"])


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_baseline_deterministic(problem_id):
    prob = load_problem(problem_id)
    name = KNOB_WORKLOAD[problem_id]
    seed = prob.workload(name).seeds[0]
    a = _run(prob, prob.baseline_source(), name, seed)
    b = _run(prob, prob.baseline_source(), name, seed)
    for out in a:
        assert np.array_equal(numerics.bits(a[out]), numerics.bits(b[out]))


@pytest.mark.parametrize("problem_id", PROBLEMS)
def test_tunables_keep_bits(problem_id):
    prob = load_problem(problem_id)
    source = prob.baseline_source()
    name = KNOB_WORKLOAD[problem_id]
    seed = prob.workload(name).seeds[0]
    base = _simulate(prob, source, name, seed)
    want = {k: numerics.bits(v) for k, v in base.outputs.items()}
    for knob, values in _tunables(source).items():
        for value in values:
            if value == _default(source, knob):
                continue
            variant = _set_constant(source, knob, value)
            assert _default(variant, knob) == value
            res = _simulate(prob, variant, name, seed)
            assert _signature(res.program) != _signature(base.program), (
                f"{knob}={value!r} changed nothing"
            )
            for out, b in want.items():
                assert np.array_equal(numerics.bits(res.outputs[out]), b), (
                    f"{knob}={value!r} changed {out}"
                )
