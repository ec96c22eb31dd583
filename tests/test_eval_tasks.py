"""The evaluator's task runner: follow-up tasks run, errors surface, one lane keeps order."""

from __future__ import annotations

import threading
import time

import pytest

from knight.evaluation.tasks import Task, run_tasks


def test_every_task_and_follow_up_runs_once_on_several_lanes():
    done: list[str] = []
    lock = threading.Lock()

    def leaf(name: str):
        def run():
            with lock:
                done.append(name)
            return []

        return run

    def chain(prefix: str):
        def run():
            for i in range(3):  # a generator hands each follow-up over as it is made
                time.sleep(0.01)
                yield Task(1, leaf(f"{prefix}{i}"))

        return run

    run_tasks(2, [Task(0, chain("a")), Task(0, chain("b")), Task(2, leaf("last"))])
    assert sorted(done) == ["a0", "a1", "a2", "b0", "b1", "b2", "last"]


def test_follow_ups_start_while_their_chain_still_runs():
    started = threading.Event()

    def chain():
        yield Task(1, lambda: (started.set(), [])[1])
        assert started.wait(5), "the follow-up did not start on the free lane"

    run_tasks(2, [Task(0, chain)])
    assert started.is_set()


def test_one_lane_runs_by_priority_in_the_calling_thread():
    order: list[str] = []
    me = threading.get_ident()

    def note(name: str):
        def run():
            assert threading.get_ident() == me
            order.append(name)
            return [Task(0, note("follow-up"))] if name == "first" else []

        return run

    run_tasks(1, [Task(2, note("low")), Task(0, note("first")), Task(1, note("mid"))])
    assert order == ["first", "follow-up", "mid", "low"]


@pytest.mark.parametrize("lanes", [1, 3])
def test_an_error_in_a_task_reaches_the_caller(lanes):
    def boom():
        raise RuntimeError("the baseline fails")

    with pytest.raises(RuntimeError, match="the baseline fails"):
        run_tasks(lanes, [Task(0, lambda: []), Task(0, boom), Task(1, lambda: [])])
