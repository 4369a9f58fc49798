"""Value classes: immutable by contract, and cheap to make.

Records and state values are made several times per decision. A frozen
dataclass sets each field through ``object.__setattr__``, which makes it about
three times as dear to construct as a plain one (a ``TransitionPlanned``:
1.56 µs against 0.43 µs on the benchmark machine). A class declared with
:func:`value` is frozen to type checkers, so assigning a field is a ``mypy``
error, and a plain slotted dataclass at run time, hashed by its fields as a
frozen one is. See docs/adr/0013-values-frozen-to-the-type-checker.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def value(cls: type[T], /) -> type[T]: ...


@overload
def value(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(
    cls: type[T] | None = None, /, *, kw_only: bool = False
) -> type[T] | Callable[[type[T]], type[T]]:
    """Declare an immutable value class (see the module's docstring).

    Example:
        >>> @value
        ... class Point:
        ...     x: int
        ...     y: int = 0
        >>> Point(1) == Point(1, 0), hash(Point(1)) == hash(Point(1, 0))
        (True, True)
    """

    def make(c: type[T]) -> type[T]:
        return dataclass(c, slots=True, unsafe_hash=True, kw_only=kw_only)

    return make if cls is None else make(cls)
