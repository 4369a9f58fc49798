"""The long-lived commands' collector settings (procession._gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from procession._errors import SettingError
from procession._gc import DEFAULT_THRESHOLD, threshold, tune


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


@pytest.mark.usefixtures("restored")
def test_tune_raises_the_young_threshold_and_freezes_what_exists() -> None:
    _, middle, old = gc.get_threshold()
    tune({"PROCESSION_GC_THRESHOLD": "12345"})
    assert gc.get_threshold() == (12345, middle, old)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored")
def test_zero_keeps_cpythons_settings() -> None:
    gc.set_threshold(700, 10, 10)
    tune({"PROCESSION_GC_THRESHOLD": "0"})
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_unset_means_the_default() -> None:
    assert threshold({}) == threshold({"PROCESSION_GC_THRESHOLD": " "}) == DEFAULT_THRESHOLD


@pytest.mark.parametrize("raw", ["lots", "-5", "1.5"])
def test_a_threshold_that_is_not_a_whole_number_is_refused_by_name(raw: str) -> None:
    with pytest.raises(SettingError, match=f"^PROCESSION_GC_THRESHOLD='{raw}' is not a whole"):
        threshold({"PROCESSION_GC_THRESHOLD": raw})


def test_a_bad_threshold_stops_a_command_with_one_line_and_exit_1() -> None:
    from tests.test_cli import cli, one_line_error  # noqa: PLC0415

    out = cli(
        "worker",
        "tests.kafka_app:app",
        env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PROCESSION_GC_THRESHOLD": "lots"},
    )
    one_line_error(out, 1, "PROCESSION_GC_THRESHOLD='lots' is not a whole number")
