"""Find the application a command line names as ``MODULE:APP``.

Every way that can go wrong is an :class:`AppSpecError` that says which part
of the spec is at fault and why, so the command prints one line, not a
traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from procession._errors import AppSpecError, ProcessionError, one_line

if TYPE_CHECKING:
    from procession.workers import App


def load_app(spec: str) -> App:
    """The App named by ``module:attribute`` (called first if it is a function).

    Example:
        >>> load_app("procession.examples:rebase_saga")
        Traceback (most recent call last):
        ...
        procession._errors.AppSpecError: cannot load app 'procession.examples:rebase_saga': \
rebase_saga() returned a Saga, not an App
    """
    from procession.workers import App  # noqa: PLC0415 - the runtime loads only when needed

    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise AppSpecError(spec, "expected MODULE:APP, e.g. shop.app:app")
    module = _import(spec, module_name)
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AppSpecError(spec, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, App):
        return obj
    if isinstance(obj, type) or not callable(obj):
        kind = "a class" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise AppSpecError(spec, f"{attr} is {kind}, not an App (nor a function returning one)")
    if inspect.iscoroutinefunction(obj):
        raise AppSpecError(spec, f"{attr} is an async function; name one that returns an App")
    try:
        made = obj()
    except ProcessionError as exc:
        raise AppSpecError(spec, f"{attr}() failed: {one_line(exc)}") from exc
    except Exception as exc:
        raise AppSpecError(spec, f"{attr}() raised {one_line(exc)}") from exc
    if not isinstance(made, App):
        raise AppSpecError(spec, f"{attr}() returned a {type(made).__name__}, not an App")
    return made


def check_task_types(spec: str, app: App, names: Sequence[str]) -> None:
    """Raise :class:`AppSpecError` unless the app has every one of ``names``."""
    unknown = sorted(set(names) - set(app.task_types()))
    if unknown:
        known = ", ".join(app.task_types()) or "none"
        raise AppSpecError(
            spec, f"unknown task types {', '.join(unknown)} (the app's task types: {known})"
        )


def _import(spec: str, name: str) -> ModuleType:
    if "" not in sys.path:  # as `python -m` does: modules in the current directory are found
        sys.path.insert(0, "")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppSpecError(
                spec, f"no module named {exc.name!r} (searched the current directory and sys.path)"
            ) from exc
        raise AppSpecError(spec, f"importing module {name!r} failed: {one_line(exc)}") from exc
    except Exception as exc:
        raise AppSpecError(spec, f"importing module {name!r} failed: {one_line(exc)}") from exc
