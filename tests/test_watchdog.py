"""The one thread that enforces every call's whole-call deadline (providers/watchdog.py)."""

import os
import threading
import time

from django_points_earn.providers.watchdog import Watchdog


def test_deadlines_fire_in_order_and_cancelled_ones_never_fire():
    dog, fired = Watchdog(), []
    start = time.monotonic()
    late = dog.at(start + 0.30, lambda: fired.append("late"))
    dog.at(start + 0.20, lambda: fired.append("middle"))
    cancelled = dog.at(start + 0.05, lambda: fired.append("cancelled"))
    dog.at(start + 0.10, lambda: fired.append("early, added after a later one"))
    cancelled.cancel()
    time.sleep(0.45)
    assert fired == ["early, added after a later one", "middle", "late"]
    late.cancel()  # after it fired: nothing happens


def test_a_hundred_calls_at_once_share_one_thread():
    dog, fired = Watchdog(), []
    before = threading.active_count()
    entries = [dog.at(time.monotonic() + 0.05, lambda i=i: fired.append(i)) for i in range(100)]
    assert threading.active_count() == before + 1
    for entry in entries[::2]:
        entry.cancel()
    time.sleep(0.2)
    assert sorted(fired) == list(range(1, 100, 2))


def test_a_failing_action_does_not_stop_the_others():
    dog, fired = Watchdog(), []
    dog.at(time.monotonic() + 0.02, lambda: 1 / 0)
    dog.at(time.monotonic() + 0.04, lambda: fired.append("next"))
    time.sleep(0.15)
    assert fired == ["next"]


def test_a_forked_child_gets_a_working_watchdog_of_its_own():
    from django_points_earn.providers.watchdog import WATCHDOG

    WATCHDOG.at(time.monotonic() + 60, lambda: None)  # the parent's thread is running
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its deadline must still fire
        try:
            WATCHDOG.at(time.monotonic() + 0.05, lambda: os.write(write_fd, b"fired"))
            time.sleep(0.3)
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 10) == b"fired"
    os.close(read_fd)
