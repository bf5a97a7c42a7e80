"""RQ entry points. Thin on purpose: the work is in :mod:`dispatch` and :mod:`reconcile`."""

from __future__ import annotations

from typing import Any


def drain_account(account: str) -> dict[str, Any]:
    from .dispatch import drain_account as drain

    return drain(account).as_dict()


def sweep() -> dict[str, Any]:
    from .reconcile import sweep as run_sweep

    return run_sweep().as_dict()
