"""Which Kafka client a process uses: ``PROCESSION_KAFKA_CLIENT``.

- ``librdkafka`` (the default, the ``rdkafka`` extra): ``RdKafkaTransport``,
  exactly-once v2, static membership, cooperative rebalancing.
- ``aiokafka`` (the ``kafka`` extra): ``KafkaTransport``, exactly-once v1,
  pure Python.

Both pass the same transport contract and behavioural suites on a real
broker; ``docs/benchmarks.md`` compares them.

Example:
    >>> client({"PROCESSION_KAFKA_CLIENT": "aiokafka"})
    'aiokafka'
    >>> client({"PROCESSION_KAFKA_CLIENT": "kafka-python"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    procession...KafkaSettingError: PROCESSION_KAFKA_CLIENT='kafka-python' is not one of ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._kafka_security import KafkaSettingError

if TYPE_CHECKING:
    from ._kafka import KafkaTransport
    from ._rdkafka import RdKafkaTransport

CLIENTS = ("librdkafka", "aiokafka")


def client(env: Mapping[str, str] = os.environ) -> str:
    """The client ``PROCESSION_KAFKA_CLIENT`` names (default: librdkafka)."""
    name = env.get("PROCESSION_KAFKA_CLIENT", "").strip().lower() or CLIENTS[0]
    if name not in CLIENTS:
        raise KafkaSettingError(
            f"PROCESSION_KAFKA_CLIENT={name!r} is not one of {', '.join(CLIENTS)}"
        )
    return name


def kafka_transport(
    bootstrap_servers: str, name: str | None = None
) -> KafkaTransport | RdKafkaTransport:
    """A transport to ``bootstrap_servers`` on the client ``name`` (default: :func:`client`)."""
    chosen = name or client()
    extra = "kafka" if chosen == "aiokafka" else "rdkafka"
    try:
        if chosen == "aiokafka":
            from ._kafka import KafkaTransport  # noqa: PLC0415 - the kafka extra

            return KafkaTransport(bootstrap_servers)
        from ._rdkafka import RdKafkaTransport  # noqa: PLC0415 - the rdkafka extra

        return RdKafkaTransport(bootstrap_servers)
    except ImportError as exc:
        other = "aiokafka" if chosen == "librdkafka" else "librdkafka"
        raise KafkaSettingError(
            f"the {chosen} Kafka client is not installed ({exc.name} is missing): "
            f"pip install 'procession[{extra}]', or set PROCESSION_KAFKA_CLIENT={other}"
        ) from exc
