"""The pure core through the given/when/then harness: no runtime, virtual time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from procession.examples import OrderPlaced, RebaseFailed, order_saga, rebase_saga
from procession.sagas._fold import evolve_all, fold
from procession.sagas._state import SEEN_WINDOW
from procession.testing import SagaTest, like, records_of
from procession.topics import (
    CompensationPlanned,
    InputIgnored,
    MachinesCreated,
    ProcessCancelled,
    ProcessCompleted,
    ProcessFailed,
    ProcessStarted,
    ProcessStopping,
    Record,
    TimerFired,
    TimerScheduled,
    TransitionPlanned,
)
from tests.sagas import (
    Deploy,
    InvoiceSent,
    InvoiceVoided,
    PaymentReceived,
    any_region_saga,
    deploy_saga,
    payment_saga,
)

REBASE = RebaseFailed(rebase_id="r1", instances=["A", "B", "C"])


def started_rebase() -> SagaTest:
    t = SagaTest(rebase_saga())
    t.given(REBASE)
    return t


def test_seed_scenario_plans_three_closings_and_completes_when_all_report() -> None:
    t = SagaTest(rebase_saga())
    t.when(REBASE)
    planned = [
        like(
            TransitionPlanned,
            machine_id=f"instance:{m}",
            from_state="Working",
            to_state="Closing",
            task_type="CloseInstance",
            mode="async",
            attempt=1,
            timeout_due_ms=30_000,  # the task's timeout: armed by the request itself
        )
        for m in "ABC"
    ]
    t.then(like(ProcessStarted, machines={f"instance:{m}": "Working" for m in "ABC"}), *planned)
    t.when(t.complete("instance:A"))
    t.then()
    t.when(t.complete("instance:B"))
    t.then()
    t.when(t.complete("instance:C"))
    t.then(ProcessCompleted)
    assert t.state is not None and t.state.status == "completed"
    t.assert_replays()


def test_task_ids_and_payloads_are_derived_and_stable() -> None:
    a, b = started_rebase(), started_rebase()
    ids_a = [r.task_id for r in records_of(a.history, TransitionPlanned)]  # type: ignore[attr-defined]
    ids_b = [r.task_id for r in records_of(b.history, TransitionPlanned)]  # type: ignore[attr-defined]
    assert ids_a == ids_b and len(set(ids_a)) == 3
    assert [r.event_id for r in a.history] == [r.event_id for r in b.history]
    first = records_of(a.history, TransitionPlanned)[0]
    assert first.payload == {"instance": "A", "rebase_id": "r1"}  # type: ignore[attr-defined]


def test_duplicate_event_is_recorded_as_ignored_and_decides_nothing() -> None:
    t = started_rebase()
    again = t.history[0]
    t.when(again)
    t.then(like(InputIgnored, reason="duplicate", input_id=again.event_id))


def test_late_result_after_completion_is_ignored() -> None:
    t = started_rebase()
    results = [t.complete(f"instance:{m}") for m in "ABC"]
    for r in results:
        t.when(r)
    t.then(ProcessCompleted)
    t.when(results[0])
    t.then(like(InputIgnored, reason="after completion"))


def test_result_for_a_stale_attempt_is_ignored() -> None:
    t = started_rebase()
    failed = t.fail("instance:B", "busy")
    t.when(failed)
    t.then(like(TimerScheduled, purpose="retry", machine_id="instance:B", attempt=2))
    t.advance(timedelta(seconds=1))
    t.then(like(TransitionPlanned, machine_id="instance:B", attempt=2))
    again = t.last[0]
    assert isinstance(again, TransitionPlanned) and again.timeout_due_ms == again.time_ms + 30_000
    stale = replace(failed, event_id="late-1")
    t.when(stale)
    t.then(like(InputIgnored, reason="stale attempt 1 (current attempt 2)"))


def test_a_duplicate_result_of_the_running_process_is_ignored_and_decides_once() -> None:
    """A result delivered twice (a worker's re-run, or a redelivery) while its
    process still runs: the copy is recorded as ignored, and nothing it would
    have decided happens twice."""
    t = started_rebase()
    done = t.complete("instance:A")
    t.when(done)
    t.then()
    t.when(done)  # the same record again
    t.then(like(InputIgnored, reason="task not pending (duplicate or late result)"))
    t.when(replace(done, event_id="rerun-1"))  # a second run's result, another id
    t.then(like(InputIgnored, reason="task not pending (duplicate or late result)"))
    t.when(t.complete("instance:B"))
    t.then()
    t.when(t.complete("instance:C"))
    t.then(ProcessCompleted)
    assert len(records_of(t.history, ProcessCompleted)) == 1
    t.assert_replays()


def test_a_timer_fired_twice_plans_its_retry_once() -> None:
    """A ``TimerFired`` delivered again after it fired: the timer is gone, so the
    copy is a stale timer and the retry it planned is not planned again."""
    t = started_rebase()
    t.when(t.fail("instance:A", "busy"))
    t.advance(timedelta(seconds=1))
    t.then(like(TransitionPlanned, machine_id="instance:A", attempt=2))
    fired = [r for r in t.history if isinstance(r, TimerFired)]
    assert len(fired) == 1
    t.when(fired[0])
    t.then(like(InputIgnored, reason="stale timer", input_id=fired[0].event_id))
    planned = [r for r in records_of(t.history, TransitionPlanned) if r.attempt == 2]  # type: ignore[attr-defined]
    assert len(planned) == 1


def test_a_retry_keeps_its_task_id_and_counts_its_attempt() -> None:
    """Every attempt of a task carries the same task id (a handler's idempotency
    key); only the attempt number moves."""
    t = started_rebase()
    first = next(
        r
        for r in records_of(t.history, TransitionPlanned)
        if r.machine_id == "instance:B"  # type: ignore[attr-defined]
    )
    for attempt in (2, 3):
        t.when(t.fail("instance:B", "busy"))
        t.advance(timedelta(seconds=5))
        t.then(like(TransitionPlanned, machine_id="instance:B", attempt=attempt))
        again = t.last[0]
        assert isinstance(again, TransitionPlanned) and isinstance(first, TransitionPlanned)
        assert (again.task_id, again.payload) == (first.task_id, first.payload)
        assert again.event_id != first.event_id


def test_a_domain_event_is_recognised_as_a_duplicate_within_the_seen_window_only() -> None:
    """A process remembers its latest ``SEEN_WINDOW`` accepted event ids: a copy
    within them is ignored as a duplicate, a copy of an older one is decided
    again (docs/runtime.md says so, and why the window is bounded)."""
    saga, first = rebase_saga(), started_rebase().history[0]
    state = fold(started_rebase().history)

    def decide(event: Record) -> list[Record]:
        nonlocal state
        decisions = saga.decide(state, event)
        state = evolve_all(state, [event, *decisions])
        return decisions

    duplicate = like(InputIgnored, reason="duplicate", input_id=first.event_id)
    for n in range(SEEN_WINDOW - 1):  # the rebase again under new ids: accepted, not duplicates
        assert not any(duplicate.matches(r) for r in decide(replace(first, event_id=f"n{n}")))
    assert [duplicate.matches(r) for r in decide(first)] == [True]  # the window holds it
    decide(replace(first, event_id="one-more"))  # pushes the first out of the window
    again = decide(first)  # decided again: the rebase has nothing more to do
    assert [r.reason for r in again] == ["no transition for this event in the current states"]  # type: ignore[attr-defined]


def test_retry_backoff_is_exponential_with_derived_jitter() -> None:
    t = started_rebase()
    t.when(t.fail("instance:A"))
    first = t.last[0]
    assert isinstance(first, TimerScheduled)
    assert 160 <= first.due_ms <= 240  # 200ms +/- 20%
    t.advance(timedelta(seconds=5))
    t.when(t.fail("instance:A"))
    second = t.last[0]
    assert isinstance(second, TimerScheduled)
    assert 320 <= second.due_ms - t.now_ms <= 480  # 400ms +/- 20%
    t2 = started_rebase()
    t2.when(t2.fail("instance:A"))
    assert t2.last[0] == first  # same ids, same jitter
    t.advance(timedelta(seconds=5))
    t.when(t.fail("instance:A"))
    t.then(like(ProcessStopping, outcome="failed"))  # B and C are still closing
    t.when(t.complete("instance:B"))
    t.then()
    t.when(t.complete("instance:C"))
    t.then(like(ProcessFailed))
    reason = t.last[-1].reason  # type: ignore[attr-defined]
    assert reason.startswith("CloseInstance on instance:A failed after 3 attempt(s)")


def test_exhausted_retries_compensate_completed_tasks_in_reverse_order() -> None:
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d1", regions=["eu", "us", "ap"]))
    t.when(t.complete("region:eu"))
    t.when(t.complete("region:us"))
    t.when(t.fail("region:ap", "quota", retryable=False))
    t.then(
        like(ProcessStopping, outcome="failed"),
        like(CompensationPlanned, machine_id="region:us", task_type="RollBack"),
    )
    t.when(t.complete("region:us"))
    t.then(like(CompensationPlanned, machine_id="region:eu", task_type="RollBack"))
    t.when(t.complete("region:eu"))
    t.then(like(ProcessFailed))
    assert "RollOut on region:ap failed after 1 attempt(s): quota" in t.last[0].reason  # type: ignore[attr-defined]
    t.assert_replays()


def test_tasks_in_flight_when_failing_are_awaited_then_compensated() -> None:
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d1", regions=["eu", "us"]))
    t.when(t.complete("region:eu"))
    t.when(t.fail("region:us", "bad", retryable=False))
    t.then(like(ProcessStopping), like(CompensationPlanned, machine_id="region:eu"))
    t2 = SagaTest(deploy_saga())
    t2.given(Deploy(deploy_id="d1", regions=["eu", "us", "ap"]))
    t2.when(t2.fail("region:ap", "bad", retryable=False))
    t2.then(like(ProcessStopping))  # eu and us are still running: wait for them
    t2.when(t2.complete("region:eu"))
    t2.then()
    t2.when(t2.fail("region:us", "also bad"))
    t2.then(like(CompensationPlanned, machine_id="region:eu"))  # no retry while winding down


def test_failed_compensation_is_reported_and_the_rest_still_run() -> None:
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d1", regions=["eu", "us", "ap"]))
    t.when(t.complete("region:eu"))
    t.when(t.complete("region:us"))
    t.when(t.fail("region:ap", "bad", retryable=False))
    t.when(t.fail("region:us", "rollback broke"))
    t.then(like(CompensationPlanned, machine_id="region:eu"))
    t.when(t.complete("region:eu"))
    t.then(like(ProcessFailed))
    assert t.last[0].reason.endswith("compensations that failed: RollBack")  # type: ignore[attr-defined]


def test_task_timeout_fires_at_the_right_virtual_time_and_a_later_result_is_ignored() -> None:
    t = SagaTest(deploy_saga(), start_ms=1_000)
    t.given(Deploy(deploy_id="d1", regions=["eu"]))
    late = t.complete("region:eu")
    assert t.advance(timedelta(seconds=9.999)) == []
    t.advance(timedelta(milliseconds=1))
    t.then(like(TimerScheduled, purpose="retry", attempt=2, due_ms=11_000 + 1_000))
    assert t.now_ms == 11_000
    t.when(late)
    t.then(like(InputIgnored, reason="attempt 1 already failed or timed out"))


def test_on_failure_moves_the_machine_instead_of_failing_the_process() -> None:
    t = SagaTest(deploy_saga(on_failure=True))
    t.given(Deploy(deploy_id="d1", regions=["eu"]))
    t.when(t.fail("region:eu", "nope", retryable=False))
    t.then(
        like(TransitionPlanned, to_state="Broken", transition="Pending->Live:failed"),
        ProcessCompleted,
    )


def test_state_timer_expires_unpaid_invoice_and_payment_disarms_it() -> None:
    t = SagaTest(payment_saga())
    t.given(InvoiceSent(invoice_id="i1"))
    assert t.advance(timedelta(minutes=14, seconds=59)) == []
    t.advance(timedelta(seconds=1))
    t.then(like(TransitionPlanned, to_state="Expired"), ProcessCompleted)
    paid = SagaTest(payment_saga())
    paid.given(InvoiceSent(invoice_id="i2"))
    paid.when(PaymentReceived(invoice_id="i2", amount=10))
    paid.then(like(TransitionPlanned, to_state="Paid"), ProcessCompleted)
    assert paid.advance(timedelta(hours=1)) == []


def test_guard_blocks_a_transition_and_the_event_is_recorded_as_ignored() -> None:
    t = SagaTest(payment_saga())
    t.given(InvoiceSent(invoice_id="i1"))
    t.when(PaymentReceived(invoice_id="i1", amount=0))
    t.then(like(InputIgnored, reason="no transition for this event in the current states"))


def test_event_for_no_instance_is_ignored_not_raised() -> None:
    t = SagaTest(payment_saga())
    t.when(PaymentReceived(invoice_id="nobody", amount=5))
    t.then(like(InputIgnored, reason="no process instance"))
    assert t.state is None


def test_hard_cancel_on_event_ends_at_once() -> None:
    t = SagaTest(payment_saga())
    t.given(InvoiceSent(invoice_id="i1"))
    t.when(InvoiceVoided(invoice_id="i1"))
    t.then(like(ProcessCancelled, mode="hard"))
    assert t.advance(timedelta(hours=1)) == []


def test_cooperative_cancel_compensates_then_cancels() -> None:
    t = SagaTest(order_saga())
    t.given(OrderPlaced(order_id="o1", amount=5))
    t.when(t.complete("stock"))
    t.when(t.cancel("cooperative", "customer changed mind"))
    t.then(like(ProcessStopping, outcome="cancelled"))  # the charge is still in flight
    t.when(t.complete("payment"))
    t.then(like(CompensationPlanned, task_type="RefundCard"))
    t.when(t.complete("payment"))
    t.then(like(CompensationPlanned, task_type="ReleaseStock"))
    t.when(t.complete("stock"))
    t.then(like(ProcessCancelled, mode="cooperative", reason="customer changed mind"))
    t.when(t.cancel("cooperative", "customer changed mind"))
    t.then(like(InputIgnored, reason="after completion"))


def test_join_waits_for_both_parallel_machines_then_ships() -> None:
    t = SagaTest(order_saga())
    t.given(OrderPlaced(order_id="o1", amount=5))
    t.when(t.complete("payment"))
    t.then()
    t.when(t.complete("stock"))
    t.then(
        like(TransitionPlanned, machine_id="shipping", task_type="Ship", payload={"order": "o1"})
    )
    t.when(t.complete("shipping"))
    t.then(ProcessCompleted)


@pytest.mark.parametrize(("quorum", "needed"), [(2, 2), (3, 3)])
def test_at_least_n_join(quorum: int, needed: int) -> None:
    t = SagaTest(deploy_saga(quorum=quorum))
    t.given(Deploy(deploy_id="d", regions=["a", "b", "c"]))
    for i, region in enumerate("abc", start=1):
        t.when(t.complete(f"region:{region}"))
        if i < needed:
            t.then()
        else:
            t.then(ProcessCompleted)
            break


def test_any_join_completes_on_the_first() -> None:
    t = SagaTest(any_region_saga())
    t.given(Deploy(deploy_id="d", regions=["a", "b"]))
    t.when(t.complete("region:b"))
    t.then(ProcessCompleted)


def test_later_event_creates_more_machines_at_run_time() -> None:
    t = SagaTest(deploy_saga())
    t.given(Deploy(deploy_id="d", regions=["a"]))
    t.when(Deploy(deploy_id="d", regions=["a", "b"]))
    t.then(
        like(MachinesCreated, machines={"region:b": "Pending"}),
        like(TimerScheduled, purpose="state", machine_id="region:b"),
        like(TransitionPlanned, machine_id="region:b", timeout_due_ms=t.now_ms + 10_000),
    )


def test_the_state_after_decisions_is_the_fold_whether_or_not_the_shortcut_applies() -> None:
    from procession.sagas import evolve_all  # noqa: PLC0415
    from procession.sagas._fold import after_decisions  # noqa: PLC0415
    from procession.sagas._state import Ended  # noqa: PLC0415

    saga = order_saga()
    t = SagaTest(saga)
    event = t._input(OrderPlaced(order_id="o-1", amount=5))
    decisions = saga.decide(None, event)
    after = after_decisions(None, event, decisions)
    assert after is getattr(decisions, "state", None)  # taken: no second fold
    assert after == evolve_all(None, [event, *decisions])
    t.when(event)
    result = t.complete("stock")
    for before in (after, Ended.of("completed"), None):
        got = saga.decide(before, result)
        assert after_decisions(before, result, got) == evolve_all(before, [result, *got])
    ended = Ended.of("completed")
    assert after_decisions(ended, result, saga.decide(ended, result)) is ended
    from procession.sagas import Planner  # noqa: PLC0415

    silent = Planner(ended, result).records  # a hand-written decider that says nothing
    assert after_decisions(ended, result, silent) is ended
    unmatched = replace(event, event_type="Unknown", event_id="e-unknown")
    ignored = saga.decide(None, unmatched)
    assert after_decisions(None, unmatched, ignored) is None  # nothing to keep for noise
