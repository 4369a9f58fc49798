"""The chaos run's replicas: `procession processor` and `procession worker` subprocesses.

Each replica is started through the CLI, as an operator would, and logs to
its own file in the run directory (every incarnation appends, after a line
naming its pid). The fleet kills one at random and restarts it at once, and
restarts any that exited by itself, noting the exit code.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent
APP = "benchmarks.order_app:app"


def procession_command() -> list[str]:
    """The installed `procession` entry point (the one beside this interpreter)."""
    beside = Path(sys.executable).parent / "procession"
    found = str(beside) if beside.exists() else shutil.which("procession")
    if found is None:
        raise SystemExit("chaos: the `procession` command is not installed (run ./dev test once)")
    return [found]


@dataclass
class Replica:
    """One long-lived role; ``proc`` is its current incarnation."""

    name: str
    role: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)  # codes of exits it was not asked for
    reported: int = 0  # the pid whose exit was last recorded

    def exited(self) -> bool:
        """True if the current incarnation has exited; its code is recorded once."""
        if self.proc is None or self.proc.poll() is None:
            return False
        if self.reported != self.proc.pid:
            self.reported = self.proc.pid
            self.exits.append(self.proc.returncode)
            self.note(f"pid {self.proc.pid} exited with {self.proc.returncode}")
        return True

    def note(self, line: str) -> None:
        """A line of the supervisor's in the replica's own log, between its lines."""
        with self.log.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} chaos: {line}\n".encode())

    def start(self, env: dict[str, str], static: bool = False) -> None:
        """Start an incarnation. ``static``: every incarnation of a replica has
        the same instance id, as a restarted container keeps its pod's name: on
        librdkafka it is the same static group member, back without a rebalance.
        Otherwise each is a new dynamic member (the runtime's default)."""
        argv = [*procession_command(), "--log-level", "WARNING", self.role, APP]
        if static:
            env = {**env, "PROCESSION_INSTANCE_ID": f"chaos-{self.name}"}
        self.note(f"starting {self.name} ({self.starts + 1})")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.starts += 1
        self.started_at = time.monotonic()


@dataclass
class Kill:
    at_s: float
    name: str
    pid: int


class Fleet:
    """The replicas of one run, their kills and their unplanned exits."""

    def __init__(
        self,
        processors: int,
        workers: int,
        run_dir: Path,
        env: dict[str, str],
        *,
        static: bool = False,
    ) -> None:
        self.env, self.static = {**os.environ, **env}, static
        self.replicas = [
            Replica(f"processor-{i}", "processor", run_dir / f"processor-{i}.log")
            for i in range(1, processors + 1)
        ] + [
            Replica(f"worker-{i}", "worker", run_dir / f"worker-{i}.log")
            for i in range(1, workers + 1)
        ]
        self.kills: list[Kill] = []
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()
        for replica in self.replicas:
            replica.start(self.env, self.static)

    def kill_one(self, rng: random.Random) -> Kill:
        """SIGKILL a replica chosen by ``rng`` and start it again right away."""
        replica = rng.choice(self.replicas)
        assert replica.proc is not None
        pid = replica.proc.pid
        if not replica.exited():  # one that exited by itself is recorded, not killed
            replica.proc.send_signal(signal.SIGKILL)
            replica.proc.wait(timeout=10)
            replica.note(f"killed pid {pid} (SIGKILL)")
        kill = Kill(round(time.monotonic() - self.t0, 1), replica.name, pid)
        self.kills.append(kill)
        replica.start(self.env, self.static)
        return kill

    def ask_for_stacks(self, why: str, min_age_s: float = 10.0) -> None:
        """SIGUSR1 to every replica running for ``min_age_s`` (a younger one may
        not handle it yet, and would die of it): each logs its stacks."""
        for replica in self.replicas:
            proc = replica.proc
            if proc is None or proc.poll() is not None:
                continue
            if time.monotonic() - replica.started_at >= min_age_s:
                replica.note(f"SIGUSR1 ({why})")
                proc.send_signal(signal.SIGUSR1)

    def restart_exited(self, spacing_s: float = 1.0) -> list[str]:
        """Replicas that exited without being killed, started again; what happened.

        As a service manager would, it starts a replica at most once per
        ``spacing_s``, so one that cannot reach the broker does not spin.
        """
        out = []
        for replica in self.replicas:
            seen = len(replica.exits)
            if not replica.exited():
                continue
            if len(replica.exits) > seen:
                out.append(f"{replica.name} exited with {replica.exits[-1]}")
            if time.monotonic() - replica.started_at >= spacing_s:
                replica.start(self.env, self.static)
        return out

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM to every replica, then their exit codes (None: had to be killed)."""
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.terminate()
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for replica in self.replicas:
            assert replica.proc is not None
            try:
                codes[replica.name] = replica.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()
                codes[replica.name] = None
        return codes
