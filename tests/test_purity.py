"""The core takes no clock, randomness or IO, and imports none of the runtimes."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

import procession
from procession.examples import OrderPlaced, order_saga
from procession.testing import SagaTest

PACKAGE = Path(procession.__file__).parent
PURE = ["sagas", "topics"]
FORBIDDEN_IMPORTS = {
    "asyncio",
    "time",
    "random",
    "secrets",
    "socket",
    "os",
    "threading",
    "subprocess",
    "aiokafka",
    "opentelemetry",
    "procession.workers",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "uuid1", "uuid4", "time", "monotonic", "random"}


def pure_modules() -> list[Path]:
    return sorted(p for d in PURE for p in (PACKAGE / d).glob("*.py"))


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_imports_no_clock_randomness_io_or_runtime(path: Path) -> None:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
            found.add(f"call .{node.attr}")
    bad = {
        name
        for name in found
        if name.split(".")[0] in FORBIDDEN_IMPORTS or name in FORBIDDEN_IMPORTS
    }
    bad |= {name for name in found if name.startswith("call ")}
    assert not bad, f"{path.name} uses {sorted(bad)}"


def test_the_core_runs_with_the_runtimes_unimportable() -> None:
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"asyncio", "aiokafka", "opentelemetry"} \\
                or name.startswith("procession.workers"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from procession.testing import SagaTest
from procession.examples import RebaseFailed, rebase_saga
t = SagaTest(rebase_saga())
t.given(RebaseFailed(rebase_id="r", instances=["A"]))
t.when(t.complete("instance:A"))
print(t.state.status)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "completed"


def test_decisions_read_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:

    def no_clock() -> float:
        raise AssertionError("the core read the clock")

    t = SagaTest(order_saga())
    monkeypatch.setattr(time, "time", no_clock)
    monkeypatch.setattr(time, "time_ns", no_clock)
    monkeypatch.setattr(time, "monotonic", no_clock)
    t.given(OrderPlaced(order_id="o", amount=1))
    t.when(t.complete("stock"))
    t.when(t.complete("payment"))
    t.when(t.fail("shipping", "x"))
    assert t.state is not None and t.state.timers
