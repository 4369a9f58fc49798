"""Joins that close: a 3-of-5 review decides once, late approvals are ignored."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from procession import DefinitionError
from procession.sagas import ForEach, Machine, ProcessState, Saga, State, Task, at_least, fold
from procession.sagas._state import CLOSED
from procession.testing import SagaTest
from procession.topics import (
    InputIgnored,
    MachinesClosed,
    ProcessCompleted,
    TransitionPlanned,
)


class ReviewOpened(BaseModel):
    pr: str
    reviewers: list[str]


class Approved(BaseModel):
    pr: str
    reviewer: str


def review_saga(close_rest: bool = True) -> Saga:
    pending, approved = State("Pending", initial=True), State("Approved", final=True)
    reviewer = Machine(
        "reviewer",
        states=[pending, approved],
        transitions=[pending.to(approved, on=Approved, guard=lambda c: c.event.reviewer == c.key)],
        per=ForEach(ReviewOpened, lambda e: e.reviewers),
    )
    waiting, merging, merged = (
        State("Waiting", initial=True),
        State("Merging"),
        State("Merged", final=True),
    )
    merge = Machine(
        "merge",
        states=[waiting, merging, merged],
        transitions=[
            waiting.to(
                merging,
                when=at_least(3, reviewer, approved, close_rest=close_rest),
                task=Task("Merge"),
            ),
            merging.to(merged),
        ],
    )
    return Saga(
        "review",
        machines=[reviewer, merge],
        correlate={ReviewOpened: lambda e: e.pr, Approved: lambda e: e.pr},
        starts=[ReviewOpened],
    )


def approve(t: SagaTest, who: str) -> list[object]:
    return t.when(Approved(pr="7", reviewer=who))


def test_a_quorum_closes_the_other_reviewers_and_ignores_their_late_approvals() -> None:
    t = SagaTest(review_saga())
    t.given(ReviewOpened(pr="7", reviewers=["a", "b", "c", "d", "e"]))
    approve(t, "a")
    approve(t, "b")
    third = approve(t, "c")
    closed = [r for r in third if isinstance(r, MachinesClosed)]
    assert [c.machines for c in closed] == [["reviewer:d", "reviewer:e"]]
    assert "at least 3 reviewer in Approved" in closed[0].reason
    late = approve(t, "d")  # while the merge runs
    assert [type(r) for r in late] == [InputIgnored]
    assert not [r for r in late if isinstance(r, TransitionPlanned)]
    state = fold(t.history)
    assert isinstance(state, ProcessState) and state.machines["reviewer:d"].state == CLOSED
    assert state.family_size["reviewer"] == 3  # the closed ones left the family
    t.when(t.complete("merge"))
    t.then(TransitionPlanned, ProcessCompleted)  # Merging -> Merged; the closed do not block


def test_without_closing_a_late_approval_moves_its_machine() -> None:
    t = SagaTest(review_saga(close_rest=False))
    t.given(ReviewOpened(pr="7", reviewers=["a", "b", "c", "d", "e"]))
    for who in "abc":
        approve(t, who)
    late = approve(t, "d")
    assert [r.machine_id for r in late if isinstance(r, TransitionPlanned)] == ["reviewer:d"]


def test_the_closed_state_name_is_reserved() -> None:
    closed = State(CLOSED, final=True)
    with pytest.raises(DefinitionError, match="is reserved for machines a join closed"):
        Saga(
            "x",
            machines=[Machine("m", states=[State("A", initial=True), closed], transitions=[])],
            correlate={Approved: lambda e: e.pr},
            starts=[Approved],
        )
