"""Run the benchmarks and write their figures into docs/benchmarks.md.

./dev bench                      # full run, updates the docs
./dev bench --quick              # tiny sizes, prints only
./dev bench --n 2000 --windows 500 --only procession-rdkafka,floor-rdkafka   # a part

The comparison (benchmarks/compare.py) needs KAFKA_BOOTSTRAP_SERVERS; ./dev
bench starts a local broker when it is unset.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import big
from benchmarks.compare import (
    N,
    add_load_options,
    broker,
    compare,
    latencies,
    run_options,
    run_system,
    versions,
)
from benchmarks.core import best_core
from benchmarks.memory import run_memory

DOC = Path(__file__).parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- in-memory figures: begin -->", "<!-- in-memory figures: end -->"
CBEGIN, CEND = "<!-- comparison: begin -->", "<!-- comparison: end -->"
BBEGIN, BEND = "<!-- big process: begin -->", "<!-- big process: end -->"
SBEGIN, SEND = "<!-- event-sourced shop: begin -->", "<!-- event-sourced shop: end -->"
TBEGIN, TEND = "<!-- tracing overhead: begin -->", "<!-- tracing overhead: end -->"
KBEGIN, KEND = "<!-- two kafka clients: begin -->", "<!-- two kafka clients: end -->"
#: Procession on each Kafka client beside each client's floor.
CLIENTS = (
    "procession-rdkafka",
    "procession-rdkafka-routed",
    "procession-kafka",
    "floor-rdkafka",
    "floor",
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rss_after(processes: int) -> dict[str, float]:
    """In a fresh interpreter, so nothing else measured here inflates it."""
    code = (
        "import asyncio, json; from benchmarks.memory import run_memory; "
        f"print(json.dumps(asyncio.run(run_memory({processes}, retain_records=1000))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=DOC.parent.parent,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes; print, do not write docs")
    add_load_options(parser, n=None)  # --n or --only: that part only, printed, not written
    parser.add_argument(
        "--in-memory-only", action="store_true", help="only the core and in-memory figures"
    )
    parser.add_argument(
        "--kafka-clients",
        action="store_true",
        help="only Procession on both Kafka clients beside both floors (written to the docs)",
    )
    args = parser.parse_args(argv)
    if args.n is not None or args.only:
        print(run_options(args))
        return 0
    stamp = f"Measured {datetime.date.today().isoformat()} on {machine()}."
    if args.kafka_clients:
        n = 20 if args.quick else 5_000
        ktable = compare(n, [50, 500], ",".join(CLIENTS), repeat=1 if args.quick else args.repeat)
        kstamp = f"{stamp[:-1]}; {client_versions()}."
        print(kstamp)
        print(ktable)
        if not args.quick:
            _write(KBEGIN, KEND, f"{kstamp}\n\n{ktable}")
        return 0
    if not args.in_memory_only:
        # first: a broker that has just started compiles code for a while, and
        # the single-core figures below would pay for it
        n = 20 if args.quick else N
        windows = [5] if args.quick else [int(w) for w in args.windows.split(",")]
        ctable = compare(n, windows, repeat=1 if args.quick else args.repeat)
        cstamp = f"{stamp[:-1]}; {versions()}."
        print(cstamp)
        print(ctable)
        if not args.quick:
            _write(CBEGIN, CEND, f"{cstamp}\n\n{ctable}")
        ttable = tracing_table(args.quick)
        print(ttable)
        if not args.quick:
            _write(TBEGIN, TEND, f"{cstamp}\n\n{ttable}")
        stable = shop_table(args.quick)
        print(stable)
        if not args.quick:
            _write(SBEGIN, SEND, f"{cstamp}\n\n{stable}")
    btable = big_table(args.quick, os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    print(btable)
    if not args.quick:
        _write(BBEGIN, BEND, f"{stamp}\n\n{btable}")
    table = in_memory_table(args.quick)
    print(stamp)
    print(table)
    if not args.quick:
        _write(BEGIN, END, f"{stamp}\n\n{table}")
    return 0


def client_versions() -> str:
    """The versions the Kafka clients' comparison measured."""
    import confluent_kafka  # noqa: PLC0415 - the rdkafka extra

    rd, lib = version("confluent-kafka"), confluent_kafka.libversion()[0]
    return f"{broker()}, aiokafka {version('aiokafka')}, confluent-kafka {rd} (librdkafka {lib})"


def tracing_table(quick: bool, window: int = 500, repeat: int = 3) -> str:
    """Procession on Kafka with every span exported over OTLP, beside untraced:
    interleaved runs, the median of each."""
    n = 20 if quick else 5_000
    runs: dict[str, list[dict[str, Any]]] = {
        "procession-rdkafka": [],
        "procession-kafka-traced": [],
        "procession-kafka-traced-10": [],
    }
    order = list(runs)
    for rep in range(1 if quick else repeat):  # each rep in another order: later runs
        for system in order[rep:] + order[:rep]:  # meet a broker with more topics
            runs[system].append(run_system(system, n, window))
    median = {k: sorted(v, key=lambda r: r["per_s"])[len(v) // 2] for k, v in runs.items()}
    off, on = median["procession-rdkafka"], median["procession-kafka-traced"]
    tenth = median["procession-kafka-traced-10"]
    rows = [
        f"| {r['system']} | {r['per_s']:,.0f} | "
        + latencies(r)
        + f" | {', '.join(f'{k} {v:,.0f}' for k, v in r['rss_mib'].items())} | {r['notes']} |"
        for r in (off, on, tenth)
    ]
    return "\n".join(
        [
            f"{n:,} orders, at most {window} in flight; the median of "
            f"{len(runs['procession-rdkafka'])} interleaved runs each. "
            f"Traced: {1 - on['per_s'] / off['per_s']:.1%} fewer orders/s with every trace "
            f"sampled, {1 - tenth['per_s'] / off['per_s']:.1%} with one in ten.",
            "",
            "| system | orders/s | latency p50 / p95 / p99 (ms) | peak RSS (MiB) | spans |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def shop_table(quick: bool, window: int = 50) -> str:
    """The event-sourced shop (SQLite, PostgreSQL) beside bare Procession on Kafka."""
    n = 20 if quick else 2_000
    rows = []
    for system in ("procession-rdkafka", "shop-sqlite", "shop-postgres"):
        r = run_system(system, n, window)
        name = r["system"] + (f" ({r['notes']})" if r["notes"] else "")
        rows.append(
            f"| {name} | {r['per_s']:,.0f} | {latencies(r)} | {r['records_per_order']:.1f} |"
        )
    from benchmarks.shop import store_cost  # noqa: PLC0415

    cost = store_cost(20 if quick else 200)
    costs = ", ".join(f"{k} {v:.1f}" for k, v in cost.items())
    return "\n".join(
        [
            f"{n:,} orders, at most {window} in flight, after {max(20, 2 * window)} unmeasured "
            "warm-up orders. "
            f"The store's own time per order, one thread on SQLite with no Kafka (ms): "
            f"{costs}; {sum(cost.values()):.1f} in all.",
            "",
            "| system | orders/s | latency p50 / p95 / p99 (ms) | records per order |",
            "|---|---|---|---|",
            *rows,
        ]
    )


def big_table(quick: bool, servers: str | None) -> str:
    """One rebase process with thousands of machines, decided and run on Kafka."""
    n = 200 if quick else 10_000
    core = big.run_core(n)
    rows = [
        (
            f"decide the fan-out of one RebaseFailed to {n:,} machines",
            f"{core['fanout_s'] * 1000:,.0f} ms",
            "< 1 s",
            "decide and fold, one core",
        ),
        (
            f"one later TaskCompleted in that {n:,}-machine process",
            f"{core['completion_us']:,.1f} µs",
            "at most twice the 3-machine figure",
            f"3-machine process: {core['completion_small_us']:,.1f} µs (medians)",
        ),
        (
            "changelog bytes written by that TaskCompleted",
            f"{core['changelog_bytes']:,.0f} B",
            "< 10 KB",
            f"{core['changelog_records']:.0f} records: the header and the machine's part",
        ),
    ]
    if servers is not None:
        run = asyncio.run(big.run_kafka(servers, n))
        rows.append(
            (
                f"the {n:,}-instance rebase end to end on Kafka",
                f"{run['seconds']:,.1f} s",
                "completes",
                "broker defaults (1 MB records); processor peak RSS "
                f"{run['rss_processor_mib']:,.0f} MiB, worker {run['rss_worker_mib']:,.0f} MiB",
            )
        )
    return "\n".join(
        ["| measure | figure | target | how |", "|---|---|---|---|"]
        + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    )


def in_memory_table(quick: bool) -> str:
    """The core and in-memory runtime figures (the rebase saga) as Markdown."""
    n_core, n_mem, n_rss = (200, 200, 300) if quick else (10_000, 20_000, 100_000)
    core = best_core(n_core)
    mem = asyncio.run(run_memory(n_mem))
    rss = rss_after(n_rss)
    rows = [
        (
            "pure core, decisions/s (one core)",
            f"{core['decisions_per_s']:,.0f}",
            "≥ 20,000",
            f"{core['decisions']:,} decisions of {n_core:,} rebase processes, best of 5 runs",
        ),
        (
            "in-memory runtime, completed processes/s",
            f"{mem['processes_per_s']:,.0f}",
            "≥ 2,000",
            f"{n_mem:,} rebase processes, 3 async tasks each, ≤ 2,000 in flight",
        ),
        (
            f"in-memory runtime, completed processes/s over {n_rss:,}",
            f"{rss['processes_per_s']:,.0f}",
            "",
            "same, in a fresh process",
        ),
        (
            f"RSS after {n_rss:,} completed processes",
            f"{rss['rss_mib']:,.0f} MiB",
            "",
            f"state released, {rss['stored_states']:,.0f} end markers kept; "
            "log retention 1,000 records",
        ),
    ]
    return "\n".join(
        ["| measure | figure | target | how |", "|---|---|---|---|"]
        + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    )


def _write(begin: str, end: str, body: str) -> None:
    text = DOC.read_text()
    block = f"{begin}\n{body}\n{end}"
    DOC.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), block, text, flags=re.S))
    print(f"written to {DOC}")


if __name__ == "__main__":
    sys.exit(main())
