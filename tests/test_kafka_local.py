"""scripts/kafka-local reads its options strictly: a mistyped one starts nothing."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "kafka-local"


@pytest.fixture
def guarded(tmp_path: Path) -> dict[str, str]:
    """An environment where java and mvn only leave a mark, and the home is empty."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("java", "mvn"):
        fake = bin_dir / tool
        fake.write_text(f'#!/bin/sh\ntouch "{tmp_path}/{tool}-was-run"\nexit 1\n')
        fake.chmod(0o755)
    (tmp_path / "home").mkdir()
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "KAFKA_LOCAL_HOME": str(tmp_path / "home"),
        "KAFKA_PORT": "19092",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["start", "--bogus"], "unknown option --bogus"),
        (["start", "--port"], "--port needs a value"),
        (["start", "--data-dir"], "--data-dir needs a value"),
        (["start", "--version", "--port", "1"], "--version needs a value"),
        (["start", "--port="], "--port needs a value"),
        (["start", "--port", "kafka"], "the port must be a number"),
        (["begin"], "unknown command begin"),
    ],
)
def test_a_bad_option_is_one_line_exit_2_and_starts_nothing(
    guarded: dict[str, str], tmp_path: Path, args: list[str], says: str
) -> None:
    out = run(guarded, *args)
    assert out.returncode == 2, out
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    assert not list(tmp_path.glob("*-was-run"))
    assert not list((tmp_path / "home").iterdir())


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({}, [], "3.9.1"),
        ({"KAFKA_VERSION": "4.4.0"}, [], "4.4.0"),
        ({"KAFKA_VERSION": "4.4.0"}, ["--version", "4.1.0"], "4.1.0"),
    ],
)
def test_version_says_the_release_start_would_run_and_runs_nothing(
    guarded: dict[str, str], tmp_path: Path, env: dict[str, str], args: list[str], says: str
) -> None:
    """What ./dev's benchmarks name in their stamps: the option, else the variable,
    else the default."""
    base = {k: v for k, v in guarded.items() if k != "KAFKA_VERSION"}
    out = run({**base, **env}, *args, "version")
    assert (out.returncode, out.stdout, out.stderr) == (0, f"{says}\n", ""), out
    assert not list(tmp_path.glob("*-was-run"))
    assert not list((tmp_path / "home").iterdir())


def test_the_port_option_wins_over_the_environment(guarded: dict[str, str], tmp_path: Path) -> None:
    """``stop --port 5`` stops the broker whose pid file is for port 5, not KAFKA_PORT's."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reaper = threading.Thread(target=stand_in.wait)  # so the script sees it gone, not a zombie
    reaper.start()
    try:
        (tmp_path / "home" / "broker-5.pid").write_text(f"{stand_in.pid}\n")
        out = run(guarded, "stop", "--port", "5")
        assert (out.returncode, out.stdout) == (0, "kafka-local: stopped\n"), out
        reaper.join(timeout=10)
        assert stand_in.returncode == -signal.SIGTERM
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
            stand_in.wait()
    assert not (tmp_path / "home" / "broker-5.pid").exists()


def _time_wait_port() -> int:
    """A port held only by a closed connection in TIME_WAIT on the listening side,
    as a broker killed with clients connected leaves its port (its listener, as
    the JVM's, with SO_REUSEADDR, which the connection inherits)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # below the ephemeral range: no other process's outgoing connection can take
    # the port between its closing here and the script's check
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.Random().sample(range(low // 2, low), 200):
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the listening side closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    return int(port)


def test_a_port_only_closed_connections_hold_is_taken_one_another_socket_holds_is_not(
    guarded: dict[str, str], tmp_path: Path
) -> None:
    """After a kill -9 the broker's own port waits in TIME_WAIT: it must start
    there again at once (the JVM binds with SO_REUSEADDR). A port another
    socket is bound to is refused before java runs."""
    port = _time_wait_port()
    out = run(guarded, "start", "--port", str(port))
    assert "cannot be bound" not in out.stderr, out.stderr
    assert (tmp_path / "mvn-was-run").exists()  # past the port checks, on to fetching jars
    (tmp_path / "mvn-was-run").unlink()
    held = socket.socket()
    held.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers there
    try:
        out = run(guarded, "start", "--port", str(held.getsockname()[1]))
        assert out.returncode == 1
        assert "cannot be bound (another socket holds it)" in out.stderr, out.stderr
        assert not list(tmp_path.glob("*-was-run"))
    finally:
        held.close()
