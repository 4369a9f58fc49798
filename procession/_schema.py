"""``procession schema``: JSON Schema of what an app exchanges with other services.

Domain events (the app's pydantic models, by the ``procession-type`` name they
are published under), the task requests a worker in any language receives
(``TransitionPlanned``, ``CompensationPlanned``) and the results it writes back
(``TaskCompleted``, ``TaskFailed``). docs/wire.md explains keys, headers and
partitions.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from procession.topics._records import (
    CompensationPlanned,
    Record,
    TaskCompleted,
    TaskFailed,
    TransitionPlanned,
)
from procession.workers._app import App

#: The records a service outside Procession reads (requests) or writes (results).
EXCHANGED: tuple[type[Record], ...] = (
    TransitionPlanned,
    CompensationPlanned,
    TaskCompleted,
    TaskFailed,
)


def schema(app: App) -> dict[str, Any]:
    """The JSON Schemas, by kind and name.

    Example:
        >>> from procession.examples import rebase_saga
        >>> s = schema(App([rebase_saga()], {"CloseInstance": print}))
        >>> done = s["records"]["procession.TaskCompleted"]
        >>> sorted(s["domain_events"]), done["properties"]["type"]
        (['RebaseFailed'], {'const': 'procession.TaskCompleted'})
    """
    events = {name: cls.model_json_schema() for name, cls in sorted(app.event_types.items())}
    records = {}
    for cls in EXCHANGED:
        body = TypeAdapter(cls).json_schema()
        body["properties"]["type"] = {"const": cls.TYPE}
        body["properties"]["v"] = {"const": cls.VERSION}
        body["required"] = sorted({*body.get("required", []), "type", "v"})
        records[cls.TYPE] = body
    return {
        "domain_events": events,
        "records": records,
        "task_types": app.task_types(),
        "topics": {
            "events": app.topics.inputs,
            "process": app.topics.process,
            "tasks": {t: app.topics.tasks(t) for t in app.task_types()},
        },
    }
