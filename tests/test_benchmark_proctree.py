"""benchmarks/proctree.py: the CPU and memory of a worker with its forked work horses, as many_accounts.py reports
them. A figure read off the live processes alone would leave out every work horse that already exited, and the
memory of the ones still running."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import proctree

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

# A "worker": one child burns 0.4 s of CPU and exits (the worker waits for it, as RQ does for a work horse), then
# a second child holds 64 MB while it runs.
WORKER = r"""
import os, sys, time
pid = os.fork()
if pid == 0:
    start = time.process_time()
    while time.process_time() - start < 0.4:
        pass
    os._exit(0)
os.waitpid(pid, 0)
if os.fork() == 0:
    blob = bytearray(64 * 2**20)
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    print("horse ready", flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


@pytest.fixture
def worker():
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "horse ready"
        yield proc
    finally:
        for pid in reversed(proctree.descendants(proctree.read_proc(), proc.pid)):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        proc.wait(10)


def test_a_workers_cpu_includes_its_exited_work_horses_and_its_memory_its_live_ones(worker):
    procs = proctree.read_proc()
    tree = proctree.descendants(procs, worker.pid)
    assert len(tree) == 2  # the worker and its live horse; the exited one is gone

    assert procs[worker.pid].own_cpu < 0.3  # the worker itself did little
    assert proctree.tree_cpu(procs, worker.pid) >= 0.35  # the exited horse's 0.4 s counts

    assert procs[worker.pid].rss < 50 * 2**20
    assert proctree.tree_rss(procs, worker.pid) >= procs[worker.pid].rss + 64 * 2**20


def test_the_sampler_reports_the_peak_sum_of_the_watched_trees_and_cpu_between_two_moments(worker):
    sampler = proctree.TreeSampler({"workers": lambda procs: [worker.pid]}, watched=lambda: [worker.pid], interval=0.05)
    sampler.start()
    start = time.time()
    time.sleep(0.3)
    end = time.time()
    sampler.stop()

    peak = sampler.peak()
    assert peak is not None and peak.processes == 2
    assert peak.rss >= 64 * 2**20
    assert peak.pss >= 60 * 2**20 or peak.pss == 0  # PSS only where smaps_rollup is readable
    busy, cpu = sampler.between(start, end)
    assert 0 <= cpu["workers"] < 0.2  # both processes sleep: the horse's earlier 0.4 s is before the window
    assert busy >= cpu["workers"]
