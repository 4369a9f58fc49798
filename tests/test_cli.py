"""The ``procession`` command: bad app specs, topics create/check, unreachable brokers,
signals and crashes, each reported in one line with the documented exit code."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from procession.examples import RebaseFailed
from procession.topics import DEFAULT_CODEC
from procession.workers import Batch, Outgoing
from procession.workers._port import partition_for
from procession.workers._router import event_headers
from tests.conftest import CLIENTS, KAFKA_BACKENDS, Backend, kafka_servers, until

ROOT = Path(__file__).parent.parent
_prefixes = itertools.count(1)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "procession._cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def spawn(*args: str, prefix: str, stderr: Path, **env: str) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "procession._cli", *args],
            cwd=ROOT,
            env={**os.environ, "PROCESSION_TEST_PREFIX": prefix, **env},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def one_line_error(out: subprocess.CompletedProcess[str], code: int, *expected: str) -> str:
    """The one line of stderr, checked for the exit code, its words and no traceback."""
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


def unique_prefix() -> str:
    return f"cli{os.getpid()}-{next(_prefixes)}"


# -- bad app specs: exit 2, one line, before any broker is asked ------------------------

NO_BROKER = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tests.kafka_app", "expected MODULE:APP"),
        (":app", "expected MODULE:APP"),
        ("tests.kafka_app:", "expected MODULE:APP"),
        ("tests.no_such_module:app", "no module named 'tests.no_such_module'"),
        ("tests.kafka_app:nope", "module 'tests.kafka_app' has no attribute 'nope'"),
        ("procession.examples:RebaseFailed", "RebaseFailed is a class, not an App"),
        ("procession.examples:rebase_saga", "rebase_saga() returned a Saga, not an App"),
    ],
)
def test_a_bad_app_spec_is_one_line_and_exit_2(spec: str, expected: str) -> None:
    out = cli("worker", spec, env=NO_BROKER)
    line = one_line_error(out, 2, f"cannot load app {spec!r}", expected)
    assert line.startswith("procession: ")


@pytest.fixture
def apps(tmp_path: Path) -> dict[str, str]:
    """Tiny app modules under ``tmp_path``, which goes on PYTHONPATH."""
    (tmp_path / "broken_import.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "syntax_error.py").write_text("def app(:\n")
    (tmp_path / "not_an_app.py").write_text("app = 42\n")
    (tmp_path / "unregistered.py").write_text(
        "from procession.examples import rebase_saga\n"
        "from procession.workers import App\n"
        "def app():\n"
        "    return App([rebase_saga()], {})\n"
    )
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", **NO_BROKER}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "broken_import:app",
            "importing module 'broken_import' failed: ModuleNotFoundError: "
            "No module named 'no_such_dependency_xyz'",
        ),
        ("syntax_error:app", "importing module 'syntax_error' failed: SyntaxError"),
        ("not_an_app:app", "app is a int, not an App"),
        (
            "unregistered:app",
            "app() failed: saga 'rebase': task type 'CloseInstance' has no handler",
        ),
    ],
)
def test_an_app_module_that_cannot_give_an_app_says_why(
    apps: dict[str, str], spec: str, expected: str
) -> None:
    one_line_error(cli("processor", spec, env=apps), 2, expected)


def test_unknown_task_types_list_the_apps_task_types() -> None:
    out = cli("worker", "tests.kafka_app:app", "--task-types", "Nope,CloseInstance", env=NO_BROKER)
    one_line_error(out, 2, "unknown task types Nope", "the app's task types: CloseInstance")


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_topic_overrides_must_be_positive_numbers(value: str) -> None:
    out = cli("topics", "create", "tests.kafka_app:app", "--partitions", value, env=NO_BROKER)
    assert out.returncode == 2
    assert "--partitions" in out.stderr and "at least 1" in out.stderr
    assert "Traceback" not in out.stderr


# -- an unreachable broker: exit 1, one line, soon ---------------------------------------


@pytest.mark.parametrize(
    "command",
    [("topics", "check"), ("topics", "create"), ("processor",), ("router",), ("worker",)],
    ids=" ".join,
)
def test_an_unreachable_broker_is_one_line_and_exit_1(command: tuple[str, ...]) -> None:
    started = time.monotonic()
    out = cli(*command, "tests.kafka_app:app", env=NO_BROKER, timeout_s=45)
    line = one_line_error(out, 1, "procession: cannot reach Kafka at 127.0.0.1:1 (")
    assert "Connect call failed" in line or "refused" in line.lower(), line
    assert time.monotonic() - started < 30


# -- topics create / check on a broker ---------------------------------------------------


@pytest.mark.backends("kafka")
def test_topics_create_prints_each_topic_with_the_overrides_then_check_agrees(
    backend: Backend,
) -> None:
    env = kafka_env(backend)
    created = cli(
        "topics", "create", "tests.kafka_app:app", "--partitions", "2",
        "--task-partitions", "1", "--retention-ms", "60000", "--min-insync-replicas", "1",
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    p = backend.prefix
    assert created.stdout.splitlines() == [
        f"{p}.events: 2 partitions, replication 1, min.insync.replicas 1, retention 60000 ms, "
        "max.message.bytes 1048588",
        f"{p}.process: 2 partitions, replication 1, min.insync.replicas 1, "
        "retention unlimited, max.message.bytes 1048588",
        f"{p}.changelog: 2 partitions, replication 1, min.insync.replicas 1, compacted, "
        "max.message.bytes 1048588",
        f"{p}.dead-letter: 1 partition, replication 1, min.insync.replicas 1, "
        "retention broker default, max.message.bytes 8388608",
        f"{p}.tasks.CloseInstance: 1 partition, replication 1, min.insync.replicas 1, "
        "retention 60000 ms, max.message.bytes 1048588",
    ]
    checked = cli(
        "topics", "check", "tests.kafka_app:app", "--partitions", "2", "--task-partitions", "1",
        env=env,
    )  # fmt: skip
    assert (checked.returncode, checked.stdout) == (0, "all 5 topics as specified\n")


@pytest.mark.backends("kafka")
def test_topics_that_exist_with_other_settings_are_reported_and_exit_1(backend: Backend) -> None:
    env = kafka_env(backend)
    assert cli("topics", "create", "tests.kafka_app:app", env=env).returncode == 0
    again = cli("topics", "create", "tests.kafka_app:app", "--partitions", "4", env=env)
    assert again.returncode == 1
    p = backend.prefix
    for topic in ("events", "process", "changelog"):
        assert f"{p}.{topic}: 3 partitions, expected 4\n" in again.stdout
    checked = cli("topics", "check", "tests.kafka_app:app", "--partitions", "4", env=env)
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        f"{p}.events: 3 partitions, expected 4",
        f"{p}.process: 3 partitions, expected 4",
        f"{p}.changelog: 3 partitions, expected 4",
    ]


@pytest.mark.backends("kafka")
def test_topics_check_lists_missing_topics_and_exits_1(backend: Backend) -> None:
    out = cli("topics", "check", "tests.kafka_app:app", env=kafka_env(backend))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{backend.prefix}.{t}: missing"
        for t in ("events", "process", "changelog", "dead-letter", "tasks.CloseInstance")
    ]


@pytest.mark.backends("kafka")
def test_topics_create_reports_the_brokers_refusal(backend: Backend) -> None:
    out = cli(
        "topics", "create", "tests.kafka_app:app", "--replication-factor", "3",
        env=kafka_env(backend),
    )  # fmt: skip
    line = one_line_error(out, 1, "procession: topics are not as the application needs them")
    assert "replication factor of 3 cannot be reached" in line


# -- long-lived commands: start failures, signals, crashes -------------------------------


@pytest.mark.backends("kafka")
@pytest.mark.parametrize("role", ["processor", "router", "worker"])
def test_a_long_lived_command_will_not_start_on_missing_topics(backend: Backend, role: str) -> None:
    out = cli("--log-level", "WARNING", role, "tests.kafka_app:app", env=kafka_env(backend))
    line = one_line_error(
        out, 1, f"{role} could not start: topics are not as the application needs them"
    )
    assert f"{backend.prefix}.process: missing" in line
    assert "Unclosed" not in out.stderr


@pytest.mark.backends(*KAFKA_BACKENDS)
@pytest.mark.parametrize(("role", "sig"), [("router", signal.SIGTERM), ("worker", signal.SIGINT)])
async def test_a_signal_stops_a_running_command_gracefully_with_exit_0(
    backend: Backend, tmp_path: Path, role: str, sig: signal.Signals
) -> None:
    await create_topics(backend)
    stderr = tmp_path / "stderr"
    client = {"PROCESSION_KAFKA_CLIENT": CLIENTS[backend.name]}
    proc = spawn(role, "tests.kafka_app:app", prefix=backend.prefix, stderr=stderr, **client)
    try:
        await until(lambda: has(stderr, f"INFO procession {role} running"), timeout_s=30)
        proc.send_signal(sig)
        assert await asyncio.to_thread(proc.wait, 30) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.read_text()
    assert " ERROR " not in text and "Traceback" not in text and "Unclosed" not in text, text


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_fenced_router_stops_its_process_with_one_line_and_exit_1(
    backend: Backend, tmp_path: Path
) -> None:
    """A newer producer with the router's transactional id fences it: the router
    cannot go on, so the process must end rather than stay alive and idle."""
    await create_topics(backend)
    stderr = tmp_path / "stderr"
    instance = f"{backend.prefix}-router"  # librdkafka: the member's id, known in advance
    proc = spawn(
        "router",
        "tests.kafka_app:app",
        prefix=backend.prefix,
        stderr=stderr,
        PROCESSION_KAFKA_CLIENT=CLIENTS[backend.name],
        PROCESSION_INSTANCE_ID=instance,
    )
    try:
        await until(lambda: has(stderr, "INFO procession router running"), timeout_s=30)
        await publish_one(backend)  # the router starts the producer of r1's partition
        await until(lambda: routed(backend), timeout_s=30)
        topic = backend.topics().inputs
        zombie_killer = backend.transport().producer(
            f"{backend.prefix}.router.{topic}.{partition_for('r1', 3)}"
            if backend.name == "kafka"  # one producer per input partition (EOS v1)
            else f"{backend.prefix}.router.{instance}"  # one per member (EOS v2)
        )
        await zombie_killer.start()  # fences the router's producer
        await zombie_killer.stop()
        await publish_one(backend)  # the router's next commit finds itself fenced
        assert await asyncio.to_thread(proc.wait, 30) == 1, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.read_text()
    ours = [ln for ln in text.splitlines() if " ERROR procession " in ln]
    assert len(ours) == 1, text
    assert "router stopped: " in ours[0] and "fenced" in ours[0], ours[0]
    assert "Traceback" not in text and "Unclosed" not in text, text


# -- history and replay: save streams from a running system, check them before a deploy --


@pytest.mark.backends("kafka")
async def test_history_saves_streams_that_replay_reproduces_and_a_changed_saga_fails(
    backend: Backend, tmp_path: Path
) -> None:
    rt = await backend.runtime(kafka_test_app(backend))
    for key in ("h1", "h2"):
        await rt.publish(RebaseFailed(rebase_id=key, instances=["A", "B"]))
    await rt.settle()
    env = kafka_env(backend)
    saved = await asyncio.to_thread(
        cli, "history", "tests.kafka_app:app", "rebase:h1", "rebase:h2", env=env
    )
    assert saved.returncode == 0, saved.stderr
    lines = saved.stdout.splitlines()
    expected = [*(await rt.history("rebase:h1")), *(await rt.history("rebase:h2"))]
    assert [DEFAULT_CODEC.decode(line.encode()) for line in lines] == expected
    file = tmp_path / "saved.jsonl"
    file.write_text(saved.stdout)
    same = cli("replay", "tests.kafka_app:app", str(file))
    assert (same.returncode, same.stdout) == (0, "2 of 2 processes replay to their decisions\n")
    changed = cli("replay", "tests.kafka_app:renamed", str(file))
    assert changed.returncode == 1
    assert "rebase:h1: input #0 RebaseFailed" in changed.stdout
    assert "0 of 2 processes replay" in changed.stdout
    missing = await asyncio.to_thread(cli, "history", "tests.kafka_app:app", "rebase:nope", env=env)
    assert (missing.returncode, missing.stderr) == (
        1,
        "procession: no records of process 'rebase:nope'\n",
    )


@pytest.mark.backends("kafka")
async def test_ops_commands_read_a_running_system(backend: Backend) -> None:
    rt = await backend.runtime(kafka_test_app(backend))
    await rt.publish(RebaseFailed(rebase_id="ops", instances=["A"]))
    await rt.settle()
    env = kafka_env(backend)
    listed = await asyncio.to_thread(cli, "ps", "tests.kafka_app:app", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "1 completed"
    shown = await asyncio.to_thread(cli, "show", "tests.kafka_app:app", "rebase:ops", env=env)
    assert shown.returncode == 0 and "status: completed" in shown.stdout
    calm = await asyncio.to_thread(
        cli, "stuck", "tests.kafka_app:app", "--older-than", "1m", env=env
    )
    assert (calm.returncode, calm.stdout) == (0, "0 process(es) with no progress for 60s or more\n")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("stuck", "--older-than", "soon"), "expected a duration like 30s, 10m, 2h or 1d"),
        (("dlq", "ls", "3"), "dlq ls takes no offsets"),
        (("dlq", "replay"), "dlq replay takes the OFFSETs to replay"),
    ],
)
def test_ops_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], expected: str) -> None:
    command, *rest = args
    out = cli(command, "tests.kafka_app:app", *rest, env=NO_BROKER)
    one_line_error(out, 2, expected)


def kafka_test_app(backend: Backend) -> Any:
    """``tests.kafka_app:app`` as the subprocesses build it, on this test's prefix."""
    from tests import kafka_app  # noqa: PLC0415

    os.environ["PROCESSION_TEST_PREFIX"] = backend.prefix
    try:
        return kafka_app.app()
    finally:
        del os.environ["PROCESSION_TEST_PREFIX"]


def kafka_env(backend: Backend) -> dict[str, str]:
    return {
        "PROCESSION_TEST_PREFIX": backend.prefix,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_servers(),
    }


async def create_topics(backend: Backend) -> None:
    topics = backend.topics()
    await backend.transport().create_topics(topics.specs(["CloseInstance"]))


async def publish_one(backend: Backend) -> None:
    event = RebaseFailed(rebase_id="r1", instances=["A"])
    out = Outgoing(
        backend.topics().inputs,
        "r1",
        event.model_dump_json().encode(),
        event_headers(event, None, None),
    )
    producer = backend.transport().producer(f"{backend.prefix}.publisher")
    await producer.start()
    try:
        await producer.commit(Batch(records=[out]))
    finally:
        await producer.stop()


async def routed(backend: Backend) -> bool:
    return bool(await backend.records(backend.topics().process))


async def has(path: Path, text: str) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and text in path.read_text())


async def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of an HTTP GET of ``path`` on 127.0.0.1:``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body.strip()


async def ready(log: Path) -> bool:
    """The command whose stderr is ``log`` (run with ``--health-port 0``) answers
    /readyz with 200: joined, and each partition taken over."""
    text = await asyncio.to_thread(lambda: log.read_text() if log.exists() else "")
    said = re.findall(r"health and metrics on port (\d+)", text)
    return bool(said) and (await get(int(said[0]), "/readyz"))[0] == 200


def test_schema_prints_the_contract_for_other_services() -> None:
    out = cli("schema", "tests.kafka_app:app", env=NO_BROKER)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert sorted(found["records"]) == [
        "procession.CompensationPlanned",
        "procession.TaskCompleted",
        "procession.TaskFailed",
        "procession.TransitionPlanned",
    ]
    assert found["domain_events"]["RebaseFailed"]["required"] == ["rebase_id", "instances"]
    assert found["records"]["procession.TaskFailed"]["properties"]["v"] == {"const": 1}


@pytest.mark.backends("rdkafka")  # an instance id makes a static member on librdkafka only
async def test_the_newer_of_two_processes_under_one_instance_id_fences_the_older(
    backend: Backend, tmp_path: Path
) -> None:
    """Two live processes with one PROCESSION_INSTANCE_ID: the newer takes over
    the work, the older exits 1 with one line saying why."""
    await create_topics(backend)
    env = {
        "PROCESSION_KAFKA_CLIENT": CLIENTS[backend.name],
        "PROCESSION_INSTANCE_ID": f"{backend.prefix}-router",
    }
    older_err, newer_err = tmp_path / "older", tmp_path / "newer"
    args = ("router", "tests.kafka_app:app", "--health-port", "0")
    older = spawn(*args, prefix=backend.prefix, stderr=older_err, **env)
    newer: subprocess.Popen[bytes] | None = None
    try:
        # ready: its producer started (a start still under way when the newer one's
        # ends would fence the newer one's in turn: the last InitProducerId wins)
        await until(lambda: ready(older_err), timeout_s=30)
        newer = spawn(*args, prefix=backend.prefix, stderr=newer_err, **env)
        await until(lambda: has(newer_err, "INFO procession router running"), timeout_s=30)
        try:
            code = await asyncio.to_thread(older.wait, 30)
        except subprocess.TimeoutExpired:
            pytest.fail(
                "the older process still runs 30 s after the newer one joined under its "
                f"instance id; its stderr:\n{older_err.read_text()}"
            )
        await publish_one(backend)
        await until(lambda: routed(backend), timeout_s=30)  # the newer one does the work
        assert newer.poll() is None, newer_err.read_text()
    finally:
        for proc in (older, newer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    text = older_err.read_text()
    assert code == 1, text
    ours = [ln for ln in text.splitlines() if " ERROR procession " in ln]
    assert len(ours) == 1, text
    assert "router stopped: " in ours[0] and "same group.instance.id" in ours[0], ours[0]
    assert "Traceback" not in text and "Unclosed" not in text, text
