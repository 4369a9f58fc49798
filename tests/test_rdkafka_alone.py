"""The ``rdkafka`` extra alone: with aiokafka not installed, the default Kafka
client does everything, admin requests and the CLI's included."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Backend, kafka_servers
from tests.test_cli import ROOT

_CODE = """
import asyncio, os, sys
sys.modules["aiokafka"] = None  # not installed: importing it fails
from procession._cli import main
from procession._demo import run_demo
from procession.workers._kafka_client import kafka_transport

servers = sys.argv[1]
for command in ("create", "check"):
    code = main(["topics", command, "tests.kafka_app:app", "--bootstrap-servers", servers])
    assert code == 0, (command, code)

async def demo() -> str:
    transport = kafka_transport(servers)  # the default client
    try:
        return await run_demo(transport, rebase_id=os.environ["PROCESSION_TEST_PREFIX"])
    finally:
        await transport.close()

report = asyncio.run(demo())
assert "status: completed" in report, report
loaded = sorted(m for m, mod in sys.modules.items() if m.startswith("aiokafka") and mod)
print("loaded:", loaded)
"""


@pytest.mark.backends("rdkafka")
def test_the_default_client_runs_without_aiokafka(backend: Backend) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CODE, kafka_servers()],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PROCESSION_TEST_PREFIX": backend.prefix},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-1] == "loaded: []", out.stdout
