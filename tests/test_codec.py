"""orjson encoding of every record type, schema versions and upcasting."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import ClassVar

import orjson
import pytest

from procession import DecodeError
from procession._values import value
from procession.examples import order_saga
from procession.sagas import ProcessState, fold
from procession.testing import SagaTest
from procession.topics import DEFAULT_CODEC, Codec, TaskFailed, TimerFired
from procession.topics._records import RECORD_TYPES
from procession.workers._wire import encode_state, state_of
from tests.records import task_request
from tests.sagas import Deploy, deploy_saga


def rich_history() -> list:  # type: ignore[type-arg]
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d", regions=["a", "b"]))
    t.when(t.complete("region:a", result={"url": "https://a"}))
    t.when(t.fail("region:b", "nope", retryable=False))
    t.when(t.complete("region:a"))
    t.when(t.cancel())
    return t.history


def test_every_record_in_a_history_round_trips() -> None:
    codec = Codec()
    history = rich_history()
    assert len({type(r) for r in history}) >= 8
    for rec in history:
        assert codec.decode(codec.encode(rec)) == rec


def test_every_record_type_is_registered_once() -> None:
    assert len(RECORD_TYPES) == 21
    assert all(name.startswith("procession.") for name in RECORD_TYPES)


def test_headers_carry_ids() -> None:
    rec = rich_history()[1]
    headers = dict(Codec().headers(rec))
    assert headers["event-id"] == rec.event_id.encode()
    assert headers["causation-id"] == rec.causation_id.encode()
    assert headers["procession-type"] == b"procession.ProcessStarted"
    version, trace, span, flags = headers["traceparent"].decode().split("-")
    assert (version, flags, len(trace), len(span)) == ("00", "01", 32, 16)
    later = dict(Codec().headers(rich_history()[-1]))
    assert later["traceparent"].split(b"-")[1] == trace.encode()  # one trace per process


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"type": "procession.Nope"}', "unknown record type 'procession.Nope'"),
        (b'{"type": "procession.ProcessCompleted", "v": 9}', "schema version 9 is newer"),
        (b'{"type": "procession.ProcessCompleted", "v": 1, "event_id": "e"}', "missing"),
    ],
)
def test_bad_bytes_get_a_precise_error(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Codec().decode(raw)


def test_old_versions_are_upcast() -> None:
    @value(kw_only=True)
    class TaskFailedV2(TaskFailed):
        VERSION: ClassVar[int] = 2

    codec = Codec()
    calls = []

    @codec.upcaster("procession.TaskFailed", 1)
    def _(body: dict) -> dict:  # type: ignore[type-arg]
        calls.append(body)
        return {**body, "reason": body["reason"].upper()}

    old = (
        b'{"type":"procession.TaskFailed","v":1,"event_id":"e","process_id":"p",'
        b'"correlation_id":"c","machine_id":"m","task_id":"t","task_type":"T",'
        b'"attempt":1,"reason":"boom"}'
    )
    RECORD_TYPES["procession.TaskFailed"] = TaskFailedV2
    try:
        rec = codec.decode(old)
        with pytest.raises(DecodeError, match="no upcaster from version 1"):
            Codec().decode(old)
    finally:
        RECORD_TYPES["procession.TaskFailed"] = TaskFailed
    assert rec.reason == "BOOM" and len(calls) == 1  # type: ignore[attr-defined]


def test_process_state_round_trips_through_the_changelog_encoding() -> None:
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d", regions=["a", "b"]))
    t.when(t.complete("region:a", result={"x": 1}))
    state = t.state
    assert isinstance(state, ProcessState) and state.timers and state.seen
    assert state_of(encode_state(state)) == state


def test_fields_a_newer_writer_added_are_ignored() -> None:
    raw = (
        b'{"type":"procession.TaskFailed","v":1,"event_id":"e","process_id":"p",'
        b'"correlation_id":"c","machine_id":"m","task_id":"t","task_type":"T",'
        b'"attempt":1,"reason":"boom","host":"worker-7"}'
    )
    rec = Codec().decode(raw)
    assert isinstance(rec, TaskFailed) and rec.reason == "boom"


def test_a_changelog_written_by_schema_1_restores_to_the_state_its_history_folds_to() -> None:
    fixture = json.loads(
        (Path(__file__).parent / "fixtures" / "changelog-schema1-order.json").read_text()
    )
    codec = Codec()
    history = [codec.decode(line.encode()) for line in fixture["history"]]
    restored = state_of(fixture["state"].encode())
    assert isinstance(restored, ProcessState) and restored.timers and restored.machines
    assert restored == fold(history)
    again = orjson.loads(encode_state(restored) or b"")
    assert again["state"]["v"] == 2 and state_of(encode_state(restored)) == restored
    # it decides on: the payment's retry fires and is planned again
    saga = order_saga()
    (timer_id,) = [tid for tid, t in restored.timers.items() if t.purpose == "retry"]
    due = restored.timers[timer_id].due_ms
    fired = TimerFired(
        event_id="f",
        process_id=restored.process_id,
        correlation_id=restored.correlation_id,
        time_ms=due,
        timer_id=timer_id,
        due_ms=due,
    )
    kinds = [type(d).__name__ for d in saga.decide(restored, fired)]
    assert kinds[0] == "TransitionPlanned"


def test_a_changelog_of_a_newer_schema_is_refused_with_what_to_do() -> None:
    value = orjson.dumps({"state": {"v": 3, "process_id": "p"}})
    with pytest.raises(DecodeError, match=r"changelog schema 3 is newer .* reads \(2\)"):
        state_of(value)


def test_encoding_is_the_fields_in_order_then_type_and_version() -> None:
    import glob  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    codec, seen = Codec(), set()
    for path in glob.glob(str(Path(__file__).parent / "fixtures" / "histories" / "*.jsonl")):
        for line in Path(path).read_text().splitlines():
            rec = codec.decode(line.encode())
            body = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
            assert codec.encode(rec) == orjson.dumps({**body, "type": rec.TYPE, "v": rec.VERSION})
            seen.add(type(rec))
    assert len(seen) >= 8  # the fixtures cover most record types


def _batch_of(*bodies: bytes) -> bytes:
    return b'{"type":"procession.Decisions","v":1,"records":[' + b",".join(bodies) + b"]}"


_IDS = b'"event_id":"e","process_id":"p","correlation_id":"c",'
_DONE = b"{" + _IDS + b'"seq":3,"type":"procession.ProcessCompleted","v":1}'
_INPUT = b"{" + _IDS + b'"timer_id":"x","due_ms":0,"type":"procession.TimerFired","v":1}'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_batch_of(), "a batch without records"),
        (b'{"type":"procession.Decisions","v":1}', "a batch without records"),
        (_batch_of(b"[1]"), "record 0 of the batch is not a record"),
        (_batch_of(_DONE, _batch_of(_DONE)), "record 1 of the batch is not a record"),
        (_batch_of(_DONE, _INPUT), "record 1 of the batch is an input"),
        (_batch_of(_DONE, _DONE.replace(b'"p"', b'"q"')), "record 1 of the batch is another"),
        (_batch_of(_DONE, b'{"type":"procession.Nope"}'), "unknown record type"),
    ],
)
def test_a_bad_batch_gets_a_precise_error(raw: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Codec().decode_all(raw)


def test_a_batch_is_not_read_as_one_record_and_one_record_is_a_batch_of_one() -> None:
    codec = Codec()
    with pytest.raises(DecodeError, match="a batch of decisions, not one record"):
        codec.decode(_batch_of(_DONE, _DONE))
    assert codec.decode_all(_DONE) == [codec.decode(_DONE)]
    assert codec.decode_all(_batch_of(_DONE, _DONE)) == [codec.decode(_DONE)] * 2


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("mode", "sync", "field 'mode' holds 'sync', expected one of ['inline', 'async', None]"),
        ("attempt", "1", "field 'attempt' holds str '1', expected int"),
        ("machine_id", None, "field 'machine_id' holds null, expected str"),
        ("timeout_due_ms", 1.5, "field 'timeout_due_ms' holds float 1.5, expected int or null"),
    ],
)
def test_a_field_holding_another_json_type_is_refused_naming_it(
    field: str, value: object, why: str
) -> None:
    body = {**orjson.loads(DEFAULT_CODEC.encode(task_request())), field: value}
    with pytest.raises(DecodeError, match=re.escape(why)):
        DEFAULT_CODEC.decode(orjson.dumps(body))
