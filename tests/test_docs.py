"""Docs that run: every python block in the README and docs, and every doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import procession

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize(
    "path", [d for d in DOCS if BLOCK.search(d.read_text())], ids=lambda p: p.name
)
def test_python_blocks_run(path: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    blocks = BLOCK.findall(path.read_text())
    for i, block in enumerate(blocks):
        code = compile(block, f"{path.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 - running the docs is the point


def modules_with_examples() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(procession.__path__, "procession.")]
    return sorted(
        n for n in names if ">>>" in Path(importlib.import_module(n).__file__ or "").read_text()
    )


@pytest.mark.parametrize("name", modules_with_examples())
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
