"""A small task runner: a fixed number of lanes work through prioritised tasks that may add more.

The evaluator uses it to pipeline one evaluation over the worker pool: a chain of traces yields
the execute task of each shape as soon as that shape is traced, so executions start on a free
lane while other shapes are still being traced. A task is a callable returning an iterable of
new tasks; a generator hands each one over the moment it yields it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# A task returns the tasks it makes ready (possibly none).
TaskFn = Callable[[], Iterable["Task"]]


@dataclass(order=True)
class Task:
    """One unit of work; a lower `priority` runs first, ties in submission order."""

    priority: int
    run: TaskFn = field(compare=False)


def run_tasks(lanes: int, tasks: Iterable[Task]) -> None:
    """Run `tasks` and every task they add on up to `lanes` threads; re-raise the first error.

    With one lane everything runs in the calling thread (the in-process evaluator relies on it).
    """
    counter = itertools.count()
    heap: list[tuple[Task, int]] = []
    for t in tasks:
        heapq.heappush(heap, (t, next(counter)))
    if lanes <= 1:
        while heap:
            task, _ = heapq.heappop(heap)
            for t in task.run():
                heapq.heappush(heap, (t, next(counter)))
        return
    cond = threading.Condition()
    state = {"running": 0}
    errors: list[BaseException] = []

    def lane() -> None:
        while True:
            with cond:
                while not heap and state["running"] and not errors:
                    cond.wait()
                if not heap or errors:
                    cond.notify_all()
                    return
                task, _ = heapq.heappop(heap)
                state["running"] += 1
            try:
                for t in task.run():
                    with cond:
                        heapq.heappush(heap, (t, next(counter)))
                        cond.notify()
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                with cond:
                    errors.append(e)
            with cond:
                state["running"] -= 1
                cond.notify_all()

    threads = [threading.Thread(target=lane, daemon=True) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
