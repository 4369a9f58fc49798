"""Topics checked against what an application needs: the pure comparison, then on Kafka."""

from __future__ import annotations

import dataclasses
import itertools
import os

import pytest

from procession._errors import TopicsError
from procession.topics._layout import Topics, TopicSpec
from procession.workers._port import TopicInfo
from procession.workers._topic_check import problems, verify
from tests.conftest import Backend

_prefixes = itertools.count(1)


def as_found(specs: list[TopicSpec]) -> dict[str, TopicInfo]:
    """What a broker would report for topics created exactly as ``specs`` say."""
    return {
        s.name: TopicInfo(
            s.name,
            s.partitions,
            compacted=s.compacted,
            max_message_bytes=s.max_message_bytes,
            replication=s.replication,
            retention_ms=s.retention_ms,
            min_insync=s.min_insync,
        )
        for s in specs
    }


SPECS = Topics("shop", partitions=4, task_partitions=2).specs(["Charge"])


def test_topics_created_as_specified_have_no_problems() -> None:
    assert problems(SPECS, as_found(SPECS)) == []


def test_a_missing_topic_is_named() -> None:
    found = as_found(SPECS)
    del found["shop.tasks.Charge"]
    assert problems(SPECS, found) == ["shop.tasks.Charge: missing"]


@pytest.mark.parametrize("partitions", [3, 5])
def test_other_partition_counts_are_named(partitions: int) -> None:
    found = as_found(SPECS)
    found["shop.process"] = dataclasses.replace(found["shop.process"], partitions=partitions)
    assert problems(SPECS, found) == [f"shop.process: {partitions} partitions, expected 4"]


def test_a_process_topic_that_forgets_is_named_but_does_not_stop_a_runtime() -> None:
    found = as_found(SPECS)
    week = 7 * 24 * 3600 * 1000
    found["shop.process"] = dataclasses.replace(found["shop.process"], retention_ms=week)
    assert problems(SPECS, found) == [
        f"shop.process: retention.ms {week}, expected unlimited (-1): "
        "history, replay and recovery read a process's whole stream"
    ]
    assert problems(SPECS, found, settings=False) == []
    found["shop.process"] = dataclasses.replace(found["shop.process"], retention_ms=None)
    assert problems(SPECS, found) == []  # Kafka reports -1 as no limit


def test_a_changelog_that_is_not_compacted_is_named() -> None:
    found = as_found(SPECS)
    found["shop.changelog"] = dataclasses.replace(found["shop.changelog"], compacted=False)
    assert problems(SPECS, found) == ["shop.changelog: not compacted, must be"]


def test_a_compacted_event_topic_is_named() -> None:
    found = as_found(SPECS)
    found["shop.events"] = dataclasses.replace(found["shop.events"], compacted=True)
    [problem] = problems(SPECS, found)
    assert problem.startswith("shop.events: compacted, must not be")


def test_a_smaller_max_message_bytes_is_named_and_a_larger_one_is_fine() -> None:
    found = as_found(SPECS)
    dead = found["shop.dead-letter"]
    found["shop.dead-letter"] = dataclasses.replace(dead, max_message_bytes=1_000_000)
    found["shop.process"] = dataclasses.replace(found["shop.process"], max_message_bytes=10**8)
    assert problems(SPECS, found) == [
        "shop.dead-letter: max.message.bytes 1000000, expected at least 8388608"
    ]


def test_a_lower_replication_is_named_and_a_higher_one_is_fine() -> None:
    specs = Topics("shop", replication=3).specs([])
    found = as_found(specs)
    found["shop.events"] = dataclasses.replace(found["shop.events"], replication=1)
    found["shop.process"] = dataclasses.replace(found["shop.process"], replication=5)
    assert problems(specs, found) == ["shop.events: replication factor 1, expected at least 3"]


def test_co_partitioned_topics_with_different_counts_are_named() -> None:
    specs = [TopicSpec("a", 3), TopicSpec("b", 6)]
    found = as_found(specs)
    assert problems(specs, found) == []
    assert problems(specs, found, co_partitioned=[("a", "b")]) == [
        "b: 6 partitions but a has 3; they must be co-partitioned"
    ]


def test_every_problem_is_listed_not_only_the_first() -> None:
    found = as_found(SPECS)
    del found["shop.events"]
    found["shop.changelog"] = TopicInfo("shop.changelog", 1)
    assert problems(SPECS, found, co_partitioned=[("shop.process", "shop.changelog")]) == [
        "shop.events: missing",
        "shop.changelog: 1 partitions, expected 4",
        "shop.changelog: not compacted, must be",
        "shop.changelog: 1 partitions but shop.process has 4; they must be co-partitioned",
    ]


async def test_verify_returns_what_it_found_when_all_is_as_specified(backend: Backend) -> None:
    transport = backend.transport()
    specs = Topics(unique_prefix(), partitions=2, task_partitions=1).specs(["Charge"])
    await transport.create_topics(specs)
    found = await verify(transport, specs)
    assert sorted(found) == sorted(s.name for s in specs)
    assert found[specs[2].name].compacted


@pytest.mark.backends("kafka")
async def test_verify_names_a_changelog_not_compacted_and_a_missing_task_topic(
    backend: Backend,
) -> None:
    transport = backend.transport()
    topics = Topics(unique_prefix(), partitions=2, task_partitions=1)
    specs = topics.specs(["Charge"])
    wrong = [
        dataclasses.replace(s, compacted=False) if s.name == topics.changelog else s
        for s in specs
        if s.name != topics.tasks("Charge")
    ]
    await transport.create_topics(wrong)
    with pytest.raises(TopicsError) as caught:
        await verify(transport, specs, co_partitioned=[(topics.process, topics.changelog)])
    assert caught.value.problems == [
        f"{topics.changelog}: not compacted, must be",
        f"{topics.tasks('Charge')}: missing",
    ]


@pytest.mark.backends("kafka")
async def test_an_impossible_topic_is_refused_with_the_brokers_reason(backend: Backend) -> None:
    transport = backend.transport()
    name = f"{unique_prefix()}.process"
    with pytest.raises(TopicsError) as caught:
        await transport.create_topics([TopicSpec(name, 1, replication=3)])
    [problem] = caught.value.problems
    assert problem.startswith(f"{name}: ")
    assert "replication factor" in problem.lower()
    assert await transport.describe([name]) == {}


def unique_prefix() -> str:
    return f"check{os.getpid()}-{next(_prefixes)}"


def test_a_topic_no_write_can_reach_is_named_even_for_a_runtime() -> None:
    found = as_found(SPECS)
    found["shop.process"] = dataclasses.replace(found["shop.process"], min_insync=2)
    expected = [
        "shop.process: min.insync.replicas 2 is above its replication factor 1: "
        "no write to it can succeed"
    ]
    assert problems(SPECS, found) == expected
    assert problems(SPECS, found, settings=False) == expected


@pytest.mark.backends("kafka", "rdkafka")
async def test_a_broker_topic_no_write_can_reach_is_refused_before_a_runtime_starts(
    backend: Backend,
) -> None:
    transport = backend.transport()
    topics = Topics(unique_prefix(), partitions=1, task_partitions=1)
    specs = topics.specs([])
    await transport.create_topics(
        [dataclasses.replace(s, min_insync=2) if s.name == topics.process else s for s in specs]
    )
    with pytest.raises(TopicsError) as caught:
        await verify(transport, specs, settings=False)
    assert caught.value.problems == [
        f"{topics.process}: min.insync.replicas 2 is above its replication factor 1: "
        "no write to it can succeed"
    ]
