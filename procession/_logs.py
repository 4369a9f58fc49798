"""Logging helpers for long-lived commands: keep a broker outage from flooding the log.

While a broker is down, aiokafka logs the same error thousands of times a
minute. :class:`RateLimit` lets the first record of each message template
through, then at most one per interval, and says how many it held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Seen:
    last_s: float
    suppressed: int = 0


@dataclass
class RateLimit(logging.Filter):
    """A filter passing each message template of some loggers at most once per ``interval_s``.

    Records are grouped by logger and unformatted message (``record.msg``), so
    ``"Unable connect to %r"`` is one template whatever the node. A record let
    through after a quiet spell tells how many of its kind were dropped.
    Records of loggers outside ``prefix`` pass untouched. It sits on handlers
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
    prefix: str = "aiokafka"
    now: Callable[[], float] = time.monotonic
    _seen: dict[tuple[str, int, str], _Seen] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == self.prefix or record.name.startswith(self.prefix + ".")):
            return True
        decided = record.__dict__.get(_DECIDED)
        if decided is None:
            decided = record.__dict__[_DECIDED] = self._decide(record)
        return bool(decided)

    def _decide(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
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


def limit_aiokafka(interval_s: float = 30.0) -> RateLimit:
    """Rate-limit aiokafka's records on every handler of the root logger; return the filter."""
    limit = RateLimit(interval_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    return limit
