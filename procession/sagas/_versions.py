"""Several versions of one saga, and migrations between them.

A process decides with the version recorded in its ``ProcessStarted`` for
its whole life; new processes start on the newest version. A
:class:`Migration` registered from a process's version moves it on at its
next input: a ``ProcessMigrated`` record, with the renames it applies, is
written before that input's decisions, which the newer version takes.

Example::

    app = App([Versions([rebase_v1, rebase_v2],
                        migrations=[Migration("rebase", 1, 2,
                                              states={"instance": {"Working": "Open"}})])],
              handlers)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from procession._errors import DefinitionError, DefinitionMismatchError
from procession.topics._records import ProcessMigrated, ProcessStarted, Record

from ._decider import Decision
from ._dsl import Task
from ._fold import AnyState, classify
from ._fold import migrate as apply_migration
from ._planner import Planner
from ._saga import Saga
from ._state import ProcessState


@dataclass(frozen=True)
class Migration:
    """Move running processes of ``saga`` from ``from_version`` to ``to_version``.

    ``states`` and ``transitions`` map a machine's name to ``{old: new}``
    names; what is not named keeps its name and must exist in the new version.
    Checked against both definitions when registered.

    Example:
        >>> Migration("rebase", 1, 2, transitions={"instance": {"close": "archive"}}).to_version
        2
    """

    saga: str
    from_version: int
    to_version: int
    states: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    transitions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class Versions:
    """The versions of one saga an app runs; a process definition in its own right.

    Example:
        >>> from procession.examples import rebase_saga
        >>> v = Versions([rebase_saga()])
        >>> v.name, v.version
        ('rebase', 1)
    """

    def __init__(self, sagas: Sequence[Saga], migrations: Sequence[Migration] = ()) -> None:
        if not sagas:
            raise DefinitionError("?", None, "versions", "need at least one saga")
        name = sagas[0].name
        self._by_version: dict[int, Saga] = {}
        for s in sagas:
            if s.name != name:
                raise DefinitionError(name, None, "versions", f"mix sagas {name!r} and {s.name!r}")
            if s.version in self._by_version:
                raise DefinitionError(name, None, f"version {s.version}", "is registered twice")
            self._by_version[s.version] = s
        self.name = name
        self.newest = self._by_version[max(self._by_version)]
        self.version = self.newest.version
        self.tasks: dict[str, Task] = {}
        self.event_types: dict[str, type[BaseModel]] = {}
        for v in sorted(self._by_version):
            self.tasks.update(self._by_version[v].tasks)
            self.event_types.update(self._by_version[v].event_types)
        self._migrations: dict[int, Migration] = {}
        for m in migrations:
            self._check(m)
            self._migrations[m.from_version] = m

    def __repr__(self) -> str:
        return f"Versions({self.name!r}, {sorted(self._by_version)})"

    def definition(self, version: int) -> Saga | None:
        """The registered definition of ``version``, or None."""
        return self._by_version.get(version)

    def route(self, event: BaseModel) -> list[str]:
        """Process ids of ``event``, by the newest version's correlation rules."""
        return self.newest.route(event)

    def process_id(self, key: str) -> str:
        return self.newest.process_id(key)

    def decide(self, state: AnyState, record: Record, *, migrate: bool = True) -> Decision:
        """Decide with the process's own version, migrating it first when a
        migration from that version is registered (and ``migrate`` is true)."""
        if not isinstance(state, ProcessState) or state.status == "new" or state.terminal:
            return self.newest.decide(state, record)
        if classify(state, record) is not None:  # ignored: no definition is needed
            return self.newest.decide(state, record)
        saga = self._by_version.get(state.version)
        if state.version not in self._migrations or not migrate:
            if saga is None:
                raise DefinitionMismatchError(
                    state.process_id,
                    self.name,
                    state.version,
                    f"that version is not registered (this app has {self._listed()})",
                )
            return saga.decide(state, record)
        p = Planner(state, record)
        before = state.clone()
        while (m := self._migrations.get(before.version)) is not None:
            rec = p.emit(
                ProcessMigrated,
                from_version=m.from_version,
                to_version=m.to_version,
                states={k: dict(v) for k, v in m.states.items()},
                transitions={k: dict(v) for k, v in m.transitions.items()},
            )
            apply_migration(before, rec)
        return self._by_version[before.version]._engine.decide(before, record, planner=p)

    def replay(self, before: AnyState, record: Record, recorded: Sequence[Record]) -> Decision:
        """Decide ``record`` as the recorded step was taken: a process starts on the
        version its ``ProcessStarted`` names, and migrates where it recorded that."""
        started = next((d for d in recorded if isinstance(d, ProcessStarted)), None)
        if started is not None and (saga := self.definition(started.version)) is not None:
            return saga.decide(before, record)
        migrated = any(isinstance(d, ProcessMigrated) for d in recorded)
        return self.decide(before, record, migrate=migrated)

    def _listed(self) -> str:
        return ", ".join(f"v{v}" for v in self.registered)

    @property
    def registered(self) -> list[int]:
        """The registered versions, oldest first."""
        return sorted(self._by_version)

    def runs(self, version: int) -> bool:
        """Whether a process started on ``version`` can decide here (registered,
        or migrated from)."""
        return version in self._by_version or version in self._migrations

    def _check(self, m: Migration) -> None:
        """Every name the migration uses exists, and every state and transition of
        the old version has a place in the new one."""
        where = f"migration v{m.from_version} -> v{m.to_version}"

        def fail(problem: str) -> DefinitionError:
            return DefinitionError(self.name, None, where, problem)

        if m.saga != self.name:
            raise fail(f"is for saga {m.saga!r}")
        old, new = self._by_version.get(m.from_version), self._by_version.get(m.to_version)
        if old is None or new is None:
            raise fail(
                f"names a version not registered (registered: {self._listed()}); "
                "both versions stay registered while the migration does"
            )
        if m.to_version <= m.from_version:
            raise fail("must move to a newer version")
        if m.from_version in self._migrations:
            raise fail(f"is the second migration from v{m.from_version}")
        old_machines = {x.name: x for x in old.machines}
        new_machines = {x.name: x for x in new.machines}
        for fam in dict.fromkeys([*m.states, *m.transitions]):
            if fam not in old_machines:
                raise fail(
                    f"names machine {fam!r}, which v{m.from_version} does not have "
                    f"(it has: {', '.join(old_machines)})"
                )
        for machine in old.machines:
            target = new_machines.get(machine.name)
            if target is None:
                raise fail(f"machine {machine.name!r} has no place in v{m.to_version}")
            _check_names(
                fail,
                machine.name,
                "state",
                old=[s.name for s in machine.states],
                new=[s.name for s in target.states],
                renames=m.states.get(machine.name, {}),
                version=m.to_version,
            )
            _check_names(
                fail,
                machine.name,
                "transition",
                old=[t.name for t in machine.transitions],
                new=[t.name for t in target.transitions],
                renames=m.transitions.get(machine.name, {}),
                version=m.to_version,
            )


def _check_names(
    fail: Callable[[str], DefinitionError],
    machine: str,
    kind: str,
    *,
    old: list[str],
    new: list[str],
    renames: Mapping[str, str],
    version: int,
) -> None:
    """Each rename goes from a name the old machine has to one the new one has;
    every other old name must exist in the new machine."""
    for before, after in renames.items():
        if before not in old:
            raise fail(f"renames {kind} {before!r}, which machine {machine!r} does not have")
        if after not in new:
            raise fail(
                f"renames {kind} {before!r} to {after!r}, which v{version}'s machine "
                f"{machine!r} does not have (it has: {', '.join(new)})"
            )
    for name in old:
        if renames.get(name, name) not in new:
            raise fail(
                f"{kind} {name!r} of machine {machine!r} has no place in v{version}: "
                f"rename it in the migration's {kind}s (v{version} has: {', '.join(new)})"
            )
