"""Problems' floors are stored per harness fingerprint: `knight problems` generates a problem's
inputs once, not on every listing, and never trusts a damaged entry."""

from __future__ import annotations

import pytest

from knight.evaluation.floors import heaviest_floor
from knight.npu.machine import load_machine
from knight.problems import load_problem


@pytest.fixture
def rmsnorm():
    return load_problem("rmsnorm")


def _no_inputs(*args, **kwargs):
    raise AssertionError("the stored floor should have been used")


def test_a_stored_floor_is_the_computed_one_and_skips_input_generation(rmsnorm, tmp_path):
    machine = load_machine(rmsnorm.spec.machine)
    computed = rmsnorm.heaviest_floor(machine)
    assert heaviest_floor(rmsnorm, machine, tmp_path) == computed
    assert len(list(tmp_path.glob("*.json"))) == 1
    rmsnorm.make_inputs = _no_inputs
    assert heaviest_floor(rmsnorm, machine, tmp_path) == computed


@pytest.mark.parametrize(
    "damage",
    [
        "",
        "{not json",
        '{"workload": "no_such_workload", "ns": 1.0, "bound": "hbm", "by_resource": {"hbm": 1.0}}',
        '{"workload": "{w}", "ns": 1.0, "bound": "hbm", "by_resource": {"hbm": 2.0}}',
        '{"workload": "{w}", "ns": "1.0", "bound": "hbm", "by_resource": {"hbm": "1.0"}}',
        '{"workload": "{w}", "ns": 1.0, "bound": "hbm", "by_resource": {"hbm": 1.0}, "x": 0}',
    ],
)
def test_a_damaged_entry_is_recomputed(rmsnorm, tmp_path, damage):
    machine = load_machine(rmsnorm.spec.machine)
    computed = rmsnorm.heaviest_floor(machine)
    heaviest_floor(rmsnorm, machine, tmp_path)
    [entry] = tmp_path.glob("*.json")
    entry.write_text(damage.replace("{w}", computed[0].name))
    assert heaviest_floor(rmsnorm, machine, tmp_path) == computed
    assert heaviest_floor(rmsnorm, machine, tmp_path) == computed  # and the entry is whole again
    rmsnorm.make_inputs = _no_inputs
    assert heaviest_floor(rmsnorm, machine, tmp_path) == computed
