"""Kafka connection settings from the environment: what each asks aiokafka for,
and a precise refusal for each that cannot work."""

from __future__ import annotations

import re
import ssl
import sys

import pytest

from procession.workers._kafka_client import kafka_transport
from procession.workers._kafka_security import KafkaSettingError, options


def test_plaintext_asks_for_nothing() -> None:
    assert options({}) == {} and options({"KAFKA_SECURITY_PROTOCOL": "plaintext"}) == {}


def test_sasl_gives_the_mechanism_and_credentials() -> None:
    got = options(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "pw",
        }
    )
    assert got == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }


def test_tls_builds_a_context_from_the_ca_bundle() -> None:
    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    got = options({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": ca})
    assert got["security_protocol"] == "SSL"
    assert isinstance(got["ssl_context"], ssl.SSLContext)
    assert got["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            },
            "KAFKA_SASL_MECHANISM='GSSAPI' is not one of",
        ),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such file",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/etc/hostname"},
            "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(env: dict[str, str], expected: str) -> None:
    with pytest.raises(KafkaSettingError, match="^" + re.escape(expected)):
        options(env)


def test_a_bad_setting_stops_a_command_with_one_line_and_exit_1() -> None:
    from tests.test_cli import cli, one_line_error  # noqa: PLC0415

    out = cli(
        "worker",
        "tests.kafka_app:app",
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_SECURITY_PROTOCOL": "TLS"},
    )
    one_line_error(out, 1, "KAFKA_SECURITY_PROTOCOL='TLS' is not one of")


def test_a_kafka_client_not_installed_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails, as uninstalled
    for loaded in ("_rdkafka", "_rdkafka_consumer", "_rdkafka_producer"):
        monkeypatch.delitem(sys.modules, f"procession.workers.{loaded}", raising=False)
    monkeypatch.delenv("PROCESSION_KAFKA_CLIENT", raising=False)  # the default: librdkafka
    with pytest.raises(KafkaSettingError) as caught:
        kafka_transport("127.0.0.1:9092")
    assert str(caught.value) == (
        "the librdkafka Kafka client is not installed (confluent_kafka is missing): "
        "pip install 'procession[rdkafka]', or set PROCESSION_KAFKA_CLIENT=aiokafka"
    )
