"""How Procession's Kafka clients authenticate and encrypt, from the environment.

| variable | meaning |
| --- | --- |
| ``KAFKA_SECURITY_PROTOCOL`` | ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL`` |
| ``KAFKA_SASL_MECHANISM`` | ``PLAIN`` (default), ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` |
| ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD`` | the SASL credentials |
| ``KAFKA_SSL_CAFILE`` | CA bundle to verify the brokers (default: the system's) |
| ``KAFKA_SSL_CERTFILE``, ``KAFKA_SSL_KEYFILE`` | a client certificate (mutual TLS) |

Example:
    >>> options({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u",
    ...          "KAFKA_SASL_PASSWORD": "p"})["sasl_mechanism"]
    'PLAIN'
    >>> options({})
    {}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from procession._errors import SettingError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettingError(SettingError):
    """A Kafka connection setting that cannot work."""


def options(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The aiokafka client options the environment's ``KAFKA_*`` settings ask for
    (none for plaintext); raises :class:`KafkaSettingError` naming the setting."""
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper() or "PLAINTEXT"
    if protocol not in PROTOCOLS:
        raise KafkaSettingError(
            f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}"
        )
    tls_files = [
        k for k in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE") if env.get(k)
    ]
    if protocol == "PLAINTEXT":
        given = [
            k for k in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_MECHANISM", *tls_files) if env.get(k)
        ]
        if given:
            raise KafkaSettingError(
                f"{given[0]} is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT (set it to "
                "SASL_PLAINTEXT, SASL_SSL or SSL)"
            )
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = env.get("KAFKA_SASL_MECHANISM", "PLAIN").strip().upper() or "PLAIN"
        if mechanism not in MECHANISMS:
            raise KafkaSettingError(
                f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(MECHANISMS)}"
            )
        user, password = env.get("KAFKA_SASL_USERNAME"), env.get("KAFKA_SASL_PASSWORD")
        if not user or password is None:
            raise KafkaSettingError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        out.update(sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password)
    if protocol.endswith("SSL"):
        out["ssl_context"] = _ssl_context(env)
    elif tls_files:
        raise KafkaSettingError(f"{tls_files[0]} is set but {protocol} does not use TLS")
    return out


def _ssl_context(env: Mapping[str, str]) -> Any:
    from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - the kafka extra

    cafile, certfile, keyfile = (
        env.get("KAFKA_SSL_CAFILE") or None,
        env.get("KAFKA_SSL_CERTFILE") or None,
        env.get("KAFKA_SSL_KEYFILE") or None,
    )
    if bool(certfile) != bool(keyfile):
        raise KafkaSettingError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
    for name, path in (("KAFKA_SSL_CAFILE", cafile), ("KAFKA_SSL_CERTFILE", certfile)):
        if path and not os.path.isfile(path):
            raise KafkaSettingError(f"{name}={path!r}: no such file")
    try:
        return create_ssl_context(cafile=cafile, certfile=certfile, keyfile=keyfile)
    except (OSError, ValueError) as exc:
        raise KafkaSettingError(f"the TLS settings cannot be loaded: {exc}") from exc


def rdkafka_options(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The same settings as librdkafka configuration properties (checked as
    :func:`options` checks them).

    Example:
        >>> rdkafka_options({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        ...     "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})["sasl.username"]
        'u'
    """
    checked = options(env)
    if not checked:
        return {}
    out: dict[str, Any] = {"security.protocol": checked["security_protocol"]}
    if "sasl_mechanism" in checked:
        out["sasl.mechanism"] = checked["sasl_mechanism"]
        out["sasl.username"] = checked["sasl_plain_username"]
        out["sasl.password"] = checked["sasl_plain_password"]
    for var, prop in (
        ("KAFKA_SSL_CAFILE", "ssl.ca.location"),
        ("KAFKA_SSL_CERTFILE", "ssl.certificate.location"),
        ("KAFKA_SSL_KEYFILE", "ssl.key.location"),
    ):
        if env.get(var):
            out[prop] = env[var]
    return out
