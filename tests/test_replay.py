"""Recorded histories replay against today's code; a decision change is caught."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from procession.examples import rebase_saga
from procession.sagas import ProcessState, fold, replay_check
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
