"""CPU and memory of whole process trees, read from /proc: a worker with its forked work horses, PostgreSQL with
its backends.

Work horses and database backends come and go during a run; reading only the processes alive at the end would
miss every one that already exited. A process that has waited for its children carries their CPU in its own
``cutime``/``cstime``, so the CPU of a tree at any moment is: the root's own time, plus what its reaped children
used, plus (recursively) the trees of its children still alive. RSS is a moment's figure: the sum over the live
tree (shared pages counted once per process, as ``ps`` and the target count them); PSS splits shared pages
between the processes that map them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import cpu_times

HZ = float(os.sysconf("SC_CLK_TCK"))
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str
    own_cpu: float  # seconds, user + system, of this process itself
    reaped_cpu: float  # seconds used by the children it has waited for (and theirs)
    rss: int  # bytes


def read_proc(proc: Path | str = "/proc") -> dict[int, Proc]:
    """Every process on the machine, as it is now."""
    found = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        f = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = Proc(
            pid=int(entry.name),
            ppid=int(f[1]),
            name=name,
            own_cpu=(float(f[11]) + float(f[12])) / HZ,
            reaped_cpu=(float(f[13]) + float(f[14])) / HZ,
            rss=int(f[21]) * PAGE,
        )
    return found


def descendants(procs: dict[int, Proc], root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = [], [root] if root in procs else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(procs: dict[int, Proc], root: int) -> float:
    """CPU seconds the tree under ``root`` has used so far, the exited (and reaped) processes included."""
    tree = descendants(procs, root)
    return sum(procs[pid].own_cpu for pid in tree) + sum(procs[pid].reaped_cpu for pid in tree)


def tree_rss(procs: dict[int, Proc], root: int) -> int:
    return sum(procs[pid].rss for pid in descendants(procs, root))


def pss(pid: int) -> int:
    """Proportional set size in bytes (0 if the process is gone or its smaps cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def roots_named(procs: dict[int, Proc], name: str) -> list[int]:
    """Processes called ``name`` whose parent is not: e.g. each PostgreSQL postmaster (its backends are below it)."""
    return [p.pid for p in procs.values() if p.name == name and (p.ppid not in procs or procs[p.ppid].name != name)]


@dataclass
class Sample:
    at: float  # Unix time
    busy: float  # the machine's busy CPU seconds so far (every core, every process)
    cpu: dict[str, float]  # CPU seconds so far per group
    rss: int  # bytes, the watched trees together (workers and their horses)
    pss: int
    processes: int  # how many processes the watched trees had


class TreeSampler(threading.Thread):
    """Every ``interval`` seconds: the CPU used so far by each group of process trees, and the RSS (and PSS) of
    the ``watched`` trees together. ``groups`` maps a label to a function giving the roots of that group's trees
    (asked at every sample, so roots that start later, such as the workers, are picked up)."""

    def __init__(
        self,
        groups: dict[str, Callable[[dict[int, Proc]], Iterable[int]]],
        watched: Callable[[], Iterable[int]],
        interval: float = 0.25,
    ) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.watched = watched
        self.interval = interval
        self.samples: list[Sample] = []
        self.done = threading.Event()

    def take(self) -> Sample:
        procs = read_proc()
        cpu = {label: sum(tree_cpu(procs, root) for root in roots(procs)) for label, roots in self.groups.items()}
        tree = [pid for root in self.watched() for pid in descendants(procs, root)]
        sample = Sample(
            at=time.time(),
            busy=cpu_times()[0],
            cpu=cpu,
            rss=sum(procs[pid].rss for pid in tree),
            pss=sum(pss(pid) for pid in tree),
            processes=len(tree),
        )
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        while not self.done.is_set():
            self.take()
            self.done.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling, with one last sample now (call it while the watched processes still live)."""
        self.done.set()
        self.join()
        self.take()

    def between(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """(machine busy CPU seconds, CPU seconds per group) from the last sample at or before ``start`` to the
        first at or after ``end`` (the nearest ones where there are none)."""
        before = [s for s in self.samples if s.at <= start] or self.samples[:1]
        after = [s for s in self.samples if s.at >= end] or self.samples[-1:]
        a, b = before[-1], after[0]
        return b.busy - a.busy, {label: b.cpu.get(label, 0.0) - a.cpu.get(label, 0.0) for label in b.cpu}

    def peak(self) -> Sample | None:
        return max(self.samples, key=lambda s: s.rss, default=None)
