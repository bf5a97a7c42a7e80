"""A faithful local fake of the loyalty platforms, for demos, staging and tests (docs/sandbox.md).

``PointsSandbox`` and ``FabricSandbox`` are the platforms themselves (state, validation, faults, ledger);
``SandboxServer``/``serve`` put them on a loopback HTTP port; ``register_responses`` and
``register_fabric_responses`` plug them into ``responses`` for in-process tests.
"""

from __future__ import annotations

from typing import Any

from .fabric import FabricSandbox
from .faults import FAULT_KINDS, Faults, raising_timeouts
from .points import DUPLICATE_MODES, PointsSandbox
from .response import SandboxResponse
from .server import SandboxServer, serve

__all__ = [
    "DUPLICATE_MODES",
    "FAULT_KINDS",
    "FabricSandbox",
    "Faults",
    "PointsSandbox",
    "SandboxResponse",
    "SandboxServer",
    "raising_timeouts",
    "register_fabric_responses",
    "register_responses",
    "serve",
]


def __getattr__(name: str) -> Any:
    # ``responses`` is a test dependency: import it only when someone asks for the responses transport.
    if name in ("register_responses", "register_fabric_responses"):
        from . import responses_mock

        return getattr(responses_mock, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
