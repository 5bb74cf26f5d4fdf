"""Which CPUs the monitor and the local Prefect server run on.

A cycle hands work to other threads and waits for it ~150 times: each Polars filter,
join, sort or group-by runs on Polars' thread pool, and each task run passes its
state to Prefect's worker threads. Waking a thread on another CPU that sits idle
costs an inter-processor interrupt and, on a virtual machine, that vCPU's way out
of its halt: measured here (2 vCPUs), a Polars filter of ten rows took ~110 µs with
the process free to use both CPUs and ~28 µs kept on one. Measured in the monitor
with the local server on the other CPU, one CPU against two:

- 100 accounts (~400 position rows), a cycle a second: p50 ~85 -> ~62-69 ms;
- 1,000 x 20 (20,000 rows), a cycle every 0.27 s: p50 91 -> 73 ms, p99 the same;
- 10,000 x 20 (200,000 rows): p50 the same (~265 ms) a cycle a second, but back
  to back p99 ~550 -> ~800 ms: the journal's landing of 200,000-row cycles and the
  next cycle then share one CPU, and Polars' parallel work wins over its hand-offs.

So a monitor whose book has at most :data:`SMALL_BOOK_ROWS` position rows keeps
``RISK_MONITOR_CPUS`` CPUs (default 1: the highest-numbered it may use) from its
second cycle on (the first shows the book's size); a bigger book keeps them all.
The local Prefect server that ``flows.server.start`` starts always gets the
others, so its bursts of event ingest never take a small book's cycle CPU.
``RISK_MONITOR_CPUS=0`` leaves placement to the operating system; so does a
machine with no CPU to spare. Every thread of the monitor goes with it: moving
Prefect's event and log senders to the server's CPU raised the 100-account p50
from ~68 to 84-88 ms (the cycle waits on them more than it competes with them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: CPUs the monitor keeps unless ``RISK_MONITOR_CPUS`` says otherwise.
DEFAULT_MONITOR_CPUS = 1
#: Books up to this many position rows run their cycles on the monitor's CPUs (measured above:
#: 20,000 rows gained, 200,000 lost; the bound sits between them).
SMALL_BOOK_ROWS = 50_000
_TASKS = Path("/proc/self/task")


@dataclass(frozen=True)
class Placement:
    """The monitor's CPUs and the local server's (the rest of those this process may use)."""

    monitor: frozenset[int]
    server: frozenset[int]


def monitor_cpu_count() -> int:
    """How many CPUs the monitor keeps (``RISK_MONITOR_CPUS``, else :data:`DEFAULT_MONITOR_CPUS`); 0: no placement."""
    raw = os.environ.get("RISK_MONITOR_CPUS", "").strip()
    if not raw:
        return DEFAULT_MONITOR_CPUS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"RISK_MONITOR_CPUS={raw!r}: expected a whole number of CPUs (0: no placement)")
    return value


def plan(available: set[int] | frozenset[int], keep: int) -> Placement | None:
    """The monitor keeps the ``keep`` highest-numbered of ``available`` CPUs, the server gets the rest.

    None when ``keep`` is 0 or leaves the server nothing: then nobody is placed.
    """
    cpus = sorted(available)
    if keep <= 0 or len(cpus) <= keep:
        return None
    return Placement(monitor=frozenset(cpus[-keep:]), server=frozenset(cpus[:-keep]))


def cycle_plan(book_rows: int) -> Placement | None:
    """:func:`current_plan` for a book of ``book_rows`` position rows; None (no placement) for a big book."""
    return current_plan() if book_rows <= SMALL_BOOK_ROWS else None


def current_plan() -> Placement | None:
    """:func:`plan` for the CPUs this process may use now and ``RISK_MONITOR_CPUS``."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return plan(os.sched_getaffinity(0), monitor_cpu_count())


def pin_process(cpus: set[int] | frozenset[int]) -> bool:
    """Keep every thread of this process on ``cpus``; threads started later inherit it from theirs.

    ``sched_setaffinity`` moves one thread; the Polars, DuckDB, allocator and Prefect
    threads already running are moved one by one. Returns False if a thread could not
    be moved (not permitted here, e.g. outside the container's CPU set).
    """
    moved = True
    for tid in _thread_ids():
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError:
            moved = False
    return moved


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(_TASKS)]
    except OSError:
        return [0]  # no /proc: this thread only


@contextlib.contextmanager
def monitor_placement(placement: Placement | None) -> Iterator[Placement | None]:
    """Run the block on ``placement``'s monitor CPUs, then put every thread back on the CPUs it
    may use now. Yields the placement; None (no placement) runs the block where it is."""
    if placement is None:
        yield None
        return
    before = os.sched_getaffinity(0)
    if not pin_process(placement.monitor):
        pin_process(before)
        yield None
        return
    try:
        yield placement
    finally:
        pin_process(before)
