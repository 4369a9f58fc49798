"""Garbage-collector settings for the long-lived commands (processor, router, worker).

CPython's cyclic collector runs a young collection every 700 allocations not
yet freed, and an older one every ten of those. A processor under load
allocates records, states and futures by the thousand and keeps every live
process's state, so its collections come often and scan much: 10% of its CPU
in the benchmark (1,400 young, 130 middle and 12 full collections in 8 s, the
full ones 23 ms each, every one a pause of the event loop). Almost nothing it
allocates forms a cycle; reference counting frees it. So the commands
collect the young generation every ``PROCESSION_GC_THRESHOLD`` (50,000)
allocations instead, and freeze what start-up made (the app, its imports),
which no collection needs to scan again. Cyclic garbage still goes, a little
later: at most that many objects of it wait. ``PROCESSION_GC_THRESHOLD=0``
keeps CPython's settings. Applications that embed a :class:`Runtime` choose
their own (``gc.set_threshold``, ``gc.freeze``).

Example:
    >>> threshold({"PROCESSION_GC_THRESHOLD": "20000"})
    20000
    >>> threshold({}) == DEFAULT_THRESHOLD, threshold({"PROCESSION_GC_THRESHOLD": "0"})
    (True, None)
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

from procession._errors import SettingError

#: Allocations between two young collections in the long-lived commands.
DEFAULT_THRESHOLD = 50_000


def threshold(env: Mapping[str, str] = os.environ) -> int | None:
    """The young generation's threshold ``PROCESSION_GC_THRESHOLD`` asks for (None:
    CPython's own settings); a value that is not a whole number is refused."""
    raw = env.get("PROCESSION_GC_THRESHOLD", "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SettingError(f"PROCESSION_GC_THRESHOLD={raw!r} is not a whole number of allocations")
    return value or None


def tune(env: Mapping[str, str] = os.environ) -> None:
    """Apply :func:`threshold` and freeze what exists now (call once the app is loaded)."""
    young = threshold(env)
    if young is None:
        return
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
    gc.freeze()
