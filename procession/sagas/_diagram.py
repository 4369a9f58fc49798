"""Export a saga as a Mermaid state diagram."""

from __future__ import annotations

from ._dsl import Machine, Transition
from ._joins import InState
from ._saga import Saga


def _label(t: Transition) -> str:
    if t.on is not None:
        trigger = t.on.__name__
    elif t.after is not None:
        trigger = f"after {t.after}"
    elif t.when is not None:
        parts = [p.describe() for p in t.when.parts() if isinstance(p, InState)]
        trigger = "when " + " and ".join(parts)
    else:
        trigger = "(automatic)"
    if t.guard is not None:
        trigger += " [guard]"
    task = t.task
    if task is None:
        return trigger
    bits = [task.mode, f"{task.retry.max_attempts} attempts"]
    if task.timeout is not None:
        bits.append(f"timeout {task.timeout}")
    text = f"{trigger} / {task.type} ({', '.join(bits)})"
    if task.compensation is not None:
        text += f" undo {task.compensation.type}"
    return text


def _machine(m: Machine) -> list[str]:
    def sid(name: str) -> str:
        return f"{m.name}_{name}".replace(" ", "_").replace("-", "_")

    title = m.name if m.per is None else f"{m.name} (one per key of {m.per.event.__name__})"
    lines = [f'  state "{title}" as {m.name} {{']
    lines += [f'    state "{s.name}" as {sid(s.name)}' for s in m.states]
    lines.append(f"    [*] --> {sid(m.initial.name)}")
    for t in m.transitions:
        lines.append(f"    {sid(t.source.name)} --> {sid(t.target.name)} : {_label(t)}")
        if t.on_failure is not None and t.task is not None:
            lines.append(
                f"    {sid(t.target.name)} --> {sid(t.on_failure.name)} : {t.task.type} failed"
            )
    lines += [f"    {sid(s.name)} --> [*]" for s in m.states if s.final]
    lines.append("  }")
    return lines


def mermaid(saga: Saga) -> str:
    """A Mermaid ``stateDiagram-v2`` of every machine, its tasks, compensations and timers.

    Example:
        >>> from procession.examples import rebase_saga
        >>> print(mermaid(rebase_saga()).splitlines()[0])
        stateDiagram-v2
    """
    lines = ["stateDiagram-v2", f"  %% saga {saga.name} v{saga.version}"]
    for m in saga.machines:
        lines += _machine(m)
    return "\n".join(lines)
