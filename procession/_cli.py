"""The ``procession`` command.

    procession demo [--bootstrap-servers HOST:PORT]
    procession topics create MODULE:APP [--partitions N] [--task-partitions N]
        [--replication-factor N] [--min-insync-replicas N] [--retention-ms N]
    procession topics check MODULE:APP [same overrides]
    procession processor MODULE:APP [--no-router]
    procession router MODULE:APP
    procession worker MODULE:APP [--task-types A,B] [--concurrency N]

``MODULE:APP`` names an :class:`procession.App` (or a function returning one).
Kafka commands read ``--bootstrap-servers`` or ``KAFKA_BOOTSTRAP_SERVERS``.
Exit codes: 0 done (or stopped by SIGTERM/SIGINT), 1 a failure at run time
(Kafka unreachable, topics not as needed, a component stopped), 2 a bad
command line (options, ``MODULE:APP``, task types). Every failure is one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from procession._errors import AppSpecError, KafkaUnreachableError, ProcessionError
from procession._errors import one_line as reason
from procession._health import HealthServer
from procession._load import check_task_types, load_app
from procession._logs import limit_kafka_logs
from procession._ops import duration_ms
from procession._replay_files import replay_files
from procession._supervise import supervise
from procession.topics._records import CancelMode

if TYPE_CHECKING:
    from procession.topics._layout import TopicSpec
    from procession.workers import App
    from procession.workers._kafka import KafkaTransport
    from procession.workers._rdkafka import RdKafkaTransport

OK, FAILED, USAGE = 0, 1, 2
#: How long the first contact with the cluster may take before giving up.
CONNECT_TIMEOUT_S = 30.0
#: How long a command that failed waits to learn whether its brokers still answer.
REACH_AGAIN_S = 2.0
_OVERRIDES = {  # option dest -> Topics field
    "partitions": "partitions",
    "task_partitions": "task_partitions",
    "replication_factor": "replication",
    "min_insync_replicas": "min_insync",
    "retention_ms": "retention_ms",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    demo = args.command == "demo"
    quiet = demo or args.command in (
        "history",
        "replay",
        "recover",
        "ps",
        "show",
        "stuck",
        "cancel",
        "resume",
        "retry",
        "dlq",
    )
    logging.basicConfig(  # these print their own output: only trouble is logged
        level="WARNING" if quiet else args.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    limit_kafka_logs()
    if demo:
        from procession._demo import main as demo_main  # noqa: PLC0415 - keeps --help fast

        return _one_line_on_failure("demo", lambda: demo_main(args.bootstrap_servers))
    try:
        app = load_app(args.app)
        if args.command == "topics":
            app.topics = dataclasses.replace(app.topics, **_overrides(args))
        if args.command == "worker":
            check_task_types(args.app, app, _task_types(args))
        if args.command == "replay":
            return replay_files(app, args.files)
        if args.command == "schema":
            from procession._schema import schema  # noqa: PLC0415 - per command

            print(json.dumps(schema(app), indent=2))
            return OK
        servers = _servers(args)
    except (AppSpecError, _UsageError) as exc:
        print(f"procession: {exc}", file=sys.stderr)
        return USAGE
    if args.command == "topics":
        return _one_line_on_failure(
            "topics", lambda: asyncio.run(_topics(app, servers, args.action))
        )
    if args.command in ("ps", "show", "stuck", "cancel", "resume", "retry", "dlq"):
        if args.command == "stuck":
            try:
                args.older_than_ms = duration_ms(args.older_than)
            except ValueError as exc:
                print(f"procession: {exc}", file=sys.stderr)
                return USAGE
        if args.command == "dlq" and (problem := _dlq_usage(args.action, args.offsets)):
            print(f"procession: {problem}", file=sys.stderr)
            return USAGE
        return _one_line_on_failure(args.command, lambda: asyncio.run(_ops(app, servers, args)))
    if args.command == "recover":
        return _one_line_on_failure("recover", lambda: asyncio.run(_recover(app, servers)))
    if args.command == "history":
        return _one_line_on_failure(
            "history", lambda: asyncio.run(_history(app, servers, args.process_ids))
        )
    return _one_line_on_failure(args.command, lambda: _traced(app, servers, args))


def _traced(app: App, servers: str, args: argparse.Namespace) -> int:
    """A long-lived command, exporting its spans when ``OTEL_*`` asks for it, with
    the collector set for a long run (``procession._gc``)."""
    from procession._gc import tune  # noqa: PLC0415 - per command
    from procession._telemetry import setup  # noqa: PLC0415 - per command

    tune()  # the app is loaded: what start-up made is frozen
    shutdown = setup(args.command)
    try:
        return asyncio.run(_run(app, servers, args))
    finally:
        shutdown()  # the last batch of spans goes out before the exit


def _dlq_usage(action: str, offsets: list[int]) -> str:
    """Why ``dlq action offsets`` cannot work, or ""."""
    if action == "ls" and offsets:
        return "dlq ls takes no offsets"
    if action == "show" and len(offsets) != 1:
        return "dlq show takes one OFFSET"
    if action == "replay" and not offsets:
        return "dlq replay takes the OFFSETs to replay"
    return ""


async def _ops(app: App, servers: str, args: argparse.Namespace) -> int:
    from procession import _ops as ops  # noqa: PLC0415 - per command

    async with _connected(servers) as t:
        if args.command == "ps":
            return await ops.ps(app, t, args.status, args.saga)
        if args.command == "show":
            return await ops.show(app, t, args.process_id)
        if args.command == "stuck":
            return await ops.stuck(app, t, args.older_than_ms, ids_only=args.ids)
        if args.command == "cancel":
            mode: CancelMode = "hard" if args.hard else "cooperative"
            return await ops.cancel(
                app, t, args.process_id, mode=mode, reason=args.reason, by=args.by
            )
        if args.command in ("resume", "retry"):
            code = OK
            for pid in args.process_ids:
                if args.command == "resume":
                    done = await ops.resume(app, t, pid, reason=args.reason, by=args.by)
                else:
                    done = await ops.retry(
                        app, t, pid, machine=args.machine, reason=args.reason, by=args.by
                    )
                code = max(code, done)
            return code
        if args.action == "ls":
            return await ops.dlq_ls(app, t)
        if args.action == "show":
            return await ops.dlq_show(app, t, args.offsets[0])
        return await ops.dlq_replay(app, t, args.offsets)


async def _recover(app: App, servers: str) -> int:
    from procession._recover import recover  # noqa: PLC0415 - per command

    async with _connected(servers) as transport:
        return await recover(app, transport)


async def _history(app: App, servers: str, process_ids: list[str]) -> int:
    """Each process's stream, read from its own partition of the process topic."""
    from procession.topics._codec import DEFAULT_CODEC  # noqa: PLC0415
    from procession.workers._port import messages_of  # noqa: PLC0415

    async with _connected(servers) as transport:
        for pid in process_ids:
            mine = await messages_of(transport, app.topics.process, pid)
            if not mine:
                print(f"procession: no records of process {pid!r}", file=sys.stderr)
                return FAILED
            for msg in mine:  # a batch of decisions as its records, one per line
                for value in DEFAULT_CODEC.split(msg.value or b""):
                    sys.stdout.write(value.decode() + "\n")
    return OK


def _one_line_on_failure(command: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code; a failure is one line on stderr (the traceback at DEBUG)."""
    try:
        return run()
    except KeyboardInterrupt:  # SIGINT before the components ran: nothing to stop
        return OK
    except ProcessionError as exc:
        print(f"procession: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:  # e.g. a KafkaError
        logging.getLogger("procession").debug("%s failed", command, exc_info=True)
        print(
            f"procession: {command} failed: {reason(exc)} (--log-level DEBUG shows where)",
            file=sys.stderr,
        )
        return FAILED


class _UsageError(Exception):
    """A command line that cannot work (reported like argparse's own errors)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="procession", description="Procession saga runtime")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        default=os.environ.get("PROCESSION_LOG_LEVEL", "INFO").upper(),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the rebase saga end to end, in memory by default")
    demo.add_argument("--bootstrap-servers", help="run on this Kafka cluster instead")
    topics = sub.add_parser("topics", help="create or check an app's topics")
    topics.add_argument("action", choices=["create", "check"])
    _app_args(topics)
    for flag, help_ in [
        ("--partitions", "partitions of the event, process and changelog topics"),
        ("--task-partitions", "partitions of each task topic"),
        ("--replication-factor", "replicas of every topic"),
        ("--min-insync-replicas", "min.insync.replicas of every topic"),
        ("--retention-ms", "retention.ms of the event and task topics"),
    ]:
        topics.add_argument(flag, type=_positive, metavar="N", help=help_)
    proc = sub.add_parser("processor", help="run the processor of an app (long-lived)")
    _app_args(proc)
    _health_args(proc)
    proc.add_argument(
        "--no-router", action="store_true", help="run no router here (run `router` elsewhere)"
    )
    router = sub.add_parser("router", help="run only the router of an app (long-lived)")
    _app_args(router)
    _health_args(router)
    hist = sub.add_parser(
        "history", help="print processes' streams as JSON lines (for replay checks)"
    )
    _app_args(hist)
    hist.add_argument("process_ids", nargs="+", metavar="PROCESS_ID")
    schema = sub.add_parser(
        "schema", help="JSON Schema of the app's domain events, task requests and results"
    )
    schema.add_argument("app", metavar="MODULE:APP")
    replay = sub.add_parser(
        "replay", help="replay saved histories against the app's definitions (no broker)"
    )
    replay.add_argument("app", metavar="MODULE:APP")
    replay.add_argument("files", nargs="+", metavar="FILE.jsonl")
    _app_args(
        sub.add_parser(
            "recover",
            help="rebuild an empty changelog from the process topic, verify a full one "
            "(processors stopped)",
        )
    )
    _add_ops_commands(sub)
    work = sub.add_parser("worker", help="run task workers of an app (long-lived)")
    _app_args(work)
    work.add_argument("--task-types", help="comma-separated; default: every task type")
    work.add_argument("--concurrency", type=_positive, default=16, metavar="N")
    _health_args(work)
    return parser


def _health_args(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get("PROCESSION_HEALTH_PORT")
    parser.add_argument(
        "--health-port",
        type=_port,
        default=_port(env) if env else None,
        metavar="PORT",
        help="serve /healthz, /readyz and /metrics on this port (0: a free one; "
        "default PROCESSION_HEALTH_PORT, else none)",
    )


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _add_ops_commands(sub: Any) -> None:
    """The operations commands: ps, show, stuck, cancel, resume, retry, dlq."""
    ps = sub.add_parser("ps", help="processes by status, saga and last change (the changelog)")
    _app_args(ps)
    ps.add_argument("--status", help="only this status (running, parked, completed, ...)")
    ps.add_argument("--saga", help="only this saga")
    show = sub.add_parser("show", help="one process's timeline and state (its partition only)")
    _app_args(show)
    show.add_argument("process_id", metavar="PROCESS_ID")
    stuck = sub.add_parser("stuck", help="processes with no progress, and what each waits for")
    _app_args(stuck)
    stuck.add_argument("--older-than", default="10m", metavar="DURATION", help="e.g. 90s, 10m, 2h")
    stuck.add_argument("--ids", action="store_true", help="print only their process ids")
    cancel = sub.add_parser("cancel", help="ask a process to cancel (an input naming who and why)")
    _app_args(cancel)
    cancel.add_argument("process_id", metavar="PROCESS_ID")
    cancel.add_argument("--hard", action="store_true", help="end at once, no compensations")
    cancel.add_argument("--reason", required=True)
    cancel.add_argument("--by", default=os.environ.get("USER", "operator"), help="who asks")
    for name, help_ in [
        ("resume", "resume a parked process: its held inputs are decided again"),
        ("retry", "run the next attempt of a failed task now, not at its retry timer"),
    ]:
        cmd = sub.add_parser(name, help=help_)
        _app_args(cmd)
        cmd.add_argument("process_ids", nargs="+", metavar="PROCESS_ID")
        cmd.add_argument("--reason", required=True)
        cmd.add_argument("--by", default=os.environ.get("USER", "operator"), help="who asks")
        if name == "retry":
            cmd.add_argument("--machine", default="", help="only this machine's task")
    dlq = sub.add_parser("dlq", help="dead letters: ls, show OFFSET, replay OFFSET ...")
    _app_args(dlq)
    dlq.add_argument("action", choices=["ls", "show", "replay"])
    dlq.add_argument("offsets", nargs="*", type=int, metavar="OFFSET")


def _app_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:APP")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,HOST:PORT]")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {field: getattr(args, dest) for dest, field in _OVERRIDES.items()}
    return {field: value for field, value in given.items() if value is not None}


def _task_types(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in (args.task_types or "").split(",") if t.strip()]


def _servers(args: argparse.Namespace) -> str:
    servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        raise _UsageError("give --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS")
    return str(servers)


async def _topics(app: App, servers: str, action: str) -> int:
    from procession.workers._topic_check import problems  # noqa: PLC0415 - per command

    specs = app.topics.specs(app.task_types())
    async with _connected(servers) as transport:
        if action == "create":
            await transport.create_topics(specs)
            for spec in specs:
                print(f"{spec.name}: {_settings(spec)}")
        found = await transport.describe([s.name for s in specs])
    listed = problems(specs, found, co_partitioned=[_co_partitioned(app)])
    for problem in listed:
        print(problem)
    if listed:
        if action == "create":
            print(f"{len(listed)} problems: topics that existed keep their settings; fix them")
        return FAILED
    if action == "check":
        print(f"all {len(specs)} topics as specified")
    return OK


def _settings(spec: TopicSpec) -> str:
    many = "partition" if spec.partitions == 1 else "partitions"
    parts = [f"{spec.partitions} {many}", f"replication {spec.replication}"]
    if spec.min_insync is not None:
        parts.append(f"min.insync.replicas {spec.min_insync}")
    if spec.compacted:
        parts.append("compacted")
    else:
        kept = "broker default" if spec.retention_ms is None else f"{spec.retention_ms} ms"
        kept = "unlimited" if spec.retention_ms == -1 else kept
        parts.append(f"retention {kept}")
    parts.append(f"max.message.bytes {spec.max_message_bytes}")
    return ", ".join(parts)


def _co_partitioned(app: App) -> tuple[str, str]:
    return (app.topics.process, app.topics.changelog)


async def _run(app: App, servers: str, args: argparse.Namespace) -> int:
    code = await _supervised(app, servers, args)
    if code != OK:
        await _say_if_unreachable(servers)
    return code


async def _supervised(app: App, servers: str, args: argparse.Namespace) -> int:
    from procession._telemetry import observe  # noqa: PLC0415
    from procession.workers import Processor, Router, Worker  # noqa: PLC0415 - per command

    async with _connected(servers) as transport:  # each component checks its topics
        parts: list[tuple[str, Processor | Router | Worker]] = []
        if args.command == "processor":
            parts.append(("processor", Processor(app, transport)))
        if args.command == "router" or (args.command == "processor" and not args.no_router):
            parts.append(("router", Router(app, transport)))
        if args.command == "worker":
            worker = Worker(
                app, transport, task_types=_task_types(args) or None, concurrency=args.concurrency
            )
            parts.append(("worker", worker))
        observe(parts)  # OpenTelemetry metrics, when OTEL_* asked for them
        if args.health_port is None:
            return await supervise(parts, asyncio.Event())
        host = os.environ.get("PROCESSION_HEALTH_HOST", "0.0.0.0")  # noqa: S104 - probes reach the pod's address
        async with HealthServer(parts, host, args.health_port) as health:
            logging.getLogger("procession").info("health and metrics on port %d", health.port)
            return await supervise(parts, asyncio.Event())


async def _say_if_unreachable(servers: str) -> None:
    """Log one more line when no broker answers any more, once the command has
    closed its clients: a component stopped by a broker gone for good says what
    its client made of it (an unknown topic, a transaction that did not end),
    not the cause. (A failure raised out of the run says its own one line.)"""
    try:
        async with asyncio.timeout(REACH_AGAIN_S):
            await _reach(servers)
    except KafkaUnreachableError as exc:
        logging.getLogger("procession").error("%s: the likely cause of the stop", exc)
    except TimeoutError:
        silent = KafkaUnreachableError.silent(servers, REACH_AGAIN_S)
        logging.getLogger("procession").error("%s: the likely cause of the stop", silent)


@contextlib.asynccontextmanager
async def _connected(servers: str) -> AsyncIterator[KafkaTransport | RdKafkaTransport]:
    """A Kafka transport (``PROCESSION_KAFKA_CLIENT``) whose cluster answered,
    closed on the way out.

    An unreachable cluster is a :class:`KafkaUnreachableError` within
    :data:`CONNECT_TIMEOUT_S`, whatever the client makes of it; one that
    refused our TLS or SASL settings says so, naming them.
    """
    from procession.workers._kafka_client import kafka_transport  # noqa: PLC0415

    transport = kafka_transport(servers)
    try:
        give_up = time.monotonic() + CONNECT_TIMEOUT_S
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await _reach(servers)
        except TimeoutError as exc:
            raise KafkaUnreachableError.silent(servers, CONNECT_TIMEOUT_S) from exc
        await transport.connect(max(1.0, give_up - time.monotonic()))
        yield transport
    finally:
        await transport.close()


async def _reach(servers: str) -> None:
    """Return once a TCP connection to one of ``servers`` opens; else say why not.

    Every server is tried at once, so one that drops packets does not use up a
    caller's deadline while another would answer. Checked before aiokafka
    tries, which would log an error per attempt first.
    """
    listed = [s.strip() for s in servers.split(",") if s.strip()]
    if not listed:
        raise KafkaUnreachableError(servers, "no servers given")
    tries = [asyncio.ensure_future(_open(server)) for server in listed]
    why = ""
    try:
        for attempt in asyncio.as_completed(tries):
            failed = await attempt
            if failed is None:
                return
            why = failed
    finally:
        for t in tries:
            t.cancel()
        await asyncio.gather(*tries, return_exceptions=True)
    raise KafkaUnreachableError(servers, why)


async def _open(server: str) -> str | None:
    """None once a TCP connection to ``server`` (host:port) opened, else why not."""
    host, _, port = server.rpartition(":")
    try:
        _, writer = await asyncio.open_connection(host.strip("[]") or "localhost", int(port))
    except (OSError, ValueError) as exc:
        return f"{server}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    writer.close()
    await writer.wait_closed()
    return None


if __name__ == "__main__":
    sys.exit(main())
