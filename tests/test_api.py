"""The public surface is curated: sorted __all__, every name documented."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from mypy import api

import procession

MODULES = [
    "procession",
    "procession.publish",
    "procession.sagas",
    "procession.topics",
    "procession.workers",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_unique_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    names = module.__all__
    assert len(names) == len(set(names))
    assert names == sorted(names, key=lambda n: (n[0].islower(), n.isupper() is False, n))
    for public in names:
        assert getattr(module, public) is not None


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    missing = [
        n
        for n in module.__all__
        if (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
        and not inspect.getdoc(getattr(module, n))
    ]
    assert not missing, f"{name}: no docstring on {missing}"


def test_public_names_do_not_leak_private_modules() -> None:

    exported = set(procession.__all__)
    assert {"Saga", "State", "Machine", "Task", "App", "Runtime", "steps", "mermaid"} <= exported
    assert not any(n.startswith("_") for n in exported)


def test_the_kafka_transport_is_public_and_loads_only_when_asked_for() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, procession.workers as w; assert 'aiokafka' not in sys.modules; "
        "from procession.workers import KafkaTransport; assert 'aiokafka' in sys.modules; "
        "from procession.topics import Topics, TopicSpec; print(KafkaTransport.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stdout) == (0, "KafkaTransport\n"), out.stderr


def test_records_and_state_values_are_frozen_to_the_type_checker(tmp_path: Path) -> None:
    """ADR 13: assigning a field of a record or a state value is a mypy error."""
    src = tmp_path / "assign.py"
    src.write_text(
        "from procession.sagas._state import MachineState\n"
        "from procession.topics import TaskCompleted\n"
        "r = TaskCompleted(event_id='e', process_id='p', correlation_id='c',\n"
        "                  machine_id='m', task_id='t', task_type='T', attempt=1)\n"
        "r.attempt = 2\n"
        "m = MachineState('A')\n"
        "m.state = 'B'\n"
    )
    out, _, status = api.run(
        [str(src), "--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / "c")]
    )
    assert status == 1, out
    assert f'{src}:5: error: Property "attempt" defined in "TaskCompleted" is read-only' in out
    assert f'{src}:7: error: Property "state" defined in "MachineState" is read-only' in out
    assert "Found 2 errors" in out
