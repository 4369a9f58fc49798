"""The chaos script's core on a tiny run: a kill, and still every order once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.chaos import Config, run
from tests.conftest import Backend


@pytest.mark.backends("kafka")
async def test_a_tiny_chaos_run_completes_every_order_deciding_each_input_once(
    backend: Backend, tmp_path: Path
) -> None:
    backend.transport()  # the session's broker
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
    assert (a.duplicated_decisions, a.inputs_decided_twice, a.completed_twice) == (0, 0, 0)
    assert len(result.kills) == 1
    assert result.exit_codes == {"processor-1": 0, "worker-1": 0}
    assert result.ok
