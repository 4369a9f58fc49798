"""Authenticated connections on a real broker: a listener that requires
SASL/PLAIN (``scripts/kafka-local`` with ``KAFKA_SASL_PORT``; ``./dev test``
starts its broker so and sets ``KAFKA_SASL_BOOTSTRAP_SERVERS``)."""

from __future__ import annotations

import os

import pytest

from procession.examples import RebaseFailed, rebase_saga
from procession.workers import App, Runtime
from procession.workers._kafka import KafkaTransport
from procession.workers._kafka_security import options, rdkafka_options
from procession.workers._rdkafka import RdKafkaTransport
from tests.conftest import KAFKA_BACKENDS, Backend
from tests.test_cli import cli

USER = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "procession"}


def sasl_servers() -> str:
    servers = os.environ.get("KAFKA_SASL_BOOTSTRAP_SERVERS")
    if servers:
        return servers
    if os.environ.get("CI") == "true":
        pytest.fail("KAFKA_SASL_BOOTSTRAP_SERVERS is unset: ./dev test starts a broker with it")
    pytest.skip("no broker with a SASL listener (KAFKA_SASL_BOOTSTRAP_SERVERS)")


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_saga_runs_end_to_end_over_an_authenticated_connection(backend: Backend) -> None:
    servers = sasl_servers()
    env = {**USER, "KAFKA_SASL_PASSWORD": "procession-secret"}
    transport = (
        KafkaTransport(servers, security=options(env))
        if backend.name == "kafka"
        else RdKafkaTransport(servers, security=rdkafka_options(env))
    )
    app = App(
        [rebase_saga()],
        {"CloseInstance": lambda call: {"closed": True}},
        topics=backend.topics(),
    )
    try:
        async with Runtime(app, transport) as rt:  # transactions, groups, admin: all over SASL
            await rt.publish(RebaseFailed(rebase_id="sasl", instances=["A", "B"]))
            state = await rt.wait("rebase:sasl", timeout_s=60)
    finally:
        await transport.close()
    assert state is not None and state.status == "completed"


@pytest.mark.parametrize(
    ("client", "refusal"),
    [
        ("aiokafka", "SaslAuthenticationFailed"),
        ("librdkafka", "SASL authentication error: Authentication failed"),
    ],
)
def test_refused_credentials_are_named_in_one_line_and_exit_1(client: str, refusal: str) -> None:
    servers = sasl_servers()
    out = cli(
        "topics",
        "check",
        "tests.kafka_app:app",
        "--bootstrap-servers",
        servers,
        env={**USER, "KAFKA_SASL_PASSWORD": "not-the-password", "PROCESSION_KAFKA_CLIENT": client},
    )
    assert out.returncode == 1, out.stderr
    lines = [line for line in out.stderr.splitlines() if "in the clear" not in line]  # aiokafka's
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"procession: cannot reach Kafka at {servers} (it refused")
    assert refusal in lines[0] and "KAFKA_SASL_USERNAME=procession" in lines[0]
    assert "not-the-password" not in out.stderr
