"""Shared fixtures: the runtime backends the behavioural suite runs on.

``--backends memory`` (default) or ``--backends memory,kafka,rdkafka``; a Kafka
run (``kafka``: the aiokafka transport, ``rdkafka``: the librdkafka one) uses
``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from procession.topics._layout import Topics
from procession.workers import (
    App,
    MemoryTransport,
    Message,
    Runtime,
    TopicPartition,
    Transport,
    VirtualClock,
)
from procession.workers._kafka import KafkaTransport
from procession.workers._port import partitions
from procession.workers._rdkafka import RdKafkaTransport

_prefixes = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=os.environ.get("PROCESSION_BACKENDS", "memory"),
        help="comma-separated runtimes for the behavioural suite: memory,kafka,rdkafka",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        names = [b.strip() for b in metafunc.config.getoption("--backends").split(",") if b.strip()]
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:  # e.g. fault injection that only the in-memory log offers
            names = [n for n in names if n in only.args]
        metafunc.parametrize("backend", names, indirect=True)


_container: Any = None


#: The backends on a real broker: the aiokafka transport and the librdkafka one.
KAFKA_BACKENDS = ("kafka", "rdkafka")


#: The PROCESSION_KAFKA_CLIENT of each backend on a broker (for the CLI in subprocesses).
CLIENTS = {"kafka": "aiokafka", "rdkafka": "librdkafka"}


def kafka_transport(name: str) -> KafkaTransport | RdKafkaTransport:
    """A transport of the backend ``name`` (``kafka``: aiokafka; ``rdkafka``) on the broker."""
    return KafkaTransport(kafka_servers()) if name == "kafka" else RdKafkaTransport(kafka_servers())


def kafka_servers() -> str:
    """``KAFKA_BOOTSTRAP_SERVERS``, else a Kafka container (testcontainers) for the session."""
    global _container  # noqa: PLW0603 - one broker per test session
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        return servers
    if _container is None:
        try:
            from testcontainers.kafka import KafkaContainer  # noqa: PLC0415 - only where Docker exists
        except ImportError as exc:
            raise pytest.UsageError(
                "the kafka backend needs KAFKA_BOOTSTRAP_SERVERS (./dev test starts a broker)"
            ) from exc
        _container = KafkaContainer().with_kraft().start()
    servers = str(_container.get_bootstrap_server())
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = servers
    return servers


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _container is not None:
        _container.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of backends not selected with --backends are deselected, never skipped."""
    chosen = {b.strip() for b in config.getoption("--backends").split(",")}
    keep, drop = [], []
    for item in items:
        only = item.get_closest_marker("backends")
        (drop if only is not None and not chosen & set(only.args) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Backend:
    """Builds runtimes (and bare transports) for one backend, on a virtual clock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clock = VirtualClock(start_ms=1_700_000_000_000)
        self.prefix = f"t{os.getpid()}-{next(_prefixes)}"
        self._memory = MemoryTransport(clock_ms=self.clock.now_ms)
        self._kafka: KafkaTransport | RdKafkaTransport | None = None
        self.runtimes: list[Runtime] = []

    def topics(self) -> Topics:
        return Topics(self.prefix, partitions=3, task_partitions=3)

    def transport(self) -> Transport:
        if self.name == "memory":
            return self._memory
        if self.name in KAFKA_BACKENDS:
            if self._kafka is None:
                self._kafka = kafka_transport(self.name)
            return self._kafka
        raise pytest.UsageError(f"unknown backend {self.name!r}")

    async def records(self, topic: str) -> list[Message]:
        """Every committed record of a topic, on any backend."""
        transport = self.transport()
        out: list[Message] = []
        for p in range(await partitions(transport, topic)):
            out += await transport.read_partition(TopicPartition(topic, p))
        return out

    def app(self, sagas: list[Any], handlers: dict[str, Any], **kw: Any) -> App:
        return App(sagas, handlers, topics=self.topics(), **kw)

    async def runtime(self, app: App, **kw: Any) -> Runtime:
        rt = Runtime(app, self.transport(), self.clock, **kw)
        await rt.start()
        self.runtimes.append(rt)
        return rt


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param)
    yield b
    for rt in b.runtimes:
        await rt.stop()
    if b._kafka is not None:
        await b._kafka.close()


def free_ports(n: int) -> int:
    """A free port on 127.0.0.1 whose next ``n - 1`` neighbours are free too (a
    broker and its controller, say)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        try:
            for k in range(1, n):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        return port


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Wait for a condition, with a deadline (never a bare sleep)."""
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.005)
