"""The rate limit that keeps a broker outage from flooding the log, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from procession._logs import RateLimit, limit_kafka_logs
from procession.workers._rdkafka import RdKafkaTransport


class FakeTime:
    def __init__(self) -> None:
        self.s = 1000.0

    def __call__(self) -> float:
        return self.s


def record(msg: str, *args: object, name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_first_of_a_template_passes_then_one_per_interval_with_a_count() -> None:
    clock = FakeTime()
    limit = RateLimit(interval_s=30, now=clock)
    assert limit.filter(record("Unable connect to %r", "node-1"))
    passed = []
    for second in range(1, 61):  # a minute of the same error, ten a second
        clock.s = 1000.0 + second
        for node in range(10):
            r = record("Unable connect to %r", f"node-{node}")
            if limit.filter(r):
                passed.append((second, r.getMessage()))
    assert passed == [
        (30, "Unable connect to 'node-0' (290 more like this suppressed)"),
        (60, "Unable connect to 'node-0' (299 more like this suppressed)"),
    ]


def test_each_template_and_logger_is_limited_on_its_own() -> None:
    limit = RateLimit(interval_s=30, now=FakeTime())
    assert limit.filter(record("a %s", 1))
    assert limit.filter(record("b %s", 1))
    assert limit.filter(record("a %s", 1, name="aiokafka.consumer"))
    assert not limit.filter(record("a %s", 2))


def test_a_template_quiet_for_an_interval_passes_without_a_count() -> None:
    clock = FakeTime()
    limit = RateLimit(interval_s=30, now=clock)
    assert limit.filter(record("lost %s", 1))
    clock.s += 31
    r = record("lost %s", 2)
    assert limit.filter(r)
    assert r.getMessage() == "lost 2"


def test_other_loggers_are_never_limited() -> None:
    limit = RateLimit(interval_s=30, now=FakeTime())
    assert all(limit.filter(record("stopped", name="procession.processor")) for _ in range(5))
    assert all(limit.filter(record("x", name="aiokafkaish")) for _ in range(5))


def test_a_record_seen_by_several_handlers_is_decided_once() -> None:
    limit = RateLimit(interval_s=30, now=FakeTime())
    r = record("once")
    assert limit.filter(r)
    assert limit.filter(r)  # the second handler sees the same record
    assert not limit.filter(record("once"))


def test_installed_on_the_root_handlers_it_limits_records_of_aiokafka_children(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = logging.getLogger()
    limit = limit_kafka_logs(interval_s=30)
    try:
        assert limit in caplog.handler.filters
        for _ in range(100):
            logging.getLogger("aiokafka.conn").error("Unable connect to %s", "x")
        logging.getLogger("procession.cli").error("kept")
    finally:
        for handler in root.handlers:
            handler.removeFilter(limit)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Unable connect to x", "kept"]


def test_librdkafka_records_are_limited_per_facility_client_and_text_without_numbers() -> None:
    clock = FakeTime()
    limit = RateLimit(interval_s=30, now=clock)

    def rd(client: str, text: str) -> logging.LogRecord:
        return record("%s [%s] %s", "FAIL", client, text, name="procession.rdkafka")

    refused = (
        "127.0.0.1:{}/bootstrap: Connect failed: Connection refused (after {}ms in state CONNECT)"
    )
    assert limit.filter(rd("rdkafka#consumer-1", refused.format(9092, 0)))
    assert not limit.filter(
        rd("rdkafka#consumer-1", refused.format(9092, 4))
    )  # only numbers differ
    assert limit.filter(rd("rdkafka#producer-2", refused.format(9092, 0)))  # another client
    assert limit.filter(rd("rdkafka#consumer-1", "127.0.0.1:9092/1: Disconnected"))  # another text
    clock.s += 31
    later = rd("rdkafka#consumer-1", refused.format(9092, 7))
    assert limit.filter(later)
    assert later.getMessage().endswith("(1 more like this suppressed)")
    ours = "group %s: partitions lost"  # our own records: per template, as aiokafka's
    assert limit.filter(record(ours, "g", name="procession.rdkafka"))
    assert not limit.filter(record(ours, "h", name="procession.rdkafka"))


def test_debug_records_someone_asked_for_are_never_limited() -> None:
    limit = RateLimit(interval_s=30, now=FakeTime())
    debug = [record("%s [%s] %s", "CGRPJOINSTATE", "c", "wait-join", name="procession.rdkafka")]
    debug += [record(debug[0].msg, *debug[0].args, name="procession.rdkafka") for _ in range(3)]
    for r in debug:
        r.levelno, r.levelname = logging.DEBUG, "DEBUG"
    assert all(limit.filter(r) for r in debug)
    assert limit.filter(record("%s [%s] %s", "CGRPJOINSTATE", "c", "x", name="procession.rdkafka"))
    assert not limit.filter(
        record("%s [%s] %s", "CGRPJOINSTATE", "c", "x", name="procession.rdkafka")
    )


def test_the_rdkafka_debug_variable_turns_on_librdkafka_contexts_and_their_logger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rd = logging.getLogger("procession.rdkafka")
    before = rd.level
    monkeypatch.setenv("PROCESSION_RDKAFKA_DEBUG", "cgrp,eos")
    try:
        assert RdKafkaTransport("127.0.0.1:1").config["debug"] == "cgrp,eos"
        assert rd.getEffectiveLevel() == logging.DEBUG
    finally:
        rd.setLevel(before)
    monkeypatch.delenv("PROCESSION_RDKAFKA_DEBUG")
    assert "debug" not in RdKafkaTransport("127.0.0.1:1").config
