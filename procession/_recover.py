"""``procession recover``: rebuild a lost changelog from the process topic, or
verify a changelog against it.

For each partition: where the changelog is empty, the states folded from the
process topic (inputs below the processor group's committed offset, and every
decision) are written to it in one transaction; where it holds states, they
are compared with the rebuilt ones and every difference is named. Run it with
the processors stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from procession.sagas._state import Ended, Parked, ProcessState
from procession.topics._codec import DEFAULT_CODEC
from procession.workers._app import App
from procession.workers._port import Batch, Outgoing, TopicPartition, Transport, partitions
from procession.workers._rebuild import rebuild
from procession.workers._wire import Stored, restore
from procession.workers._writes import state_changes, state_record

OK, FAILED = 0, 1


async def recover(app: App, transport: Transport, say: Callable[[str], None] = print) -> int:
    """Rebuild empty changelog partitions, verify the others; 0 when all agree.

    Example: ``procession recover shop.app:app --bootstrap-servers kafka:9092``.
    """
    t = app.topics
    count = await partitions(transport, t.process)
    tps = [TopicPartition(t.process, p) for p in range(count)]
    committed = await transport.committed(f"{t.prefix}.processor", tps)
    found = await transport.describe([t.changelog])
    limits = {name: info.max_message_bytes for name, info in found.items()}
    status = OK
    for tp in tps:
        log = TopicPartition(t.changelog, tp.partition)
        held = await transport.read_partition(log)
        stream = await transport.read_partition(tp)
        rebuilt = rebuild(stream, committed[tp], DEFAULT_CODEC, keep_completed=app.keep_completed)
        where = f"partition {tp.partition}"
        if held:
            states, bad = restore(held)
            differ = sorted(
                p for p in rebuilt.keys() | states.keys() if rebuilt.get(p) != states.get(p)
            )
            differ += sorted(m.key or "" for m, _ in bad)
            if differ:
                status = FAILED
                shown = ", ".join(differ[:5]) + (" …" if len(differ) > 5 else "")
                say(
                    f"{where}: {len(differ)} of {len(states)} processes differ from the "
                    f"process topic: {shown}"
                )
            else:
                say(
                    f"{where}: the changelog agrees with the process topic "
                    f"({len(states)} processes)"
                )
            continue
        records: list[Outgoing] = []
        for pid, state in sorted(rebuilt.items()):
            if isinstance(state, ProcessState):
                records += state_changes(pid, state, t.changelog, tp.partition, limits)
            else:
                records.append(state_record(pid, state, t.changelog, tp.partition, limits))
        if records:
            producer = transport.producer(f"{t.prefix}.recover.{tp.partition}")
            await producer.start()
            try:
                await producer.commit(Batch(records=records))
            finally:
                await producer.stop()
        say(
            f"{where}: rebuilt {len(rebuilt)} processes ({_kinds(rebuilt)}) from "
            f"{committed[tp]} decided records of the process topic"
        )
    return status


def _kinds(states: dict[str, Stored]) -> str:
    kinds = Counter(
        "parked"
        if isinstance(s, Parked)
        else s.status
        if isinstance(s, Ended | ProcessState)
        else "?"
        for s in states.values()
    )
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
