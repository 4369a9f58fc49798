"""How the processor writes an input's decisions: batched, in order, under the limits."""

from __future__ import annotations

import pytest

from procession._errors import UnwritableError
from procession.topics import DEFAULT_CODEC, ProcessStarted, TransitionPlanned
from procession.topics._layout import Topics
from procession.workers._writes import BATCH_BYTES, decision_records

TOPICS = Topics("w")
LIMITS = {TOPICS.process: 1_048_588, TOPICS.tasks("Close"): 1_048_588}


def fan_out(n: int, payload: int = 200) -> list[ProcessStarted | TransitionPlanned]:
    common = {"process_id": "p", "correlation_id": "p", "causation_id": "e", "seq": 1}
    start = ProcessStarted(event_id="d0", saga="s", version=1, machines={}, **common)
    return [start] + [
        TransitionPlanned(
            event_id=f"d{i}",
            machine_id=f"m:{i}",
            transition="go",
            from_state="A",
            to_state="B",
            task_type="Close",
            mode="async",
            task_id=f"t{i}",
            payload={"x": "y" * payload},
            **common,
        )
        for i in range(1, n + 1)
    ]


def test_a_big_fan_out_is_written_as_several_batches_in_order_and_each_task_once() -> None:
    decisions = fan_out(2_000)
    out = decision_records("p", decisions, TOPICS, DEFAULT_CODEC, LIMITS)
    process = [o for o in out if o.topic == TOPICS.process]
    tasks = [o for o in out if o.topic == TOPICS.tasks("Close")]
    assert 2 < len(process) < 20
    assert all(len(o.value or b"") <= BATCH_BYTES + 200 for o in process)
    assert [r for o in process for r in DEFAULT_CODEC.decode_all(o.value or b"")] == decisions
    assert [DEFAULT_CODEC.decode(o.value or b"") for o in tasks] == decisions[1:]
    assert all(o.headers[0] == ("procession-type", b"procession.Decisions") for o in process)


def test_a_decision_bigger_than_a_batch_goes_alone_and_one_too_big_for_the_topic_is_refused() -> (
    None
):
    decisions = fan_out(3, payload=BATCH_BYTES)
    out = decision_records("p", decisions, TOPICS, DEFAULT_CODEC, LIMITS)
    process = [o for o in out if o.topic == TOPICS.process]
    assert [o.headers[0][1] for o in process] == [b"procession.ProcessStarted"] + [
        b"procession.TransitionPlanned"
    ] * 3
    with pytest.raises(UnwritableError, match=r"max\.message\.bytes"):
        decision_records("p", fan_out(2, payload=2_000_000), TOPICS, DEFAULT_CODEC, LIMITS)


def test_without_batches_every_decision_is_its_own_record() -> None:
    decisions = fan_out(3)
    out = decision_records("p", decisions, TOPICS, DEFAULT_CODEC, LIMITS, batch=False)
    process = [o for o in out if o.topic == TOPICS.process]
    assert [DEFAULT_CODEC.decode(o.value or b"") for o in process] == decisions


def test_batches_stay_under_a_process_topic_limit_below_the_batch_size() -> None:
    limit = 20_000  # below BATCH_BYTES: each decision fits, a 64 KiB batch would not
    limits = {TOPICS.process: limit, TOPICS.tasks("Close"): limit}
    decisions = fan_out(100)
    out = decision_records("p", decisions, TOPICS, DEFAULT_CODEC, limits)
    process = [o for o in out if o.topic == TOPICS.process]
    assert len(process) > 2 and all(o.size() <= limit for o in process)
    assert [r for o in process for r in DEFAULT_CODEC.decode_all(o.value or b"")] == decisions
