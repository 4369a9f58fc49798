"""A throwaway PostgreSQL server on 127.0.0.1 for the DBOS run.

Uses the PostgreSQL binaries on this machine (``initdb`` on PATH or under
``/usr/lib/postgresql/*/bin``); installs Debian's ``postgresql`` package with
apt-get when there are none. The cluster lives in a temporary directory and
is removed when the context ends. PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        print("postgres: no PostgreSQL binaries; installing Debian's postgresql (once)")
        apt = ["apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*apt[:1], "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run([*apt, "install", "postgresql"], check=True, env=env, capture_output=True)
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("no PostgreSQL binaries and apt-get did not provide them")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def version() -> str:
    out = subprocess.run(
        [_bindir() / "postgres", "--version"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().removeprefix("postgres (PostgreSQL) ")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Start a fresh cluster; yield its URL (user ``bench``, trust auth on loopback)."""
    bindir, port = _bindir(), _free_port()
    root = tempfile.mkdtemp(prefix="procession-pg-")
    data = Path(root) / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    try:
        subprocess.run(
            [*as_user, bindir / "initdb", "-D", data, "-U", "bench", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        log = Path(root) / "server.log"
        subprocess.run(
            [
                *as_user,
                bindir / "pg_ctl",
                "-D",
                data,
                "-l",
                log,
                "-w",
                "start",
                "-o",
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
                " -c max_connections=200",
            ],
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql://bench@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_user, bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
