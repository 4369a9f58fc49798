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
from dataclasses import dataclass
from typing import Any

from procession._errors import SettingError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettingError(SettingError):
    """A Kafka connection setting that cannot work."""


@dataclass(frozen=True)
class Settings:
    """The ``KAFKA_*`` settings, checked; either client's options are made from them."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    user: str | None = None
    password: str | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def named(self) -> str:
        """The settings in a message (never the password).

        Example:
            >>> Settings("SASL_SSL", "PLAIN", "svc", "pw").named()
            'KAFKA_SECURITY_PROTOCOL=SASL_SSL, KAFKA_SASL_USERNAME=svc'
        """
        user = f", KAFKA_SASL_USERNAME={self.user}" if self.user else ""
        return f"KAFKA_SECURITY_PROTOCOL={self.protocol}{user}"


def refused(why: str, used: Settings) -> str:
    """A cluster's refusal of ``used``, as a reason the cluster was not reached.

    Example:
        >>> refused("SSL handshake failed", Settings("SSL"))
        'it refused the connection: SSL handshake failed (KAFKA_SECURITY_PROTOCOL=SSL)'
    """
    return f"it refused the connection: {why} ({used.named()})"


def settings(env: Mapping[str, str] = os.environ) -> Settings:
    """The ``KAFKA_*`` settings of ``env``, checked; raises
    :class:`KafkaSettingError` naming one that cannot work."""
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
        return Settings()
    mechanism = user = password = None
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
    if not protocol.endswith("SSL"):
        if tls_files:
            raise KafkaSettingError(f"{tls_files[0]} is set but {protocol} does not use TLS")
        return Settings(protocol, mechanism, user, password)
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
    return Settings(protocol, mechanism, user, password, cafile, certfile, keyfile)


def options(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The aiokafka client options the environment's ``KAFKA_*`` settings ask for
    (none for plaintext); raises :class:`KafkaSettingError` naming the setting."""
    s = settings(env)
    if s.protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": s.protocol}
    if s.mechanism is not None:
        out.update(sasl_mechanism=s.mechanism, sasl_plain_username=s.user)
        out["sasl_plain_password"] = s.password
    if s.protocol.endswith("SSL"):
        out["ssl_context"] = _ssl_context(s)
    return out


def _ssl_context(s: Settings) -> Any:
    from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 - the kafka extra

    try:
        return create_ssl_context(cafile=s.cafile, certfile=s.certfile, keyfile=s.keyfile)
    except (OSError, ValueError) as exc:
        raise KafkaSettingError(f"the TLS settings cannot be loaded: {exc}") from exc


def rdkafka_options(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The same settings as librdkafka configuration properties (checked as
    :func:`options` checks them, without aiokafka).

    Example:
        >>> rdkafka_options({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        ...     "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})["sasl.username"]
        'u'
    """
    s = settings(env)
    if s.protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security.protocol": s.protocol}
    if s.mechanism is not None:
        out["sasl.mechanism"] = s.mechanism
        out["sasl.username"] = s.user
        out["sasl.password"] = s.password
    for prop, path in (
        ("ssl.ca.location", s.cafile),
        ("ssl.certificate.location", s.certfile),
        ("ssl.key.location", s.keyfile),
    ):
        if path:
            out[prop] = path
    return out
