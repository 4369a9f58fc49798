"""The chaos script's core on a tiny run: a kill, and still every order once."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.chaos import Config, Result, run
from benchmarks.chaos_audit import Audit, decided_twice, longest_stall
from procession.topics import InputIgnored, TransitionPlanned
from tests.conftest import CLIENTS, KAFKA_BACKENDS, Backend


@pytest.mark.backends(*KAFKA_BACKENDS)
async def test_a_tiny_chaos_run_completes_every_order_deciding_each_input_once(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.transport()  # the session's broker
    monkeypatch.setenv("PROCESSION_KAFKA_CLIENT", CLIENTS[backend.name])  # the replicas'
    cfg = Config(
        orders=20,
        processors=1,
        workers=1,
        kill_every_s=2.0,
        max_kills=1,
        rate=5.0,  # publishing lasts 4 s, so the kill lands mid-run
        broker_restart=False,
        deadline_s=50.0,
        run_dir=tmp_path,
    )
    result = await run(cfg, os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    a = result.audit
    assert (a.published, a.started, a.completed) == (20, 20, 20)
    twice = (a.duplicated_decisions, a.inputs_decided_twice, a.completed_twice)
    assert (*twice, a.routed_twice, a.task_reexecutions) == (0, 0, 0, 0, 0)
    assert len(result.kills) == 1
    assert result.exit_codes == {"processor-1": 0, "worker-1": 0}
    assert result.ok


@pytest.mark.parametrize(
    "field",
    [
        "completed_twice",
        "duplicated_decisions",
        "inputs_decided_twice",
        "routed_twice",
        "task_reexecutions",
    ],
)
def test_a_run_in_which_anything_happened_twice_fails(field: str, tmp_path: Path) -> None:
    """The script exits 1 when ``ok`` is false: a run with every order completed
    fails all the same when one thing that must happen once happened twice."""
    cfg = Config(orders=3, run_dir=tmp_path)
    clean = Audit(published=3, started=3, completed=3)

    def result(audit: Audit) -> Result:
        return Result(
            config=cfg,
            prefix="p",
            run_dir=tmp_path,
            audit=audit,
            seconds=1.0,
            all_completed_s=1.0,
            kills=[],
            unplanned_exits=[],
            exit_codes={},
            publish_retries=0,
            broker="b",
        )

    assert result(clean).ok
    assert not result(replace(clean, completed=2)).ok
    assert not result(replace(clean, **{field: 1})).ok


def test_the_longest_stall_counts_only_time_with_orders_outstanding() -> None:
    # published at 0 and 1 s; done at 2 s and 9 s; a third published at 20 s, done at 23 s
    publish, done = [0, 1000, 20_000], [2000, 9000, 23_000]
    assert longest_stall(publish, done, end_ms=30_000) == (7.0, 2.0)
    assert longest_stall(publish, done[:2], end_ms=30_000) == (10.0, 20.0)  # still owed at end


def test_an_input_decided_at_two_positions_counts_once_as_decided_twice() -> None:
    def planned(seq: int, cause: str) -> TransitionPlanned:
        return TransitionPlanned(
            event_id=f"d-{seq}-{cause}",
            process_id="order:o-1",
            correlation_id="o-1",
            causation_id=cause,
            seq=seq,
            machine_id="stock",
            transition="reserve",
            from_state="Idle",
            to_state="Reserved",
        )

    ignored = InputIgnored(
        event_id="i",
        process_id="order:o-1",
        correlation_id="o-1",
        causation_id="e1",
        seq=3,
        input_type="OrderPlaced",
        input_id="e1",
        reason="duplicate",
    )
    assert decided_twice([planned(1, "e1"), ignored]) == 0  # recognised, not decided
    assert decided_twice([planned(1, "e1"), planned(2, "e1"), planned(2, "e2")]) == 1
    assert decided_twice([planned(1, "e1"), planned(1, "e1")]) == 1  # the same record again
