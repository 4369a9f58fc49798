"""The processor's decide path alone: a captured process topic, decided again.

``python -m benchmarks.step`` runs the order saga for 2,000 orders on the
in-memory runtime, keeps what its process topic holds (inputs and decisions,
as bytes), and then hands those records to the processor's :class:`Step` in
batches of 64, partition by partition, from an empty store: decode, decide,
encode the decisions, write the states. No transport, no event loop; the
commands' garbage-collector settings. It prints microseconds per decided input,
the best of ``--repeat`` runs.

``--instructions`` counts instead the CPU instructions per decided input under
valgrind's callgrind (about a minute): the same on every run, so a change of 1%
shows where the machine's pace (a third, from hour to hour) hides it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from immutables import Map

from benchmarks import order_app
from benchmarks.load import closed_loop
from procession._gc import tune
from procession.sagas._state import ProcessState
from procession.topics._records import ProcessCompleted
from procession.workers import MemoryLog, MemoryTransport, Runtime
from procession.workers._port import Message, TopicPartition
from procession.workers._processor import Processor
from procession.workers._step import Step
from procession.workers._wire import Stored

BATCH = 64


async def capture(orders: int) -> list[Message]:
    """The process topic of ``orders`` completed orders on the in-memory runtime."""
    app = order_app.app("bench")
    log = MemoryLog()
    completed = ProcessCompleted.TYPE.encode()
    async with Runtime(app, MemoryTransport(log), concurrency=256) as rt:

        async def one(i: int) -> None:
            await rt.publish(order_app.order(i))

        await closed_loop(orders, 500, one)
        deadline = time.monotonic() + 60
        while True:
            found = log.records(app.topics.process)
            done = sum(1 for m in found if completed in (m.value or b""))
            if done >= orders:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {orders} orders completed in 60 s")
            await log.wait(0.2)


def decide_all(records: list[Message]) -> int:
    """Decide ``records`` as the processor would, from an empty store; the inputs decided."""
    app = order_app.app("bench")
    owner = Processor(app, MemoryTransport(MemoryLog()))
    t = app.topics
    topics = [t.process, t.changelog, t.dead_letter, *(t.tasks(x) for x in app.task_types())]
    owner.limits = dict.fromkeys(topics, 1 << 20)
    owner.partition_count = order_app.PARTITIONS
    by_partition: dict[int, list[Message]] = {}
    for m in records:
        by_partition.setdefault(m.partition, []).append(m)
    decided = 0
    for partition, found in by_partition.items():
        tp = TopicPartition(t.process, partition)
        store: dict[str, Stored] = {}
        for i in range(0, len(found), BATCH):
            step = Step(owner, tp, store)
            for m in found[i : i + BATCH]:
                step.add(m)
            step.finish([])
            decided += len(step.decided)
            for pid, state in step.staged.items():  # as the partition applies a step
                if state is None:
                    store.pop(pid, None)
                    continue
                store[pid] = state
                if isinstance(state, ProcessState):
                    state.dirty = Map()
    return decided


def instructions(orders: int) -> float:
    """Instructions per decided input, under callgrind: a run that loads the
    captured records and decides them, minus one that only loads them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.pickle"
        path.write_bytes(pickle.dumps(asyncio.run(capture(orders))))
        base, _ = _count(path, 0)
        total, decided = _count(path, 1)
    return (total - base) / decided


def _count(path: Path, repeat: int) -> tuple[int, int]:
    """(instructions, inputs decided) of one run under callgrind."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv = ["-m", "benchmarks.step", "--records", str(path), "--repeat", str(repeat)]
    out = subprocess.run(
        [*valgrind, sys.executable, *argv],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    decided = re.search(r"(\d+) inputs decided", out.stdout)
    if found is None or decided is None:
        raise RuntimeError(f"no count in callgrind's output: {out.stderr[-500:]}")
    return int(found.group(1)), int(decided.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is kept")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--records", type=Path, help="decide these (pickled), not a new capture")
    args = parser.parse_args()
    if args.instructions:
        print(f"{instructions(args.orders):,.0f} instructions per decided input")
        return
    tune({})
    if args.records is not None:
        records = pickle.loads(args.records.read_bytes())  # noqa: S301 - written by instructions()
    else:
        records = asyncio.run(capture(args.orders))
    best, decided = float("inf"), 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        decided = decide_all(records)
        best = min(best, time.perf_counter() - start)
    if args.repeat:
        per = best / decided * 1e6
        print(f"{decided} inputs decided; {per:.1f} µs per input, best of {args.repeat}")
    else:
        print("0 inputs decided (captured only)")


if __name__ == "__main__":
    main()
