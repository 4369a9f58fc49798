"""The chaos run's own Kafka parts: the broker it may kill, its publisher, its watcher.

They reconnect on their own: the run restarts the broker under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from benchmarks.chaos_fleet import ROOT
from benchmarks.order_app import order

COMPLETED = b"procession.ProcessCompleted"


class Broker:
    """The broker this run owns: scripts/kafka-local on KAFKA_PORT and KAFKA_DATA_DIR."""

    def __init__(self) -> None:
        self.port = os.environ["KAFKA_PORT"]
        self.data_dir = os.environ["KAFKA_DATA_DIR"]
        home = Path(os.environ.get("KAFKA_LOCAL_HOME", ROOT / ".kafka-local"))
        self.pidfile, self.log = home / f"broker-{self.port}.pid", home / f"broker-{self.port}.log"

    def kill9_and_start(self, run_dir: Path) -> float:
        """kill -9 the broker, start it again on the same data dir; seconds until it answers."""
        pid = int(self.pidfile.read_text().strip())
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)
        shutil.copy(self.log, run_dir / "broker-before-kill.log")  # start truncates it
        env = {**os.environ, "KAFKA_PORT": self.port, "KAFKA_DATA_DIR": self.data_dir}
        with (run_dir / "broker-restart.log").open("ab") as out:
            subprocess.run(
                [str(ROOT / "scripts" / "kafka-local"), "start"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                check=True,
            )
        return time.monotonic() - began


class Publisher:
    """Orders at a steady pace, one transaction per tick; a failed one is retried whole."""

    def __init__(self, servers: str, prefix: str) -> None:
        self.servers, self.prefix = servers, prefix
        self.sent, self.retries = 0, 0
        self.producer: AIOKafkaProducer | None = None

    async def run(self, n: int, rate: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            while self.sent < n:
                due = min(n, int((loop.time() - t0) * rate) + 1)
                if due > self.sent:
                    await self._commit(range(self.sent, due))
                    self.sent = due
                await asyncio.sleep(max(0.0, t0 + self.sent / rate - loop.time()))
        finally:
            await self._drop()

    async def _commit(self, numbers: range) -> None:
        while True:
            try:
                async with asyncio.timeout(20):
                    if self.producer is None:
                        self.producer = AIOKafkaProducer(
                            bootstrap_servers=self.servers,
                            transactional_id=f"{self.prefix}.chaos-publisher",
                            linger_ms=2,
                        )
                        await self.producer.start()
                    await self.producer.begin_transaction()
                    for i in numbers:
                        event = order(i)
                        await self.producer.send(
                            f"{self.prefix}.events",
                            value=event.model_dump_json().encode(),
                            key=event.order_id.encode(),
                            headers=[
                                ("procession-type", b"OrderPlaced"),
                                ("event-id", f"{self.prefix}.order-{i}".encode()),
                            ],
                        )
                    await self.producer.commit_transaction()
                return
            except Exception:  # noqa: BLE001 - any failure: a new producer (fencing the old), the same orders
                self.retries += 1
                await self._drop()
                await asyncio.sleep(1.0)

    async def _drop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await producer.stop()


class Completions:
    """Counts processes with a ProcessCompleted record; reconnects from the start on errors.

    It also notes how long a partition stayed unreadable with records behind
    it: caught up to the last stable offset while the high watermark is past
    it, which is a transaction left open (one a killed producer never ended
    holds every later record until the broker's transaction timeout).
    """

    def __init__(self, servers: str, topic: str) -> None:
        self.servers, self.topic = servers, topic
        self.done: set[bytes] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self.blocked_since: dict[int, float] = {}
        self.longest_block: tuple[float, int, float] = (0.0, -1, 0.0)  # s, partition, since

    async def _note_blocks(self, c: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        for tp in c.assignment():
            lso, high = c.last_stable_offset(tp), c.highwater(tp)
            if lso is None or high is None or lso >= high or await c.position(tp) < lso:
                self.blocked_since.pop(tp.partition, None)
                continue
            since = self.blocked_since.setdefault(tp.partition, now)
            if now - since > self.longest_block[0]:
                self.longest_block = (now - since, tp.partition, since)

    async def poll(self, *, broker_up: bool = True) -> int:
        """Read what is new; ``broker_up=False`` while the broker is restarted, when the
        offsets last fetched are stale and no block is counted."""
        if not broker_up:
            self.blocked_since.clear()
        try:
            async with asyncio.timeout(30):
                if self.consumer is None:
                    self.consumer = await self._open()
                got = await self.consumer.getmany(timeout_ms=500, max_records=10000)
                if broker_up:
                    await self._note_blocks(self.consumer)
            for records in got.values():
                self.done.update(
                    r.key for r in records if (("procession-type", COMPLETED) in r.headers)
                )
        except Exception:  # noqa: BLE001 - the broker is being restarted: read again from the start
            await self.close()
            await asyncio.sleep(1.0)
        return len(self.done)

    async def _open(self) -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await c.start()
        try:
            await c._client.force_metadata_update()
            tps = [
                TopicPartition(self.topic, p)
                for p in sorted(c.partitions_for_topic(self.topic) or ())
            ]
            c.assign(tps)
            for tp, off in (await c.beginning_offsets(tps)).items():
                c.seek(tp, off)
        except BaseException:
            await c.stop()
            raise
        return c

    async def close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()


class GroupWatch:
    """Every half second each consumer group's state, members and partitions held;
    a line in ``path`` whenever one changes, and per group the longest time it
    was not Stable (a rebalance every member waits out).

    It asks the broker with confluent-kafka's AdminClient; while the broker is
    down a look fails and is counted, and the next look uses a new client (the
    old one kept timing out after the broker's restart).
    """

    def __init__(
        self,
        servers: str,
        path: Path,
        t0: float,
        on_stuck: Callable[[str], None] = lambda group: None,
        stuck_s: float = 20.0,
    ) -> None:
        """``on_stuck(group)``: called once per spell in which ``group`` stays
        not Stable for ``stuck_s`` (the chaos run asks its replicas for stacks)."""
        self.servers, self.on_stuck, self.stuck_s = servers, on_stuck, stuck_s
        self.told: set[str] = set()
        self.admin = AdminClient({"bootstrap.servers": servers})
        self.path, self.t0 = path, t0
        self.last: dict[str, str] = {}
        self.unstable_since: dict[str, float] = {}
        self.longest: dict[str, tuple[float, float]] = {}  # group: (seconds, from)
        self.failed_looks = 0

    async def run(self) -> None:
        with self.path.open("a") as out:
            while True:
                try:
                    lines = await asyncio.to_thread(self._look)
                except (
                    KafkaException,
                    TimeoutError,
                ) as exc:  # the broker restarting; say so once per streak
                    self.failed_looks += 1
                    lines = [] if self.failed_looks > 1 else [f"look failed: {exc}"]
                    self.admin = AdminClient({"bootstrap.servers": self.servers})
                else:
                    self.failed_looks = 0
                for line in lines:
                    out.write(f"{time.monotonic() - self.t0:7.1f} {line}\n")
                out.flush()
                await asyncio.sleep(0.5)

    def _look(self) -> list[str]:
        listed = self.admin.list_consumer_groups(request_timeout=5).result()
        ids = [g.group_id for g in listed.valid]
        if not ids:
            return []
        lines, now = [], time.monotonic() - self.t0
        for gid, future in self.admin.describe_consumer_groups(ids, request_timeout=5).items():
            d = future.result()
            state = str(d.state).rsplit(".", 1)[-1]
            held = sorted(
                f"{m.group_instance_id or m.client_id}:{len(m.assignment.topic_partitions)}"
                for m in d.members
            )
            seen = f"{state} {len(d.members)} members [{' '.join(held)}]"
            if self.last.get(gid) != seen:
                self.last[gid] = seen
                lines.append(f"{gid} {seen}")
            if state in {"STABLE", "EMPTY"}:
                self.unstable_since.pop(gid, None)
                self.told.discard(gid)
            else:
                since = self.unstable_since.setdefault(gid, now)
                if now - since >= self.stuck_s and gid not in self.told:
                    self.told.add(gid)
                    lines.append(f"{gid} not Stable for {now - since:.0f} s: asking for stacks")
                    self.on_stuck(gid)
                if now - since > self.longest.get(gid, (0.0, 0.0))[0]:
                    self.longest[gid] = (now - since, since)
        return lines

    def summary(self) -> list[str]:
        return [
            f"group {gid} not Stable for {s:.1f} s at most (from {at:.0f} s)"
            for gid, (s, at) in sorted(self.longest.items())
        ]
