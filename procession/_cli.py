"""The ``procession`` command.

    procession demo [--bootstrap-servers HOST:PORT]
    procession topics create MODULE:APP
    procession processor MODULE:APP [--no-router]
    procession router MODULE:APP
    procession worker MODULE:APP [--task-types A,B] [--concurrency N]

``MODULE:APP`` names an :class:`procession.App` (or a function returning one).
Kafka commands read ``--bootstrap-servers`` or ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any


def load_app(spec: str) -> Any:
    """The App named by ``module:attribute`` (called first if it is a function)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise SystemExit(f"expected MODULE:APP, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    obj = getattr(importlib.import_module(module), attr)
    return obj() if callable(obj) and not hasattr(obj, "sagas") else obj


def _servers(args: argparse.Namespace) -> str:
    servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        raise SystemExit("give --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS")
    return str(servers)


async def _run_until_signal(app: Any, servers: str, role: str, args: argparse.Namespace) -> int:
    from procession.workers import Processor, Router, Worker  # noqa: PLC0415 - per command
    from procession.workers._kafka import KafkaTransport  # noqa: PLC0415

    transport = KafkaTransport(servers)
    parts: list[Processor | Router | Worker] = []
    if role == "processor":
        parts.append(Processor(app, transport))
    if role == "router" or (role == "processor" and not args.no_router):
        parts.append(Router(app, transport))
    if role == "worker":
        types = [t for t in (args.task_types or "").split(",") if t] or None
        parts.append(Worker(app, transport, task_types=types, concurrency=args.concurrency))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for part in parts:
        await part.start()
    logging.getLogger("procession").info(
        "%s running on %s", " and ".join(type(p).__name__.lower() for p in parts), servers
    )
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    waits += [p.crashed for p in parts if isinstance(p, Processor) and p.crashed is not None]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for part in reversed(parts):
        await part.stop()
    await transport.close()
    return 0 if stop.is_set() else 1


async def _create_topics(app: Any, servers: str) -> int:
    from procession.workers._kafka import KafkaTransport  # noqa: PLC0415 - loaded per command

    transport = KafkaTransport(servers)
    specs = app.topics.specs(app.task_types())
    await transport.create_topics(specs)
    await transport.close()
    for spec in specs:
        kind = "compacted" if spec.compacted else f"retention {spec.retention_ms or 'default'} ms"
        print(f"{spec.name}: {spec.partitions} partitions, {kind}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="procession", description="Procession saga runtime")
    parser.add_argument("--log-level", default=os.environ.get("PROCESSION_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the rebase saga end to end, in memory by default")
    demo.add_argument("--bootstrap-servers", help="run on this Kafka cluster instead")
    topics = sub.add_parser("topics", help="manage an app's topics")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("app", metavar="MODULE:APP")
    topics.add_argument("--bootstrap-servers")
    proc = sub.add_parser("processor", help="run the processor of an app (long-lived)")
    proc.add_argument("app", metavar="MODULE:APP")
    proc.add_argument("--bootstrap-servers")
    proc.add_argument(
        "--no-router", action="store_true", help="run no router here (run `router` elsewhere)"
    )
    router = sub.add_parser("router", help="run only the router of an app (long-lived)")
    router.add_argument("app", metavar="MODULE:APP")
    router.add_argument("--bootstrap-servers")
    work = sub.add_parser("worker", help="run task workers of an app (long-lived)")
    work.add_argument("app", metavar="MODULE:APP")
    work.add_argument("--bootstrap-servers")
    work.add_argument("--task-types", help="comma-separated; default: every task type")
    work.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from procession._demo import main as demo_main  # noqa: PLC0415 - keeps --help fast

        return demo_main(args.bootstrap_servers)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    app = load_app(args.app)
    servers = _servers(args)
    if args.command == "topics":
        return asyncio.run(_create_topics(app, servers))
    return asyncio.run(_run_until_signal(app, servers, args.command, args))


if __name__ == "__main__":
    sys.exit(main())
