"""The demo command, the timeline and the Mermaid export."""

from __future__ import annotations

import subprocess
import sys

from procession import mermaid
from procession._demo import run_demo
from procession._timeline import timeline
from procession.examples import order_saga, rebase_saga
from tests.histories import load
from tests.sagas import deploy_saga, payment_saga


async def test_demo_completes_the_rebase_with_a_visible_retry() -> None:
    report = await run_demo(rebase_id="r-test")
    lines = report.splitlines()
    assert lines[0] == "Procession demo: rebase r-test failed; closing instances A, B and C"
    assert any(
        "TaskFailed" in line and "instance:B" in line and "attempt 1" in line for line in lines
    )
    assert any(
        "TransitionPlanned" in line and "instance:B" in line and "attempt 2" in line
        for line in lines
    )
    assert "ProcessCompleted" in lines[-6]
    assert lines[-4:] == [
        "status: completed",
        "  instance:A: Closing",
        "  instance:B: Closing",
        "  instance:C: Closing",
    ]


def test_demo_console_entry_point_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "procession._cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "status: completed" in out.stdout


def test_timeline_shows_every_record_of_a_history() -> None:
    history = load("rebase_with_retry")
    text = timeline(history).splitlines()
    assert len(text) == len(history)
    assert "RebaseFailed" in text[0] and "input" in text[0]
    assert "retry attempt 2 of instance:B" in "\n".join(text)


def test_mermaid_shows_machines_tasks_compensations_timers_and_joins() -> None:
    rebase = mermaid(rebase_saga())
    assert rebase.startswith("stateDiagram-v2")
    assert 'state "instance (one per key of RebaseFailed)" as instance {' in rebase
    edge = "instance_Working --> instance_Closing : RebaseFailed / CloseInstance"
    assert f"{edge} (async, 3 attempts, timeout 0:00:30)" in rebase
    order = mermaid(order_saga())
    assert "undo RefundCard" in order
    assert "when all stock in Reserved and all payment in Charged / Ship" in order
    assert "invoice_Awaiting --> invoice_Expired : after 0:15:00" in mermaid(payment_saga())
    assert "region_Live --> region_Broken : RollOut failed" in mermaid(deploy_saga(on_failure=True))
