"""What only a broker that goes away shows: stopping while it is down, and
giving up on one that does not come back.

The test runs a broker of its own (``scripts/kafka-local`` on free ports), so
it can kill it without disturbing the session's broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from procession._errors import WriterFailedError
from procession.workers import _kafka, _rdkafka_producer
from procession.workers._kafka import KafkaTransport
from procession.workers._rdkafka import RdKafkaTransport
from tests import kafka_app
from tests.conftest import CLIENTS, KAFKA_BACKENDS, Backend, free_ports, until
from tests.test_cli import ready
from tests.test_kafka import ROOT, publish

KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"

#: /healthz, /readyz and /metrics on a free port, named in the log.
HEALTH = ("--health-port", "0")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[int]:
    port = free_ports(2)
    args = ["--port", str(port), "--data-dir", str(tmp_path / "data")]
    subprocess.run([KAFKA_LOCAL, "start", *args], check=True, capture_output=True, timeout=120)
    yield port
    subprocess.run(
        [KAFKA_LOCAL, "stop", "--port", str(port)], check=False, capture_output=True, timeout=60
    )


def _env(port: int, prefix: str, backend: Backend, **more: str) -> dict[str, str]:
    """The environment of commands on the private broker, with ``backend``'s client."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "PROCESSION_TEST_PREFIX": prefix,
        "PROCESSION_KAFKA_CLIENT": CLIENTS[backend.name],
        **more,
    }


def _kill_broker(port: int) -> None:
    """SIGKILL the private broker on ``port`` (its pid from scripts/kafka-local)."""
    os.kill(int((ROOT / ".kafka-local" / f"broker-{port}.pid").read_text()), signal.SIGKILL)


async def create_topics(env: dict[str, str]) -> None:
    """``procession topics create`` for the test app, under ``env``."""
    created = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "procession._cli", "topics", "create", "tests.kafka_app:app"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr


def cli(role: str, env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "procession._cli", role, "tests.kafka_app:app", *HEALTH],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


#: What each client logs once its broker is gone.
_BROKER_GONE = {"kafka": "ERROR aiokafka", "rdkafka": "ERROR procession.rdkafka"}


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_commands_stopped_while_the_broker_is_down_exit_0_without_a_traceback(
    backend: Backend, private_broker: int, tmp_path: Path
) -> None:
    port, prefix = private_broker, f"outage{os.getpid()}-{backend.name}"
    env = _env(port, prefix, backend)
    await create_topics(env)
    logs = {role: tmp_path / f"{role}.err" for role in ("processor", "worker")}
    procs = {role: cli(role, env, log) for role, log in logs.items()}
    try:
        for log in logs.values():  # each has its partitions and has read their changelogs
            await until(lambda log=log: ready(log), timeout_s=60)  # type: ignore[misc]
        _kill_broker(port)
        gone = _BROKER_GONE[backend.name]
        for log in logs.values():  # each has seen the broker go: its client is retrying
            await until(lambda log=log: _has(log, gone), timeout_s=60)  # type: ignore[misc]
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {role: await asyncio.to_thread(p.wait, 90) for role, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = {role: log.read_text() for role, log in logs.items()}
    ours = {role: [ln for ln in t.splitlines() if " procession" in ln] for role, t in texts.items()}
    assert codes == {"processor": 0, "worker": 0}, ours  # its own lines say why it exited
    assert not any("Traceback" in t or "Unclosed" in t for t in texts.values()), texts


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_worker_whose_broker_is_gone_for_good_exits_1_with_one_line_saying_so(
    backend: Backend, private_broker: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker dies while tasks run and does not come back: the worker's next
    commit cannot end, its producer is judged stuck after ``STUCK_S``, and the
    process exits 1 with one line for what stopped and one for the likely cause,
    within seconds (before, on aiokafka, it lived on doing nothing: a request
    of the transaction was retried for ever, and the close then waited on it)."""
    port, prefix = private_broker, f"gone{os.getpid()}-{backend.name}"
    started = tmp_path / "started"
    env = _env(
        port,
        prefix,
        backend,
        PROCESSION_TEST_SLOW_S="2",  # tasks still running when the broker goes
        PROCESSION_TEST_STARTED_FILE=str(started),
        PROCESSION_TXN_STUCK_S="5",  # the commit deadline stays 120 s: stuck comes first
    )
    await create_topics(env)
    logs = {role: tmp_path / f"{role}.err" for role in ("processor", "worker")}
    procs = {role: cli(role, env, log) for role, log in logs.items()}
    try:
        for log in logs.values():
            await until(lambda log=log: ready(log), timeout_s=60)  # type: ignore[misc]
        monkeypatch.setenv("PROCESSION_TEST_PREFIX", prefix)
        transport = KafkaTransport(env["KAFKA_BOOTSTRAP_SERVERS"])
        try:
            await publish(kafka_app.app(), transport, range(6))
        finally:
            await transport.close()
        await until(lambda: _has(started, "\n"), timeout_s=60)
        _kill_broker(port)
        killed = time.monotonic()
        try:
            code = await asyncio.to_thread(procs["worker"].wait, 90)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker still runs 90 s after its broker was killed for good")
        took = time.monotonic() - killed
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    text = logs["worker"].read_text()
    ours = [ln for ln in text.splitlines() if " ERROR procession " in ln]
    print(f"\n{backend.name}: the worker exited {code} {took:.1f} s after the broker's kill")
    assert code == 1, ours
    assert len(ours) == 2, ours
    assert "worker stopped: " in ours[0] and "has not ended in 5 s" in ours[0], ours
    assert ours[1].endswith(": the likely cause of the stop"), ours
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in ours[1], ours
    assert not any(s in text for s in ("Traceback", "Unclosed", "did not stop")), text
    assert took < 45, took  # stuck after 5 s, closed within 5 more, and the probe


async def _has(path: Path, text: str) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and text in path.read_text())


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_producer_that_cannot_reach_a_broker_gives_up_after_its_start_deadline(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the address: the start retries for the deadline, then
    raises (its component stops, the process exits 1), with one warning for the
    start however often it retried. On librdkafka a member's producer is started
    ahead; a later start of it fails at once, not after a second deadline."""
    caplog.set_level(logging.DEBUG, logger="procession")
    deadline = 3.0
    monkeypatch.setattr(_kafka, "START_DEADLINE_S", deadline)
    monkeypatch.setattr(_rdkafka_producer, "START_DEADLINE_S", deadline)
    monkeypatch.setattr(_rdkafka_producer, "_CALL_TIMEOUT_S", 1.0)  # tries within the deadline
    servers = f"127.0.0.1:{free_ports(1)}"
    transport = KafkaTransport(servers) if backend.name == "kafka" else RdKafkaTransport(servers)
    producer = transport.producer("outage.tx")
    try:
        began = time.monotonic()
        with pytest.raises(Exception) as first:  # noqa: PT011 - each client says it its own way
            await asyncio.wait_for(producer.start(), 60)
        took = time.monotonic() - began
        assert deadline <= took < 4 * deadline, (took, first.value)
        retries = [r for r in caplog.records if "retrying for up to" in r.getMessage()]
        warned = [r for r in retries if r.levelno >= logging.WARNING]
        assert len(warned) == 1, [r.getMessage() for r in warned]
        assert len(retries) >= 2, [r.getMessage() for r in retries]  # retried, and said once
        if backend.name == "rdkafka":
            assert isinstance(first.value, WriterFailedError), first.value
            began = time.monotonic()
            with pytest.raises(WriterFailedError) as again:
                await asyncio.wait_for(producer.start(), 60)
            assert again.value is first.value
            assert time.monotonic() - began < 1.0
    finally:
        await producer.stop()
        await transport.close()


async def test_an_aiokafka_start_whose_coordinator_lookup_lost_the_broker_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiokafka's start may bootstrap and then lose the broker in its coordinator
    lookup, which raises a plain ``KafkaError`` caused by the connection error:
    the start waits for the broker as for any broker out of reach. A plain
    ``KafkaError`` with another cause is not retried. (No broker: the client's
    start is replaced, as the moment it reproduces at is a matter of timing.)"""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - only this test patches it
    from aiokafka.errors import KafkaConnectionError, KafkaError  # noqa: PLC0415

    outcomes: list[BaseException | None] = []

    async def start(_self: AIOKafkaProducer) -> None:
        if outcome := outcomes.pop(0):
            raise outcome

    def lost() -> KafkaError:
        error = KafkaError("coordinator lookup failed")
        error.__cause__ = KafkaConnectionError("connection lost")
        return error

    monkeypatch.setattr(AIOKafkaProducer, "start", start)
    monkeypatch.setattr(_kafka, "START_DEADLINE_S", 30.0)
    transport = KafkaTransport(f"127.0.0.1:{free_ports(1)}")
    try:
        outcomes[:] = [lost(), lost(), None]
        producer = transport.producer("lookup.tx")
        await asyncio.wait_for(producer.start(), 10)
        assert outcomes == []  # both lost lookups retried, the third start kept
        await producer.stop()

        other = KafkaError("not a lost connection")
        outcomes[:] = [other, None]
        with pytest.raises(KafkaError) as raised:
            await asyncio.wait_for(transport.producer("lookup.tx2").start(), 10)
        assert raised.value is other
        assert outcomes == [None]  # not retried
    finally:
        await transport.close()
