"""What each field of a record may hold on the wire, checked as a record is read.

A record's dataclass takes whatever it is given: a writer in another language,
or a hand-written record, can put a number where a process id belongs. Such a
value fails far from where it was read (a key that is not a string, a task type
used as a dict key), and every reader would fail on it again. Reading checks
each field against its annotation instead, so the record is refused where it
is read, with the field named: a dead letter, not a stuck partition.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ._records import Record

#: A field's check: its name, the types its value may have (None: any), and the
#: values it may take (None: any of those types).
Check = tuple[str, tuple[type, ...] | None, tuple[object, ...] | None]

_CHECKS: dict[type[Record], list[Check]] = {}


def wrong_field(cls: type[Record], body: dict[str, Any]) -> str | None:
    """Why a field of ``body`` cannot be a ``cls`` field's value, or None.

    Example:
        >>> from procession.topics import ProcessCompleted
        >>> body = {"event_id": "e", "process_id": 5, "correlation_id": "c", "seq": 1}
        >>> wrong_field(ProcessCompleted, body)
        "field 'process_id' holds int 5, expected str"
    """
    for name, kinds, values in _checks_of(cls):
        if name not in body:
            continue
        v = body[name]
        if kinds is not None and not isinstance(v, kinds):
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            held = "null" if v is None else f"{type(v).__name__} {_short(v)}"
            return f"field {name!r} holds {held}, expected {expected}"
        if values is not None and v not in values:
            return f"field {name!r} holds {_short(v)}, expected one of {list(values)}"
    return None


def wrong_value(record: Record) -> str | None:
    """Why a field of ``record`` holds what a reader would refuse, or None: a
    writer checks what it writes as :func:`wrong_field` checks what is read.

    Example:
        >>> from procession.topics import ProcessCompleted
        >>> rec = ProcessCompleted(event_id="e", process_id="p", correlation_id="c", seq="1")
        >>> wrong_value(rec)
        "field 'seq' holds str '1', expected int"
    """
    cls = record.__class__
    return wrong_field(cls, {name: getattr(record, name) for name, _, _ in _checks_of(cls)})


def _checks_of(cls: type[Record]) -> list[Check]:
    checks = _CHECKS.get(cls)
    if checks is None:
        checks = _CHECKS[cls] = _checks(cls)
    return checks


def _checks(cls: type[Record]) -> list[Check]:
    out: list[Check] = []
    for name, hint in get_type_hints(cls).items():
        if name.isupper():  # TYPE, VERSION, IS_DECISION: class variables
            continue
        check = _check(name, hint)
        if check is not None:
            out.append(check)
    return out


def _check(name: str, hint: Any) -> Check | None:
    if hint is Any:
        return None
    origin = get_origin(hint)
    if origin is Literal:
        return (name, None, get_args(hint))
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if any(get_origin(o) is Literal for o in options):
            values = [v for o in options for v in (get_args(o) or (None,))]
            return (name, None, tuple(values))
        return (name, tuple(get_origin(o) or o for o in options), None)
    return (name, (origin or hint,), None)


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
