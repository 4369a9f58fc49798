"""Chaos run: the order saga on Kafka while replicas are SIGKILLed and the broker restarts.

./dev chaos                    # 2,000 orders, 2 processors, 3 workers, a kill every 8 s
                               # and one kill -9 of the broker
./dev chaos --quick            # about 200 orders, a kill every 4 s: a smoke run
./dev chaos --seed 7 --orders 5000 --kill-every 5

Everything runs through the CLI (`procession topics create`, `procession
processor`, `procession worker`), so the script holds for any version of the
runtime. Orders are published at a steady pace by a transactional producer
here; when every process has completed (or the deadline passed) the replicas
get SIGTERM, every topic is read back read_committed, and one table says what
was duplicated, recognised, re-executed or stalled (benchmarks/chaos_audit.py).
The broker is restarted only when this run owns it (``--own-broker``, passed by
./dev chaos when it started one with scripts/kafka-local on KAFKA_PORT and
KAFKA_DATA_DIR). Logs go to .chaos/<prefix>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.chaos_audit import Audit, audit, read_topics
from benchmarks.chaos_fleet import APP, ROOT, Fleet, procession_command
from benchmarks.chaos_kafka import Broker, Completions, GroupWatch, Publisher


@dataclass
class Config:
    orders: int = 2000
    processors: int = 2
    workers: int = 3
    kill_every_s: float = 8.0
    seed: int = 1
    deadline_s: float = 600.0
    broker_restart: bool = True
    rate: float = 20.0  # orders published per second
    max_kills: int | None = None
    run_dir: Path | None = None
    static: bool = False  # replicas keep an instance id across restarts


@dataclass
class Result:
    config: Config
    prefix: str
    run_dir: Path
    audit: Audit
    seconds: float
    all_completed_s: float | None
    kills: list[str]
    unplanned_exits: list[str]
    exit_codes: dict[str, int | None]
    publish_retries: int
    broker: str
    visible_stall: tuple[float, float] = (0.0, 0.0)  # seconds, from (s after start)
    lso_block: tuple[float, int, float] = (0.0, -1, 0.0)  # seconds, partition, from
    notes: list[str] = field(default_factory=list)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # s, published, done

    @property
    def ok(self) -> bool:
        """Every order completed once, and nothing that must happen once happened
        twice: a decision, an input decided, a domain event routed, a task result
        committed."""
        a = self.audit
        return (
            a.completed == self.config.orders
            and a.completed_twice == 0
            and a.duplicated_decisions == 0
            and a.inputs_decided_twice == 0
            and a.routed_twice == 0
            and a.task_reexecutions == 0
        )


async def supervise(fleet: Fleet, cfg: Config, log: list[str]) -> None:
    """A kill every ``kill_every_s`` (seeded choice), and a restart for any replica that exits."""
    rng = random.Random(cfg.seed)
    loop = asyncio.get_running_loop()
    next_kill = loop.time() + cfg.kill_every_s
    while True:
        for line in fleet.restart_exited():
            _say(log, f"{time.monotonic() - fleet.t0:6.1f} s  {line}; started again")
        more = cfg.max_kills is None or len(fleet.kills) < cfg.max_kills
        if more and loop.time() >= next_kill:
            kill = await asyncio.to_thread(fleet.kill_one, rng)
            _say(log, f"{kill.at_s:6.1f} s  kill -9 {kill.name} (pid {kill.pid}); started again")
            next_kill += cfg.kill_every_s
        await asyncio.sleep(0.2)


def _say(log: list[str], line: str) -> None:
    log.append(line)
    print(line, flush=True)


def create_topics(env: dict[str, str], run_dir: Path) -> None:
    out = subprocess.run(
        [*procession_command(), "topics", "create", APP],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    (run_dir / "topics.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"chaos: `procession topics create` failed:\n{out.stderr[-2000:]}")


class Run:
    """One chaos run against ``servers``; ``broker`` is given when the run may restart it."""

    def __init__(self, cfg: Config, servers: str, broker: Broker | None) -> None:
        self.cfg, self.servers, self.broker = cfg, servers, broker
        self.prefix = f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}-{os.getpid()}"
        self.run_dir = cfg.run_dir or ROOT / ".chaos" / self.prefix
        self.env = {"BENCH_PREFIX": self.prefix, "KAFKA_BOOTSTRAP_SERVERS": servers}
        self.log: list[str] = []
        self.fleet = Fleet(cfg.processors, cfg.workers, self.run_dir, self.env, static=cfg.static)
        self.publisher = Publisher(servers, self.prefix)
        self.completions = Completions(servers, f"{self.prefix}.process")
        self.restart: asyncio.Future[float] | None = None
        self.restarted_at = 0.0
        self.all_completed_s: float | None = None
        self.visible_stall = (0.0, 0.0)  # seconds, from (after start)
        self.timeline: list[tuple[float, int, int]] = []
        self.t0 = 0.0
        self.broker_note = "not restarted (--no-broker-restart)"
        if cfg.broker_restart and broker is None:
            self.broker_note = "not restarted: this run does not own the broker"
            _say(self.log, "note: the broker is not restarted (KAFKA_BOOTSTRAP_SERVERS was given)")

    async def __call__(self) -> Result:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        quiet = logging.FileHandler(self.run_dir / "chaos.log")  # aiokafka's errors, not on screen
        quiet.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger().addHandler(quiet)
        try:
            return await self._run()
        finally:
            logging.getLogger().removeHandler(quiet)
            quiet.close()

    async def _run(self) -> Result:
        create_topics(self.env, self.run_dir)
        self.fleet.start()
        t0 = self.t0 = time.monotonic()
        publishing = asyncio.create_task(self.publisher.run(self.cfg.orders, self.cfg.rate))
        supervisor = asyncio.create_task(supervise(self.fleet, self.cfg, self.log))
        groups = GroupWatch(
            self.servers,
            self.run_dir / "groups.log",
            t0,
            on_stuck=lambda group: self.fleet.ask_for_stacks(f"group {group} not Stable"),
        )
        watching = asyncio.create_task(groups.run())
        try:
            await self._wait(t0, publishing)
        finally:
            for task in (supervisor, watching):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for line in groups.summary():
                _say(self.log, line)
            if self.restart is not None:  # a thread: it cannot be cancelled, only waited for
                seconds = await self.restart
                self.broker_note = (
                    f"kill -9 at {self.restarted_at:.0f} s; answering again {seconds:.1f} s later"
                )
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
            await self.completions.close()
            codes = self.fleet.stop()
        seconds = time.monotonic() - t0
        topics = await read_topics(self.servers, self.prefix)
        return self._result(audit(topics, self.prefix, int(time.time() * 1000)), seconds, codes)

    async def _wait(self, t0: float, publishing: asyncio.Task[None]) -> None:
        """Until every process completed and the broker restart is done, or the deadline."""
        cfg, last_report, seen, progress_at = self.cfg, t0, 0, 0.0
        owns = self.broker is not None and cfg.broker_restart
        while time.monotonic() - t0 < cfg.deadline_s:
            restarting = self.restart is not None and not self.restart.done()
            done = await self.completions.poll(broker_up=not restarting)
            now = time.monotonic() - t0
            if publishing.done() and publishing.exception() is not None:
                raise RuntimeError("the publisher failed") from publishing.exception()
            if owns and self.restart is None and now >= cfg.orders / cfg.rate / 2:
                _say(self.log, f"{now:6.1f} s  kill -9 the broker; start it again on its data dir")
                assert self.broker is not None
                self.restart = asyncio.ensure_future(
                    asyncio.to_thread(self.broker.kill9_and_start, self.run_dir)
                )
                self.restarted_at = now
            if done > seen or self.publisher.sent <= seen:  # progress, or nothing owed
                progress_at = now
            elif now - progress_at > self.visible_stall[0]:
                self.visible_stall = (now - progress_at, progress_at)
            seen = done
            if not self.timeline or now - self.timeline[-1][0] >= 1.0:
                self.timeline.append((round(now, 1), self.publisher.sent, done))
            if done >= cfg.orders and self.all_completed_s is None:
                self.all_completed_s = now
            owed = owns and (self.restart is None or not self.restart.done())
            if self.all_completed_s is not None and not owed:
                return
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                print(
                    f"{now:6.1f} s  {self.publisher.sent} published, {done} completed", flush=True
                )

    def _result(self, a: Audit, seconds: float, codes: dict[str, int | None]) -> Result:
        block = self.completions.longest_block
        result = Result(
            self.cfg,
            self.prefix,
            self.run_dir,
            a,
            seconds,
            self.all_completed_s,
            [f"{k.name} at {k.at_s} s" for k in self.fleet.kills],
            [
                f"{r.name} x{n} (exit {code})"
                for r in self.fleet.replicas
                for code, n in sorted(Counter(r.exits).items())
            ],
            codes,
            self.publisher.retries,
            self.broker_note,
            self.visible_stall,
            (block[0], block[1], max(0.0, block[2] - self.t0)),
            self.log,
            self.timeline,
        )
        payload = json.dumps(dataclasses.asdict(result), indent=2, default=str)
        (self.run_dir / "result.json").write_text(payload)
        return result


async def run(cfg: Config, servers: str, broker: Broker | None = None) -> Result:
    """One chaos run; see the module docstring."""
    return await Run(cfg, servers, broker)()


def table(r: Result) -> str:
    """The run's figures as a Markdown table."""
    a, c = r.audit, r.config
    kills: dict[str, int] = {}
    for k in r.kills:
        kills[k.split()[0]] = kills.get(k.split()[0], 0) + 1
    done = "never" if r.all_completed_s is None else f"{r.all_completed_s:.0f} s"
    rows = [
        ("orders published (distinct event ids)", f"{a.published:,} of {c.orders:,}"),
        ("processes started / completed", f"{a.started:,} / {a.completed:,}"),
        ("processes failed / completed twice", f"{a.failed} / {a.completed_twice}"),
        ("duplicated decisions", a.duplicated_decisions),
        ("inputs decided twice", a.inputs_decided_twice),
        ("duplicates recognised (InputIgnored 'duplicate')", a.duplicates_recognised),
        ("domain events routed twice", a.routed_twice),
        ("orders the publisher wrote twice (its retries)", a.published_twice),
        ("task re-executions (same task id + attempt)", a.task_reexecutions),
        ("dead letters", a.dead_letters),
        (
            "kills done",
            f"{len(r.kills)} ({', '.join(f'{n} x{k}' for n, k in sorted(kills.items()))})",
        ),
        ("unplanned exits (restarted)", ", ".join(r.unplanned_exits) or "none"),
        ("broker", r.broker),
        ("publisher retries", r.publish_retries),
        (
            "longest stall (record timestamps)",
            f"{a.longest_stall_s:.1f} s (from {a.longest_stall_at_s:.0f} s)",
        ),
        (
            "longest stall a read_committed reader saw",
            f"{r.visible_stall[0]:.1f} s (from {r.visible_stall[1]:.0f} s)",
        ),
        (
            "longest open-transaction block (LSO < high watermark)",
            f"{r.lso_block[0]:.1f} s (partition {r.lso_block[1]}, from {r.lso_block[2]:.0f} s)",
        ),
        ("all completed after", done),
        ("process-topic records", f"{a.process_records:,}"),
        ("exit codes after SIGTERM", ", ".join(f"{n} {c}" for n, c in r.exit_codes.items())),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, help="orders to publish (default 2,000; --quick 200)")
    parser.add_argument("--processors", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, help="seconds between kills (8; --quick 4)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the choice of victims")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for all")
    parser.add_argument("--rate", type=float, default=20.0, help="orders published per second")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument(
        "--static",
        action="store_true",
        help="each replica a static group member (PROCESSION_INSTANCE_ID kept across restarts)",
    )
    parser.add_argument(
        "--own-broker",
        action="store_true",
        help="KAFKA_PORT and KAFKA_DATA_DIR name a scripts/kafka-local broker this run may kill",
    )
    args = parser.parse_args(argv)
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        raise SystemExit("chaos: set KAFKA_BOOTSTRAP_SERVERS (./dev chaos starts a broker)")
    cfg = Config(
        orders=args.orders or (200 if args.quick else 2000),
        processors=args.processors,
        workers=args.workers,
        kill_every_s=args.kill_every or (4.0 if args.quick else 8.0),
        seed=args.seed,
        deadline_s=args.deadline,
        broker_restart=not args.no_broker_restart,
        rate=args.rate,
        static=args.static,
    )
    broker = Broker() if args.own_broker else None
    print(
        f"chaos: {cfg.orders:,} orders at {cfg.rate:g}/s; {cfg.processors} processors, "
        f"{cfg.workers} workers{' (static members)' if cfg.static else ''}; "
        f"a kill every {cfg.kill_every_s:g} s (seed {cfg.seed})",
        flush=True,
    )
    result = asyncio.run(run(cfg, servers, broker))
    print(f"\nchaos run {result.prefix} ({result.seconds:.0f} s; logs in {result.run_dir})\n")
    print(table(result))
    if not result.ok:
        print("\nchaos: FAILED: not every process completed once, or something happened twice")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
