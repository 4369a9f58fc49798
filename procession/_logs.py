"""Logging helpers for long-lived commands: keep a broker outage from flooding the log.

While a broker is down, aiokafka logs the same error thousands of times a
minute, and librdkafka, one line per client and connection attempt, dozens a
second. :class:`RateLimit` lets the first record of each kind through, then at
most one per interval, and says how many it held back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Seen:
    last_s: float
    suppressed: int = 0


@dataclass
class RateLimit(logging.Filter):
    """A filter passing each kind of record of some loggers at most once per ``interval_s``.

    Records are grouped by logger and unformatted message (``record.msg``), so
    ``"Unable connect to %r"`` is one template whatever the node. librdkafka's
    records all share one template (facility, client, text), so they are
    grouped by facility, client and text with its numbers left out: "Connect
    to ... failed (after 0ms ...)" is one kind per client and broker. A record
    let through after a quiet spell tells how many of its kind were dropped.
    Records of loggers outside ``prefixes`` pass untouched, and so do DEBUG
    ones (there only when asked for: ``PROCESSION_RDKAFKA_DEBUG``). It sits on handlers
    (a logger's filter would miss its children's records) and decides once per
    record, however many handlers it is on.

    Example:
        >>> limit = RateLimit(interval_s=30, now=lambda: 0.0)
        >>> def down() -> logging.LogRecord:
        ...     return logging.makeLogRecord({"name": "aiokafka.conn", "msg": "broker down"})
        >>> limit.filter(down()), limit.filter(down())
        (True, False)
    """

    interval_s: float = 30.0
    prefixes: tuple[str, ...] = ("aiokafka", "procession.rdkafka")
    now: Callable[[], float] = time.monotonic
    _seen: dict[tuple[str, ...], _Seen] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if (record.levelno or logging.INFO) < logging.INFO or not any(
            name == p or name.startswith(p + ".") for p in self.prefixes
        ):
            return True
        decided = record.__dict__.get(_DECIDED)
        if decided is None:
            decided = record.__dict__[_DECIDED] = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        key: tuple[str, ...] = (record.name, str(record.levelno), str(record.msg))
        args = record.args
        if record.msg == LIBRDKAFKA and isinstance(args, tuple) and len(args) == 3:
            key = (*key, str(args[0]), str(args[1]), _NUMBERS.sub("#", str(args[2])))
        now = self.now()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(now)
            return True
        if now - seen.last_s < self.interval_s:
            seen.suppressed += 1
            return False
        if seen.suppressed:
            record.msg = f"{record.msg} ({seen.suppressed} more like this suppressed)"
        seen.last_s, seen.suppressed = now, 0
        return True


_DECIDED = "procession_rate_limit"

#: The template of every record librdkafka logs through confluent-kafka.
LIBRDKAFKA = "%s [%s] %s"
_NUMBERS = re.compile(r"\d+")


def limit_kafka_logs(interval_s: float = 30.0) -> RateLimit:
    """Rate-limit both Kafka clients' records on every handler of the root logger;
    return the filter."""
    limit = RateLimit(interval_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    return limit
