"""An application: the sagas, the task handlers and the topics they use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from procession._errors import RegistrationError
from procession.sagas._decider import ProcessDefinition
from procession.sagas._dsl import Task
from procession.sagas._saga import Saga
from procession.sagas._versions import Migration, Versions
from procession.topics._layout import Topics


@dataclass(frozen=True)
class TaskCall:
    """What a task handler receives. ``task_id`` is the idempotency key: the same
    for every attempt of one planned task.

    Example handler::

        async def close_instance(call: TaskCall) -> dict:
            await api.close(call.payload["instance"], idempotency_key=call.task_id)
            return {"closed": True}
    """

    task_type: str
    task_id: str
    attempt: int
    payload: dict[str, Any]
    process_id: str
    machine_id: str
    correlation_id: str


Handler = Callable[[TaskCall], Any] | Callable[[TaskCall], Awaitable[Any]]


class App:
    """Sagas plus a handler per task type, checked at registration.

    Example:
        >>> from procession.examples import rebase_saga
        >>> app = App([rebase_saga()], {"CloseInstance": lambda call: None})
        >>> app.saga_for("rebase:42").name
        'rebase'
    """

    def __init__(
        self,
        sagas: Sequence[ProcessDefinition],
        handlers: Mapping[str, Handler],
        *,
        topics: Topics | None = None,
        keep_completed: bool = False,
        migrations: Sequence[Migration] = (),
        external: Sequence[str] = (),
    ) -> None:
        sagas = _versioned(sagas, migrations)
        self.sagas = {s.name: s for s in sagas}
        if len(self.sagas) != len(sagas):
            raise RegistrationError(_dup([s.name for s in sagas]), "saga name is registered twice")
        self.handlers = dict(handlers)
        #: Task types served outside Procession (docs/wire.md): no handler here.
        self.external = frozenset(external)
        self.topics = topics or Topics()
        self.keep_completed = keep_completed
        self.tasks: dict[str, Task] = {}
        self.event_types: dict[str, type[BaseModel]] = {}
        for saga in sagas:
            self._register(saga)
        for name in sorted(self.external):
            task = self.tasks.get(name)
            if task is None:
                raise RegistrationError("*", f"external task type {name!r} is no saga's")
            if name in self.handlers:
                raise RegistrationError("*", f"task type {name!r} is external and has a handler")
            if task.mode == "inline":
                raise RegistrationError("*", f"inline task type {name!r} cannot be external")
        for name, handler in self.handlers.items():
            if name not in self.tasks:
                raise RegistrationError("*", f"handler for unknown task type {name!r}")
            if not callable(handler):
                raise RegistrationError("*", f"handler for {name!r} is not callable")

    def _register(self, saga: ProcessDefinition) -> None:
        for name, task in saga.tasks.items():
            if name not in self.handlers and name not in self.external:
                raise RegistrationError(
                    saga.name,
                    f"task type {name!r} has no handler (or name it in App(external=...) "
                    "if another service serves it)",
                )
            other = self.tasks.setdefault(name, task)
            if other.retry != task.retry:
                raise RegistrationError(
                    saga.name, f"task type {name!r} differs from another saga's"
                )
        for name, cls in saga.event_types.items():
            if self.event_types.setdefault(name, cls) is not cls:
                raise RegistrationError(saga.name, f"event type name {name!r} names two classes")

    def saga_for(self, process_id: str) -> ProcessDefinition | None:
        """The saga a process id belongs to (its prefix), or None."""
        return self.sagas.get(process_id.partition(":")[0])

    def route(self, event: BaseModel) -> list[str]:
        """Every process id ``event`` goes to, over all sagas."""
        return [pid for saga in self.sagas.values() for pid in saga.route(event)]

    def task_types(self) -> list[str]:
        return sorted(self.tasks)


def _versioned(
    sagas: Sequence[ProcessDefinition], migrations: Sequence[Migration]
) -> list[ProcessDefinition]:
    """Sagas registered under one name in several versions become one :class:`Versions`."""
    by_name: dict[str, list[ProcessDefinition]] = {}
    for s in sagas:
        by_name.setdefault(s.name, []).append(s)
    out: list[ProcessDefinition] = []
    for name, group in by_name.items():
        mine = [m for m in migrations if m.saga == name]
        versions = [s.version for s in group]
        if len(set(versions)) != len(versions):
            raise RegistrationError(
                name, f"saga name is registered twice with one version: {versions}"
            )
        if len(group) == 1 and not mine:
            out.append(group[0])
        elif all(isinstance(s, Saga) for s in group):
            out.append(Versions(group, mine))  # type: ignore[arg-type]
        else:
            out += group  # not sagas: registered twice, reported as such
    for m in migrations:
        if m.saga not in by_name:
            raise RegistrationError(m.saga, "a migration for a saga that is not registered")
    return out


def _dup(names: Iterable[str]) -> str:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return ""
