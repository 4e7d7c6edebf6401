"""A Jamf Pro-compatible simulator: a real HTTP server for the demo, tests and benchmarks.

    from jamf.simulator import SimulatorConfig, running_simulator

    with running_simulator(SimulatorConfig(devices=5000, fault_rate=0.1)) as base_url:
        ...  # speak the Jamf Pro API to base_url

Modules: ``config`` (settings), ``computers``/``mobile`` (records generated from (seed, id)),
``fleet`` (mutation overlays, cached queries), ``rsql`` (filters), ``query`` (paging, sort,
sections), ``auth`` (tokens), ``faults``, ``api``/``admin`` (routes), ``app``, ``server``.
"""

from __future__ import annotations

from .app import create_app
from .config import SimulatorConfig
from .faults import Fault
from .fleet import Fleet
from .server import running_simulator, serve
from .state import Simulator

__all__ = [
    "Fault",
    "Fleet",
    "Simulator",
    "SimulatorConfig",
    "create_app",
    "running_simulator",
    "serve",
]
