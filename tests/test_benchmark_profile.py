"""benchmarks/profile_drain.py times the drain's phases by wrapping the app's functions where they live."""

from benchmarks.profile_drain import targets


def test_every_phase_the_drain_profile_times_names_a_function_that_exists():
    """Failed on efa807f: the split of lifecycle and dispatch moved is_paused, account_gate and the next-due reads;
    the profile skips a target it cannot find, so its "checks before each record" row quietly measured only
    call_in_flight, and ``--record`` would have written that to docs/benchmarks.md as the checks' cost."""
    missing = [
        f"{getattr(owner, '__name__', owner)}.{name}" for owner, name, _ in targets() if not hasattr(owner, name)
    ]
    assert missing == []
