"""The pure core: define sagas, fold their history, decide what happens next."""

from ._decider import Decider as Decider
from ._decider import Decision as Decision
from ._decider import ProcessDefinition as ProcessDefinition
from ._diagram import mermaid as mermaid
from ._dsl import Context as Context
from ._dsl import ForEach as ForEach
from ._dsl import Machine as Machine
from ._dsl import State as State
from ._dsl import Task as Task
from ._dsl import Transition as Transition
from ._fold import classify as classify
from ._fold import evolve as evolve
from ._fold import evolve_all as evolve_all
from ._fold import fold as fold
from ._ids import derive_id as derive_id
from ._joins import Join as Join
from ._joins import all_of as all_of
from ._joins import any_of as any_of
from ._joins import at_least as at_least
from ._planner import Planner as Planner
from ._replay import Divergence as Divergence
from ._replay import replay_check as replay_check
from ._retry import RetryPolicy as RetryPolicy
from ._saga import Saga as Saga
from ._state import Ended as Ended
from ._state import MachineState as MachineState
from ._state import Parked as Parked
from ._state import PendingTask as PendingTask
from ._state import ProcessState as ProcessState
from ._steps import Steps as Steps
from ._steps import steps as steps
from ._versions import Migration as Migration
from ._versions import Versions as Versions

__all__ = [
    "Context",
    "Decider",
    "Decision",
    "Divergence",
    "Ended",
    "ForEach",
    "Join",
    "Machine",
    "MachineState",
    "Migration",
    "Parked",
    "PendingTask",
    "Planner",
    "ProcessDefinition",
    "ProcessState",
    "RetryPolicy",
    "Saga",
    "State",
    "Steps",
    "Task",
    "Transition",
    "Versions",
    "all_of",
    "any_of",
    "at_least",
    "classify",
    "derive_id",
    "evolve",
    "evolve_all",
    "fold",
    "mermaid",
    "replay_check",
    "steps",
]
