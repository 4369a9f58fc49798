"""Each step of an order, timed from a finished run's records.

Reads every record of a run's process and task topics back (read_committed),
groups them by key (the process id), orders each group by record timestamp
and reports the median time from one kind of record to the next. A record's
timestamp is when its producer wrote it, inside its transaction: a step's time
is the upstream commit, the fetch, the wait for the consumer's cycle and the
work, up to the write of the next record. Procession and both floors write the
same topics and record kinds, so their runs compare step by step.

    python -m benchmarks.hops --servers HOST:PORT --prefix bench-1a2b3c4d
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections import defaultdict
from typing import cast

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

#: (topic without the prefix, the record's procession-type header)
Kind = tuple[str, str]


def read(servers: str, prefix: str) -> dict[bytes, list[tuple[int, Kind]]]:
    """Every committed record of ``prefix``'s topics but the changelog, by key."""
    meta = AdminClient({"bootstrap.servers": servers}).list_topics(timeout=10)
    names = [t for t in meta.topics if t.startswith(f"{prefix}.") and not t.endswith(".changelog")]
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"{prefix}.hops",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for t in names for p in meta.topics[t].partitions])
    by_key: dict[bytes, list[tuple[int, Kind]]] = defaultdict(list)
    quiet = 0
    try:
        while quiet < 2:  # two empty polls of 2 s: everything committed was read
            got = [m for m in consumer.consume(1000, 2.0) if m.error() is None]
            quiet = 0 if got else quiet + 1
            for m in got:
                headers = cast(list[tuple[str, bytes]], m.headers() or [])
                kind = next((v.decode() for k, v in headers if k == "procession-type"), "")
                topic = (m.topic() or "").removeprefix(f"{prefix}.")
                by_key[m.key() or b""].append((m.timestamp()[1], (topic, kind)))
    finally:
        consumer.close()
    return by_key


def steps(by_key: dict[bytes, list[tuple[int, Kind]]]) -> dict[tuple[Kind, Kind], list[int]]:
    """Milliseconds from each record of a key to the next, by the pair of their kinds.

    Example:
        >>> got = steps({b"p": [(30, ("process", "B")), (0, ("process", "A"))]})
        >>> got[("process", "A"), ("process", "B")]
        [30]
    """
    out: dict[tuple[Kind, Kind], list[int]] = defaultdict(list)
    for records in by_key.values():
        records.sort()
        for (t0, a), (t1, b) in itertools.pairwise(records):
            out[a, b].append(t1 - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", required=True)
    parser.add_argument("--prefix", required=True, help="the run's topic prefix")
    parser.add_argument("--most", type=int, default=20, help="rows, most frequent first")
    args = parser.parse_args()
    by_key = read(args.servers, args.prefix)
    rows = sorted(steps(by_key).items(), key=lambda row: -len(row[1]))[: args.most]
    processes = [r for r in by_key.values() if any(kind[0] == "process" for _, kind in r)]
    ends = [r[-1][0] - r[0][0] for r in processes]
    print(
        f"{len(processes)} processes; their first record to their last, median "
        f"{statistics.median(ends):.0f} ms"
    )
    for ((ta, ka), (tb, kb)), ms in rows:
        print(f"{len(ms):7d}  {statistics.median(ms):6.0f} ms  {ta}:{ka} -> {tb}:{kb}")


if __name__ == "__main__":
    main()
