"""Recorded histories replay against today's code; a decision change is caught."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import cast

import pytest

from procession.examples import rebase_saga
from procession.sagas import ProcessState, fold, replay_check
from procession.sagas._fold import replay_steps
from procession.sagas._replay import one_record_per_request
from procession.topics import Record, TimerScheduled
from procession.workers._wire import Stored, encode_state
from tests.histories import SCENARIOS, load


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_recorded_history_replays_without_divergence(name: str) -> None:
    history = load(name)
    saga = SCENARIOS[name][1]()
    assert len(history) > 5
    assert replay_check(saga.decide, history) is None
    state = fold(history)
    assert isinstance(state, ProcessState) and state.terminal


def test_a_changed_decision_is_reported_with_the_input_and_the_fields_that_differ() -> None:
    history = load("rebase_with_retry")
    changed = rebase_saga(backoff=timedelta(seconds=5))
    divergence = replay_check(changed.decide, history)
    assert divergence is not None
    assert divergence.input.type_name == "procession.TaskFailed"
    text = str(divergence)
    assert "recorded [TimerScheduled], now [TimerScheduled]" in text
    assert re.search(r"; #0 TimerScheduled: due_ms (\d+) -> (\d+)$", text), text
    was, now = map(int, re.findall(r"\d{10,}", text))
    assert now - was > 4000  # 5 s of backoff now, 200 ms recorded


@pytest.mark.parametrize("name", ["rebase_with_retry", "deploy_failed"])
def test_a_history_with_task_timeout_records_is_todays_with_each_timer_in_its_request(
    name: str,
) -> None:
    """Recorded when each task timeout was a TimerScheduled of its own (ADR 12):
    today's run of the same scenario is that history with each such timer folded
    into its request, every id unchanged, and both fold to the same state (the
    deploy scenario's timeout fires, found under the same timer id)."""
    recorded = load(name)
    timers = [r for r in recorded if isinstance(r, TimerScheduled) and r.purpose == "task-timeout"]
    assert timers
    today = SCENARIOS[name][0]().history
    assert not [r for r in today if isinstance(r, TimerScheduled) and r.purpose == "task-timeout"]
    assert one_record_per_request(recorded) == today
    assert len(today) == len(recorded) - len(timers)
    assert states(recorded) == states(today)


def states(history: list[Record]) -> list[bytes | None]:
    """The state after each input, as the changelog stores it (compared by value)."""
    return [encode_state(cast(Stored, after)) for _, after in replay_steps(history)]
