"""Procession beside its floor and its peers: one run, one table.

    python -m benchmarks.compare [--n 10000] [--windows 50,500] [--only a,b]

Needs ``KAFKA_BOOTSTRAP_SERVERS`` for the Kafka systems (``./dev bench`` starts
a local broker when it is unset). Each system runs in a subprocess of its own,
one after another, so none shares an interpreter or a core with another's
leftovers; each prints its figures as JSON on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

SYSTEMS = (
    "procession-rdkafka",
    "procession-rdkafka-routed",
    "procession-kafka",
    "floor-rdkafka",
    "floor",
    "procession-memory",
    "dbos",
    "temporal",
)
#: The event-sourced shop (docs/event-sourcing.md): its own table, not the comparison's.
SHOP = ("shop-sqlite", "shop-postgres")


async def _one(system: str, n: int, window: int) -> dict[str, Any]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if system == "procession-kafka":
        from benchmarks import procession_kafka  # noqa: PLC0415 - each system imports its own

        result = await procession_kafka.run(servers, n, window, client="aiokafka")
    elif system == "procession-rdkafka":
        from benchmarks import procession_kafka  # noqa: PLC0415

        result = await procession_kafka.run(servers, n, window, client="librdkafka")
    elif system == "procession-rdkafka-routed":
        from benchmarks import procession_kafka  # noqa: PLC0415

        result = await procession_kafka.run(servers, n, window, client="librdkafka", routed=True)
    elif system == "floor-rdkafka":
        from benchmarks import floor_rdkafka  # noqa: PLC0415

        result = await floor_rdkafka.run(servers, n, window)
    elif system == "floor":
        from benchmarks import floor  # noqa: PLC0415

        result = await floor.run(servers, n, window)
    elif system == "procession-memory":
        from benchmarks import procession_memory  # noqa: PLC0415

        result = await procession_memory.run(n, window)
    elif system == "dbos":
        from benchmarks.peers import dbos_order, postgres  # noqa: PLC0415

        with postgres.postgres() as url:
            result = await dbos_order.run(url, n, window)
        result.notes = f"PostgreSQL {postgres.version().split()[0]} on 127.0.0.1"
    elif system == "temporal":
        from benchmarks.peers import temporal_order  # noqa: PLC0415

        result = await temporal_order.run(n, window)
    elif system.startswith("procession-kafka-traced"):  # -traced: all; -traced-10: 10%
        from benchmarks import procession_kafka  # noqa: PLC0415

        share = int(system.removeprefix("procession-kafka-traced").strip("-") or 100) / 100
        result = await procession_kafka.run(servers, n, window, traced=share)
    elif system == "shop-sqlite":
        import tempfile  # noqa: PLC0415

        from benchmarks import shop  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as tmp:
            result = await shop.run(servers, n, window, f"sqlite:///{tmp}/shop.db")
        result.system, result.notes = "event-sourced shop", "SQLite, WAL"
    elif system == "shop-postgres":
        from benchmarks import shop  # noqa: PLC0415
        from benchmarks.peers import postgres  # noqa: PLC0415

        with postgres.postgres() as url:
            result = await shop.run(servers, n, window, url)
        result.system = "event-sourced shop"
        result.notes = f"PostgreSQL {postgres.version().split()[0]}"
    else:
        known = ", ".join([*SYSTEMS, *SHOP, "procession-kafka-traced"])
        raise SystemExit(f"unknown system {system!r}; one of {known}")
    return result.summary()


def run_system(system: str, n: int, window: int) -> dict[str, Any]:
    """One system in a fresh interpreter; its JSON figures."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.compare",
            "--one",
            system,
            "--n",
            str(n),
            "--windows",
            str(window),
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} failed (exit {proc.returncode}); its output:\n{proc.stdout}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def broker() -> str:
    """The Kafka broker the run measured, as its stamp names it: ``BENCH_BROKER``,
    which ``./dev`` sets for a broker of its own (its release); a broker given
    by ``KAFKA_BOOTSTRAP_SERVERS`` alone is not named by a release it may not be
    (set ``BENCH_BROKER`` to describe it)."""
    return os.environ.get("BENCH_BROKER") or (
        "a Kafka broker given by KAFKA_BOOTSTRAP_SERVERS (release not recorded)"
    )


def versions() -> str:
    """The versions the run measured."""
    from benchmarks.peers import postgres, temporal_order  # noqa: PLC0415

    parts = [
        f"Procession {version('procession')}",
        broker(),
        f"aiokafka {version('aiokafka')}",
        f"DBOS Transact {version('dbos')}",
        f"PostgreSQL {postgres.version().split()[0]}",
        f"temporalio {version('temporalio')}",
        f"Temporal CLI {temporal_order.version()}",
    ]
    return ", ".join(parts)


Results = dict[int, dict[str, dict[str, Any]]]  # window -> system -> figures


def table(results: Results, n: int, repeat: int = 1) -> str:
    """The comparison as Markdown, with Procession's ratios to each at the same window."""
    header = [
        "| in flight | system | orders/s | records/s | latency p50 / p95 / p99 (ms) "
        "| peak RSS (MiB) | CPU per order (ms) | Procession on Kafka ÷ this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [row for window, rs in results.items() for row in _rows(window, rs)]
    best = {
        key: max(rs[key]["per_s"] for rs in results.values())
        for key in next(iter(results.values()))
    }
    summary = ""
    mine = _ours(best)
    if mine is not None:
        ours = best[mine]
        summary = (
            "\n\nBest of each across the windows, orders/s: "
            + ", ".join(
                f"{next(iter(results.values()))[k]['system']} {v:,.0f}"
                + ("" if k == mine else f" (Procession {ours / v:.2f}\N{MULTIPLICATION SIGN})")
                for k, v in best.items()
            )
            + "."
        )
    some = next(iter(results.values()))
    note = (
        f"\n\n{n:,} orders per system and window (after twice the window, at least 20, "
        "unmeasured warm-up orders); "
        + (f"Procession and the floor: the median of {repeat} runs; " if repeat > 1 else "")
        + "the order saga: reserve stock and charge the card in parallel, then ship. "
        "Records per order on Kafka: "
        + ", ".join(
            f"{some[k]['system']} {some[k]['records_per_order']:.1f}"
            for k in (
                "procession-rdkafka",
                "procession-rdkafka-routed",
                "procession-kafka",
                "floor-rdkafka",
                "floor",
            )
            if k in some
        )
        + "."
    )
    return "\n".join(header + rows) + summary + note


def latencies(figures: dict[str, Any]) -> str:
    """A system's latency percentiles for a table cell: ``p50 / p95 / p99`` in ms."""
    return " / ".join(f"{figures[p]:,.0f}" for p in ("p50_ms", "p95_ms", "p99_ms"))


#: The floors: raw clients doing Procession's record work, no saga logic.
FLOORS = ("floor-rdkafka", "floor")


def _ours(results: dict[str, Any]) -> str | None:
    """Which run is "Procession on Kafka" in the ratios: the default client's, if run."""
    return next((k for k in ("procession-rdkafka", "procession-kafka") if k in results), None)


def _rows(window: int, results: dict[str, dict[str, Any]]) -> list[str]:
    mine = _ours(results)
    ours = results[mine] if mine is not None else None
    rows = []
    for key, r in results.items():
        rps = "—" if r["records_per_s"] is None else f"{r['records_per_s']:,.0f}"
        rss = ", ".join(f"{k} {v:,.0f}" for k, v in r["rss_mib"].items())
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.get("cpu_ms", {}).items()) or "—"
        ratio = ""
        if ours is not None and key != mine:
            if key in FLOORS:
                ratio = f"{ours['records_per_s'] / r['records_per_s']:.0%} of its records/s"
            else:
                times = ours["per_s"] / r["per_s"]
                ratio = f"{times:.2f}\N{MULTIPLICATION SIGN} its orders/s"
        name = r["system"] + (f" ({r['notes']})" if r["notes"] else "")
        latency = latencies(r)
        rows.append(
            f"| {window:,} | {name} | {r['per_s']:,.0f} | {rps} | {latency} | {rss} | {cpu} "
            f"| {ratio} |"
        )
    return rows


#: Orders per system and window when ``--n`` is not given.
N = 10_000


def add_load_options(parser: argparse.ArgumentParser, n: int | None = N) -> None:
    """The options that shape the comparison's load (here and in ``./dev bench``)."""
    parser.add_argument("--n", type=int, default=n, help=f"orders per system ({N:,})")
    parser.add_argument("--windows", default="50,500", help="orders in flight at most; a run each")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of our systems; median kept")


def run_options(args: argparse.Namespace) -> str:
    """The comparison for parsed :func:`add_load_options`."""
    windows = [int(w) for w in args.windows.split(",")]
    return compare(args.n or N, windows, args.only, args.repeat)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_load_options(parser)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one system, print its JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(_one(args.one, args.n, int(args.windows)))), flush=True)
        # Skip interpreter teardown: the Temporal SDK's native threads can abort it
        # (SIGABRT from its protobuf extension) after the figures are out.
        os._exit(0)
    print(run_options(args))
    return 0


#: Systems quick enough to run several times; the run with the median rate is
#: reported, as the broker's and this machine's pace vary between runs.
REPEATED = ("procession-rdkafka", "procession-kafka", "floor-rdkafka", "floor", "procession-memory")


def compare(n: int, windows: Sequence[int], only: str | None = None, repeat: int = 3) -> str:
    """Run every system (or ``only`` these) at every window; the table.

    Systems in :data:`REPEATED` run ``repeat`` times, interleaved, and report
    their median run; the peers, which take minutes, run once. A broker that
    has just started is slower until its JIT has warmed up, so an unmeasured
    floor run goes first.
    """
    systems = only.split(",") if only else list(SYSTEMS)
    if {"procession-rdkafka", "procession-kafka", *FLOORS} & set(systems):
        print("compare: warming the broker up (unmeasured) ...", file=sys.stderr)
        run_system("floor", min(n, 2000), max(windows))
    results: Results = {}
    for window in windows:
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
        for rep in range(repeat):
            for system in systems:
                if rep > 0 and system not in REPEATED:
                    continue
                print(
                    f"compare: {system}, {n:,} orders, {window:,} in flight, run {rep + 1} ...",
                    file=sys.stderr,
                )
                runs[system].append(run_system(system, n, window))
        results[window] = {
            s: sorted(r, key=lambda f: f["per_s"])[len(r) // 2] for s, r in runs.items()
        }
    return table(results, n, repeat)


if __name__ == "__main__":
    sys.exit(main())
