"""``procession replay``: saved histories against an app's definitions.

The files are JSON lines of records, as ``procession history`` prints them
(several processes may share a file). Each process is replayed on the
version its ``ProcessStarted`` names; the first divergence is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from procession._errors import DecodeError
from procession.sagas._replay import replay_check
from procession.topics._codec import DEFAULT_CODEC
from procession.topics._records import ProcessParked, ProcessStarted, Record
from procession.workers._app import App

OK, FAILED = 0, 1


def replay_files(app: App, files: Sequence[str]) -> int:
    """Replay every process in ``files``; 0 when all reproduce their decisions.

    Example: ``procession replay myapp:app saved/*.jsonl``.
    """
    streams: dict[str, list[Record]] = {}
    for name in files:
        for n, line in enumerate(Path(name).read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records = DEFAULT_CODEC.decode_all(line)  # a batch on a line: its records
            except DecodeError as exc:
                print(f"procession: {name}:{n}: {exc}", file=sys.stderr)
                return FAILED
            for rec in records:
                streams.setdefault(rec.process_id, []).append(rec)
    diverged = 0
    for pid, history in streams.items():
        saga = app.saga_for(pid)
        if saga is None:
            print(f"{pid}: no saga of this app runs it")
            diverged += 1
            continue
        started = next((r for r in history if isinstance(r, ProcessStarted)), None)
        runs = getattr(saga, "runs", None)
        if started is not None and runs is not None and not runs(started.version):
            print(f"{pid}: started on v{started.version}, which this app does not register")
            diverged += 1
            continue
        parked = next((r for r in history if isinstance(r, ProcessParked)), None)
        if parked is not None:
            print(f"{pid}: parked at {parked.input_type} {parked.input_id}; replayed up to it")
        try:
            found = replay_check(saga.decide, history)
        except Exception as exc:  # noqa: BLE001 - a decision that raises is a finding
            print(f"{pid}: the decision raised {exc}")
            diverged += 1
            continue
        if found is not None:
            print(f"{pid}: {found}")
            diverged += 1
    print(f"{len(streams) - diverged} of {len(streams)} processes replay to their decisions")
    return FAILED if diverged else OK
