"""A faithful local fake of the loyalty platforms, for demos, staging and tests (DESIGN.md, "The sandbox").

``PointsSandbox`` is the platform itself (state, validation, faults, ledger); ``SandboxServer``/``serve``
put it on a loopback HTTP port; ``register_responses`` plugs it into ``responses`` for in-process tests.
"""

from __future__ import annotations

from typing import Any

from .points import DUPLICATE_MODES, FAULT_KINDS, Faults, PointsSandbox, SandboxResponse, raising_timeouts
from .server import SandboxServer, serve

__all__ = [
    "DUPLICATE_MODES",
    "FAULT_KINDS",
    "Faults",
    "PointsSandbox",
    "SandboxResponse",
    "SandboxServer",
    "raising_timeouts",
    "register_responses",
    "serve",
]


def __getattr__(name: str) -> Any:
    # ``responses`` is a test dependency: import it only when someone asks for the responses transport.
    if name == "register_responses":
        from .responses_mock import register_responses

        return register_responses
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
