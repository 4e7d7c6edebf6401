"""Everything one running simulator holds: its fleets, tokens, fault controls and counters."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from .auth import Principal, TokenStore, same
from .computers import ComputerGenerator
from .config import SimulatorConfig
from .faults import FaultInjector
from .fleet import Fleet
from .mobile import MobileDeviceGenerator


class Stats:
    """Requests served, by endpoint and status; faults injected; records sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_endpoint: dict[str, Counter[str]] = {}
        self.faults: Counter[str] = Counter()
        self.records_served = 0
        self.open: Counter[str] = Counter()  # requests being answered, by endpoint
        self.peak: Counter[str] = Counter()  # the most answered at once, by endpoint

    def started(self, endpoint: str) -> None:
        with self._lock:
            self.open[endpoint] += 1
            self.peak[endpoint] = max(self.peak[endpoint], self.open[endpoint])

    def request(self, endpoint: str, status: str) -> None:
        """A request answered (or dropped) after ``started``."""
        with self._lock:
            self.open[endpoint] -= 1
            self.by_endpoint.setdefault(endpoint, Counter())[status] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def records(self, count: int) -> None:
        with self._lock:
            self.records_served += count

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            endpoints = {name: dict(counts) for name, counts in sorted(self.by_endpoint.items())}
            return {
                "requests": sum(sum(c.values()) for c in self.by_endpoint.values()),
                "by_endpoint": endpoints,
                "faults": dict(self.faults),
                "faults_injected": sum(self.faults.values()),
                "records_served": self.records_served,
                "peak_concurrent": dict(self.peak),
            }


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        computers = ComputerGenerator(config.seed, config.reference_time)
        mobile = MobileDeviceGenerator(config.seed, config.reference_time)
        self.computers = Fleet(computers, config.devices, config.clock)
        self.mobile_devices = Fleet(mobile, config.mobile_count, config.clock)
        self.tokens = TokenStore(config.token_ttl)
        self.faults = FaultInjector(
            config.fault_rate, config.effective_fault_seed, config.fault_kinds
        )
        self.latency_ms = config.latency_ms
        self.stats = Stats()

    def principal(self, name: str, secret: str, *, user: bool) -> Principal | None:
        """Who these credentials belong to (an API client, or a user with ``user``)."""
        config = self.config
        if user:
            expected = (config.username, config.password)
        else:
            expected = (config.client_id, config.client_secret)
        if same(name, expected[0]) and same(secret, expected[1]):
            return Principal(name, can_read_inventory=True)
        if same(name, config.noread_client_id) and same(secret, config.noread_client_secret):
            return Principal(name, can_read_inventory=False)
        return None

    def fleet(self, kind: str) -> Fleet | None:
        return {"computers": self.computers, "mobile-devices": self.mobile_devices}.get(kind)
