"""One incident, end to end on a broker, with the operator's commands and their
output, timed (docs/operations.md shows a run).

1. A handler bug fails the task of 100 processes (retryable, next try in minutes).
2. ``procession stuck`` finds them and says what they wait for.
3. The fix is deployed (the worker restarted without the bug).
4. ``procession retry`` runs their next attempt now; all 100 complete.
5. The changelog is lost (deleted, created again): the processor refuses to
   start; ``procession recover`` rebuilds it; the processes stay completed,
   and no task ran more than it should.

KAFKA_BOOTSTRAP_SERVERS=... python -m benchmarks.incident
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from procession.examples import rebase_saga
from procession.topics._layout import Topics
from procession.workers import App, TaskCall

N = int(os.environ.get("INCIDENT_N", "100"))
ROOT = Path(__file__).parent.parent


def close(call: TaskCall) -> dict[str, Any]:
    with open(os.environ["INCIDENT_LOG"], "a") as f:
        f.write(f"{call.task_id} {call.attempt}\n")
    if os.environ.get("INCIDENT_BUG") == "1":
        raise KeyError("instance_id")  # the bug: a renamed payload field
    return {"closed": call.payload["instance"]}


def app() -> App:
    topics = Topics(os.environ.get("BENCH_PREFIX", "incident"), partitions=3, task_partitions=3)
    return App([rebase_saga(backoff=timedelta(hours=1))], {"CloseInstance": close}, topics=topics)


class Run:
    def __init__(self, servers: str) -> None:
        self.servers = servers
        self.prefix = f"incident-{uuid.uuid4().hex[:6]}"
        self.log = Path(tempfile.mkdtemp()) / "calls.txt"
        self.log.touch()
        self.env = {
            **os.environ,
            "BENCH_PREFIX": self.prefix,
            "INCIDENT_LOG": str(self.log),
            "KAFKA_BOOTSTRAP_SERVERS": servers,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.t0 = time.monotonic()

    def cli(
        self, *args: str, show: bool = True, lines: int = 6
    ) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "procession._cli", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        took = time.monotonic() - start
        if show:
            shown = " ".join(a if " " not in a else f"'{a}'" for a in args)
            print(f"$ procession {shown}    # {took:.1f} s, exit {out.returncode}")
            text = (out.stdout + out.stderr).strip().splitlines()
            for line in text[:lines]:
                print(f"  {line[:150]}")
            if len(text) > lines:
                print(f"  … ({len(text) - lines} more lines)")
        return out

    def spawn(self, role: str, bug: bool) -> None:
        env = {**self.env, "INCIDENT_BUG": "1" if bug else "0"}
        self.procs[role] = subprocess.Popen(
            [sys.executable, "-m", "procession._cli", "--log-level", "ERROR", role,
             "benchmarks.incident:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, role: str) -> None:
        proc = self.procs.pop(role)
        proc.terminate()
        proc.wait(30)

    def step(self, text: str) -> None:
        print(f"\n[{time.monotonic() - self.t0:6.1f} s] {text}")

    async def wait_for(self, what: str, check: Any, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not happen within {timeout_s:g} s")
            await asyncio.sleep(0.5)

    def count(self, status: str) -> int:
        out = self.cli("ps", "benchmarks.incident:app", "--status", status, show=False)
        return max(0, len(out.stdout.splitlines()) - 2)


async def main() -> int:
    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    run = Run(servers)
    try:
        await incident(run)
    finally:
        for role in list(run.procs):
            run.stop(role)
    return 0


async def incident(run: Run) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    run.step("topics, a processor and a worker with the bug")
    run.cli("topics", "create", "benchmarks.incident:app", lines=1)
    run.spawn("processor", bug=False)
    run.spawn("worker", bug=True)
    producer = AIOKafkaProducer(bootstrap_servers=run.servers)
    await producer.start()
    try:
        for i in range(N):
            await producer.send(
                f"{run.prefix}.events",
                f'{{"rebase_id": "r{i}", "instances": ["A"]}}'.encode(),
                key=f"r{i}".encode(),
                headers=[("procession-type", b"RebaseFailed"), ("event-id", f"evt-{i}".encode())],
            )
        await producer.flush()
    finally:
        await producer.stop()
    run.step(f"{N} rebases published; their CloseInstance fails (KeyError), next try in minutes")
    await run.wait_for(f"{N} failed attempts", lambda: _calls(run) >= N)
    found = time.monotonic()
    run.step("the operator looks for stuck processes")
    run.cli("stuck", "benchmarks.incident:app", "--older-than", "0s", lines=3)
    run.cli("show", "benchmarks.incident:app", "rebase:r0", lines=8)
    run.step("the fix is deployed: the worker restarts without the bug")
    run.stop("worker")
    run.spawn("worker", bug=False)
    ids = run.cli("stuck", "benchmarks.incident:app", "--older-than", "0s", "--ids", show=False)
    pids = ids.stdout.split()
    run.cli(
        "retry", "benchmarks.incident:app", *pids, "--reason", "KeyError fixed", "--by", "oncall",
        lines=2,
    )  # fmt: skip
    await run.wait_for(f"{N} completed", lambda: run.count("completed") == N)
    run.step(f"all {N} completed, {time.monotonic() - found:.1f} s after the first look")
    listed = run.cli("ps", "benchmarks.incident:app", show=False)
    print(f"$ procession ps benchmarks.incident:app\n  … {listed.stdout.splitlines()[-1]}")

    run.step("the changelog is lost: deleted and created again while the processor is down")
    run.stop("processor")
    await _recreate_changelog(run)
    refused = run.cli("--log-level", "ERROR", "processor", "benchmarks.incident:app", show=False)
    print(f"$ procession processor benchmarks.incident:app    # exit {refused.returncode}")
    for line in refused.stderr.strip().splitlines()[-2:]:
        print(f"  {line[:400]}")
    run.cli("recover", "benchmarks.incident:app", lines=3)
    run.spawn("processor", bug=False)
    producer = AIOKafkaProducer(bootstrap_servers=run.servers)
    await producer.start()
    try:  # a redelivered event of a finished process, and a new one
        for i in (0, N):
            await producer.send_and_wait(
                f"{run.prefix}.events",
                f'{{"rebase_id": "r{i}", "instances": ["A"]}}'.encode(),
                key=f"r{i}".encode(),
                headers=[("procession-type", b"RebaseFailed"), ("event-id", f"evt-{i}".encode())],
            )
    finally:
        await producer.stop()
    await run.wait_for("the new one completed", lambda: run.count("completed") == N + 1, 60)
    calls = Counter(line.split()[0] for line in run.log.read_text().splitlines())
    run.step(
        f"after recover: {run.count('completed')} completed (the redelivered r0 ignored, a "
        f"new r{N} done); CloseInstance ran {sum(calls.values())} times for {len(calls)} "
        "tasks: each failed task twice (the bug, the retry), the new one once"
    )


def _calls(run: Run) -> int:
    return len(run.log.read_text().splitlines())


async def _recreate_changelog(run: Run) -> None:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    from procession.workers._kafka import KafkaTransport  # noqa: PLC0415

    topic = f"{run.prefix}.changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=run.servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        deadline = time.monotonic() + 30
        while topic in await admin.list_topics() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    the_app = App([rebase_saga()], {"CloseInstance": close}, topics=Topics(run.prefix, 3, 3))
    transport = KafkaTransport(run.servers)
    try:
        specs = [s for s in the_app.topics.specs(the_app.task_types()) if s.name == topic]
        await transport.create_topics(specs)
    finally:
        await transport.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
