"""The simulator's settings, checked once so that a bad flag is one clear line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from inventory.errors import InvalidArgument

from .faults import ALL_FAULTS, Fault, parse_faults

MAX_DEVICES = 10_000_000
#: Jamf Pro's default token lifetime (30 minutes for user tokens); tests that want short
#: tokens say so with ``token_ttl``.
DEFAULT_TOKEN_TTL = 1800.0


def _now() -> datetime:
    return datetime.now(UTC)


def _start_of_today() -> datetime:
    return _now().replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class SimulatorConfig:
    devices: int = 1000
    #: iOS devices behind /api/v2/mobile-devices/detail; None means a tenth of ``devices``.
    mobile_devices: int | None = None
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 9000
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    #: Seed of the fault RNG; None means ``seed``.
    fault_seed: int | None = None
    fault_kinds: tuple[Fault, ...] = ALL_FAULTS
    token_ttl: float = DEFAULT_TOKEN_TTL
    client_id: str = "devtrust"
    client_secret: str = "devtrust-secret"  # noqa: S105 - a simulator default
    username: str = "admin"
    password: str = "admin-password"  # noqa: S105 - a simulator default
    #: A credential pair (OAuth client or Basic user) whose tokens get 403 on inventory.
    noread_client_id: str = "noread"
    noread_client_secret: str = "noread-secret"  # noqa: S105
    #: Generated report dates fall in the 30 days before this; default: today 00:00 UTC,
    #: so they are stable through the day and always older than a mutation's "now".
    reference_time: datetime = field(default_factory=_start_of_today)
    #: The time a mutation (add, change) stamps on a device.
    clock: Callable[[], datetime] = _now
    #: Where every change made through /_sim/ is posted as a Jamf Pro webhook (None: off).
    webhook_url: str | None = None
    #: Basic auth for the webhooks, as Jamf Pro's "Basic Authentication" (None: none).
    webhook_username: str | None = None
    webhook_password: str | None = None
    #: A header sent with every webhook, "Name: value" (Jamf Pro's header authentication).
    webhook_header: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.devices <= MAX_DEVICES:
            raise InvalidArgument(
                f"--devices must be between 0 and {MAX_DEVICES}, not {self.devices}"
            )
        if self.mobile_devices is not None and not 0 <= self.mobile_devices <= MAX_DEVICES:
            raise InvalidArgument(
                f"--mobile-devices must be between 0 and {MAX_DEVICES}, not {self.mobile_devices}"
            )
        if not 0 <= self.port <= 65535:
            raise InvalidArgument(f"--port must be between 0 and 65535, not {self.port}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise InvalidArgument(f"--fault-rate must be between 0 and 1, not {self.fault_rate}")
        if self.latency_ms < 0:
            raise InvalidArgument(f"--latency-ms must be 0 or more, not {self.latency_ms}")
        if self.token_ttl < 1:
            raise InvalidArgument(f"--token-ttl must be at least 1 second, not {self.token_ttl}")
        for name in ("client_id", "client_secret", "username", "password"):
            if not getattr(self, name):
                raise InvalidArgument(f"--{name.replace('_', '-')} must not be empty")
        if self.noread_client_id in (self.client_id, self.username):
            raise InvalidArgument("the no-read credentials must differ from the real ones")
        try:
            self.fault_kinds = parse_faults(self.fault_kinds)
        except ValueError as exc:
            known = ", ".join(f.value for f in Fault)
            raise InvalidArgument(f"fault kinds: {exc} (known: {known})") from None
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise InvalidArgument(f"--webhook-url must be an http(s) URL, not {self.webhook_url!r}")
        if (self.webhook_username is None) != (self.webhook_password is None):
            raise InvalidArgument("--webhook-username and --webhook-password go together")
        if self.webhook_header is not None and not self.webhook_header.partition(":")[2].strip():
            raise InvalidArgument("--webhook-header must be 'Name: value'")
        if self.reference_time.tzinfo is None:
            self.reference_time = self.reference_time.replace(tzinfo=UTC)

    @property
    def mobile_count(self) -> int:
        return self.devices // 10 if self.mobile_devices is None else self.mobile_devices

    @property
    def effective_fault_seed(self) -> int:
        return self.seed if self.fault_seed is None else self.fault_seed
