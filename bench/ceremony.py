"""Target: the server's time per TPM enrollment, against a limit and against its crypto.

Figures, per EK (swtpm's RSA-2048 EK, its high-range ECC P-384 one and, from a swtpm of
its own, the high range's RSA-3072 one; each with the RSA AK the agent makes) and per
backend (SQLite, PostgreSQL), all measured in the same run:

* ``server``: ``EnrollmentCeremony.begin`` plus ``complete`` per enrollment, in process
  (authenticating the user, the token, the challenge and the enrolled device in the
  database included; HTTP and JSON excluded), median and p95, two ways:
  - ``steady``: as a busy server sees them: batches of 20 first round trips back to back,
    the devices' TPM work (not timed), then the 20 second round trips back to back;
  - ``isolated``: one enrollment at a time, the TPM's work between its two round trips.
    The swtpm runs on this machine: its work idles the server's process and evicts its
    caches, so this is an idle server's latency, not only the server's own work.
  Each is split into ``verification`` (``tpm_verify``'s functions, timed where the
  ceremony calls them) and ``database and service code`` (the rest);
* ``verification only``: those ``tpm_verify`` functions as the ceremony calls them, no
  database, in a loop of their own that alternates with the raw crypto's iterations (what
  parsing with tpm2-tss adds shows against the raw figure);
* ``raw crypto``: what an enrollment cannot avoid, done with ``cryptography`` directly on
  the same keys and structures: the AK's creation signature and the quote's signature
  verified, MakeCredential (RSA-OAEP or ECDH with the EK, KDFa, AES-CFB, HMAC; checked
  once against the TPM), the secret compared, the AK name, creation data and PCRs hashed.

Targets, each printed as a ratio (at or below 1.0 is met), and each a ratio to a
baseline measured in the same run, so that they hold on a slow machine as on a quick one:

* server time per enrollment (steady, median) over the ``floor``, measured in the same
  run against the same database, in slices between the steady batches: the raw crypto
  plus the three round trips no implementation avoids, as bare as they get (the
  challenge written, then read back, then the enrollment written, durable), on the
  driver's own connection. That ratio is this
  code's own cost, whatever the machine's speed (an absolute 3 ms, the target before,
  was met on a quick machine and missed on PostgreSQL on one of the same kind twice as
  slow, where the floor alone took 1.8-2.1 ms). Within 4x on PostgreSQL, where the
  floor is mostly the round trips and a durable commit; within 12x on SQLite, whose
  "round trips" are calls inside the process (its floor is the crypto and about 30 us),
  so that there the ratio is the service code's Python over the crypto;
* verification within 3x of the raw crypto (one loop alternating the two, like for like:
  both medians under the same load, however the machine's speed drifts).

Printed, not judged: the steady server time in milliseconds, the isolated server time,
and the whole server time over the raw crypto. The latter has the database's round trips
and durable commits in it, which no crypto baseline has: for an RSA EK, 3x raw is 0.3 ms,
less than one commit.

The three baselines (raw crypto, verification only, floor) are in
``bench.ceremony_baselines``.

One AK serves every enrollment; each enrollment has its own device, registered with its
own token before the timing starts. One TPM enrolls one device, and the bench has one
TPM: ``one_tpm_per_device`` gives each enrollment's EK a binding of its own, as a fleet's
TPMs would have (every step that reads or writes the binding still runs).
The run fails (exit status 1) when a target is missed.

    python -m bench.ceremony [--enrollments 200] [--backend sqlite|postgresql|both]
                             [--ek rsa|ecc|rsa3072|all] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, event

from bench.bench_devices_ls import DATABASES
from bench.ceremony_baselines import (
    Material,
    check_make_credential,
    floor_timer,
    raw_inputs,
    time_raw_and_verification,
)
from ceremony import enroll as enroll_module
from ceremony.agent.tpm import DeviceTPM, EkType
from ceremony.attestation import tpm_verify
from ceremony.enroll import EnrollmentCeremony
from ceremony.protocol import (
    PCR_BANK,
    QUOTED_PCRS,
    Collected,
    EnrollComplete,
    EnrollInit,
    TPMResponse,
)
from ceremony.protocol import Quote as WireQuote
from inventory import direct
from inventory.db import Database
from inventory.domain import CollectedData, EnrollStatus, OSType, Role
from inventory.services import devices, tokens, users
from tests.tpm import swtpm

USER = "alice"
# The EKs benchmarked: swtpm's kind (tests.tpm.swtpm's ``ek``), and the agent's choice.
BenchEk = Literal["rsa", "ecc", "rsa3072"]
AGENT_EK: dict[BenchEk, EkType] = {"rsa": "rsa", "ecc": "ecc", "rsa3072": "rsa"}
# What the ceremony calls in tpm_verify; the server's verification time is spent in them.
# (module, function) pairs the ceremony calls through their modules.
VERIFIERS = (
    (tpm_verify, "check_ak"),
    (tpm_verify, "examine_ek"),
    (tpm_verify, "make_challenge"),
    (tpm_verify, "verify_activation"),
    (tpm_verify, "verify_quotes"),
    (tpm_verify, "verify_quote"),
)


def ms(seconds: float) -> float:
    return seconds * 1000


def p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


# -- the device: a swtpm, its EK and one AK ----------------------------------------------


@contextmanager
def software_tpm(workdir: Path, ek: BenchEk) -> Iterator[str]:
    """tests/tpm.py's swtpm (its EKs with certificates), for ``ek``; yields its TCTI."""
    try:
        with swtpm(workdir, ek) as running:
            yield running.tcti
    except pytest.fail.Exception as exc:
        raise SystemExit(f"swtpm: {exc}") from None


def device_material(tpm: DeviceTPM, state_dir: Path) -> Material:
    ak = tpm.create_ak(state_dir)
    nonce = secrets.token_bytes(32)
    quote = tpm.quote(ak, nonce, list(QUOTED_PCRS), PCR_BANK)
    return Material(
        tpm.ek_type, tpm.ek_template_name, tpm.ek_certificate(), tpm.ek_public(), ak, quote, nonce
    )


# -- the server: begin and complete against a database ----------------------------------


class Stopwatch:
    """Time spent in the tpm_verify functions the ceremony calls, and SQL statements run."""

    def __init__(self) -> None:
        self.verification = 0.0
        self.statements = 0
        self._depth = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1  # the verifiers call one another: count the outermost only
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.verification += time.perf_counter() - began

        return timed

    @contextmanager
    def watching(self) -> Iterator[Stopwatch]:
        originals = {(module, name): getattr(module, name) for module, name in VERIFIERS}

        def count(*_: Any) -> None:
            self.statements += 1

        run_directly = direct.run

        def counted(*args: Any, **kwargs: Any) -> Any:
            count()
            return run_directly(*args, **kwargs)

        # Statements through an engine, and those the hot paths run on the driver's own
        # connection (inventory.direct).
        event.listen(Engine, "before_cursor_execute", count)
        direct.run = counted
        for (module, name), function in originals.items():
            setattr(module, name, self.wrap(function))
        try:
            yield self
        finally:
            for (module, name), function in originals.items():
                setattr(module, name, function)
            direct.run = run_directly
            event.remove(Engine, "before_cursor_execute", count)


@dataclass
class Enrollment:
    begin: float
    complete: float
    verification: float
    statements: int

    @property
    def server(self) -> float:
        return self.begin + self.complete


def prepare(db: Database, count: int) -> tuple[str, list[tuple[str, str]]]:
    """A user and ``count`` Linux devices, each with a fresh enrollment token."""
    _, credential = users.add_user(db.uow(), USER, (Role.ACCESS,), actor="admin")
    devices_and_tokens = []
    for i in range(count):
        tag = f"LNX-BENCH-{i:05d}"
        devices.register_device(db.uow(), os_type=OSType.LINUX, asset_tag=tag, actor="admin")
        devices_and_tokens.append((tag, tokens.create_token(db.uow(), tag, actor="admin").token))
    return credential, devices_and_tokens


@dataclass
class Timed:
    """One call's time, and the verification time and statements inside it."""

    seconds: float
    verification: float
    statements: int


def timed(watch: Stopwatch, call: Callable[[], Any]) -> tuple[Any, Timed]:
    verification, statements = watch.verification, watch.statements
    began = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - began
    return result, Timed(seconds, watch.verification - verification, watch.statements - statements)


def enrollment(begin: Timed, complete: Timed) -> Enrollment:
    return Enrollment(
        begin.seconds,
        complete.seconds,
        begin.verification + complete.verification,
        begin.statements + complete.statements,
    )


def init_request(tag: str, token: str, m: Material) -> EnrollInit:
    collected = CollectedData(
        serial_number=tag, os_type=OSType.LINUX, os_login_user=USER, os_version="13"
    )
    return EnrollInit(token=token, collected=Collected.from_domain(collected), tpm=m.attestation())


def device_answer(challenge: Any, m: Material, tpm: DeviceTPM) -> EnrollComplete:
    """The device's part, never timed: activation and quote in the TPM."""
    assert challenge.tpm is not None
    secret = tpm.activate_credential(
        m.ak, challenge.tpm.credential_blob, challenge.tpm.encrypted_secret
    )
    quote = tpm.quote(m.ak, challenge.tpm.nonce, challenge.tpm.pcrs, challenge.tpm.pcr_bank)
    return EnrollComplete(
        challenge_id=challenge.challenge_id,
        tpm=TPMResponse(
            activated_secret=secret,
            quotes=[
                WireQuote(
                    attestation=quote.attestation,
                    signature=quote.signature,
                    pcr_values=quote.pcr_values,
                )
            ],
        ),
    )


def check_enrolled(device: Any, tag: str) -> None:
    if device.enroll_status is not EnrollStatus.ENROLLED:
        raise SystemExit(f"bench: {tag} did not end up enrolled")


def enroll_steady(
    ceremony: EnrollmentCeremony,
    credential: str,
    batch: Sequence[tuple[str, str]],
    m: Material,
    tpm: DeviceTPM,
    watch: Stopwatch,
) -> list[Enrollment]:
    """A batch as a busy server sees it: the first round trips back to back, then (not
    timed) the devices' TPM work, then the second round trips back to back."""
    requests = [init_request(tag, token, m) for tag, token in batch]
    begins = [timed(watch, functools.partial(ceremony.begin, credential, r)) for r in requests]
    answers = [device_answer(challenge, m, tpm) for challenge, _ in begins]
    completes = [timed(watch, functools.partial(ceremony.complete, credential, a)) for a in answers]
    for (tag, _), (device, _) in zip(batch, completes, strict=True):
        check_enrolled(device, tag)
    return [enrollment(b, c) for (_, b), (_, c) in zip(begins, completes, strict=True)]


def enroll_isolated(
    ceremony: EnrollmentCeremony,
    credential: str,
    tag: str,
    token: str,
    m: Material,
    tpm: DeviceTPM,
    watch: Stopwatch,
) -> Enrollment:
    """One enrollment alone: begin, the device's TPM work (not timed), complete. On a
    machine that also runs the TPM, its work between the two idles the server's process
    and cools its caches, as an idle server's would be."""
    request = init_request(tag, token, m)
    challenge, begin = timed(watch, lambda: ceremony.begin(credential, request))
    answer = device_answer(challenge, m, tpm)
    device, complete = timed(watch, lambda: ceremony.complete(credential, answer))
    check_enrolled(device, tag)
    return enrollment(begin, complete)


BATCH = 20


def time_server(
    url: str,
    m: Material,
    tpm: DeviceTPM,
    count: int,
    warm_up: int,
    between: Callable[[], None] = lambda: None,
) -> tuple[list[Enrollment], list[Enrollment]]:
    """(steady, isolated): ``count`` enrollments each way, after ``warm_up`` of each;
    ``between`` runs after each steady batch (the floor's share, under the same load)."""
    db = Database.connect(url)
    try:
        credential, prepared = prepare(db, 2 * (warm_up + count))
        steady_devices, isolated_devices = prepared[::2], prepared[1::2]
        ceremony = EnrollmentCeremony(db)
        with one_tpm_per_device(), Stopwatch().watching() as watch:
            steady = []
            for first in range(0, len(steady_devices), BATCH):
                batch = steady_devices[first : first + BATCH]
                steady += enroll_steady(ceremony, credential, batch, m, tpm, watch)
                between()
            isolated = [
                enroll_isolated(ceremony, credential, tag, token, m, tpm, watch)
                for tag, token in isolated_devices
            ]
        return steady[warm_up:], isolated[warm_up:]
    finally:
        db.close()


@contextmanager
def one_tpm_per_device() -> Iterator[None]:
    """Each enrollment's EK bound as if it were another TPM's: the digest of its binding
    and a count. With the one real binding, the second device would be refused (one TPM,
    one device); freeing it between enrollments instead would leave PostgreSQL's unique
    index a growing run of dead entries for one key to walk, which no fleet has."""
    real = enroll_module.ek_binding
    count = itertools.count()

    def per_device(sent: Any) -> str | None:
        binding = real(sent)
        if binding is None:
            return None
        return hashlib.sha256(f"{binding}/{next(count)}".encode()).hexdigest()

    enroll_module.ek_binding = per_device
    try:
        yield
    finally:
        enroll_module.ek_binding = real


# -- figures --------------------------------------------------------------------------


def describe(label: str, e: Sequence[Enrollment]) -> str:
    server = [x.server for x in e]
    return (
        f"{label} enrollments={len(e)}  server per enrollment: median "
        f"{ms(statistics.median(server)):.3f} ms, p95 {ms(p95(server)):.3f} ms "
        f"(begin {ms(statistics.median(x.begin for x in e)):.3f}, complete "
        f"{ms(statistics.median(x.complete for x in e)):.3f});  verification "
        f"{ms(statistics.median(x.verification for x in e)):.3f} ms, database and service "
        f"code {ms(statistics.median(x.server - x.verification for x in e)):.3f} ms "
        f"({statistics.median(x.statements for x in e):.0f} SQL statements)"
    )


# Steady server time per enrollment over the floor, per backend (see the module's notes).
FLOOR_LIMITS = {"sqlite": 12.0, "postgresql": 4.0}


@dataclass
class Figures:
    backend: str
    ek: BenchEk
    steady: list[Enrollment]
    isolated: list[Enrollment]
    raw: float  # median seconds per enrollment, alternating with verification's
    verified: float  # the same for tpm_verify's calls
    floor: float  # median seconds per enrollment of raw crypto and bare round trips
    limit_floor: float  # this backend's
    limit_ratio: float

    @property
    def server(self) -> float:
        return statistics.median(e.server for e in self.steady)

    def checks(self) -> list[tuple[str, float, float, str]]:
        """(name, figure, limit, unit) for each target."""
        return [
            ("server time per enrollment / floor", self.server / self.floor, self.limit_floor, "x"),
            ("verification / raw crypto", self.verified / self.raw, self.limit_ratio, "x"),
        ]

    def report(self) -> list[str]:
        label = f"{self.backend:<11} {self.ek}-ek"
        isolated = statistics.median(e.server for e in self.isolated)
        lines = [
            describe(f"{label} steady", self.steady),
            describe(f"{label} isolated", self.isolated),
        ]
        for name, figure, limit, unit in self.checks():
            shown = (
                f"{figure:.2f}x  limit {limit:.2f}x"
                if unit == "x"
                else f"{figure:.3f} {unit}  limit {limit:.3f} {unit}"
            )
            lines.append(
                f"{label} {name}: {shown}  ratio {figure / limit:.2f}  "
                f"{'PASS' if figure <= limit else 'FAIL'}"
            )
        lines.append(
            f"{label} not judged: isolated server time {ms(isolated):.3f} ms; whole server "
            f"time / raw crypto {self.server / self.raw:.2f}x steady, "
            f"{isolated / self.raw:.2f}x isolated (storage round trips and commits in it)"
        )
        lines.append(
            f"{label} not judged: steady server time {ms(self.server):.3f} ms, floor "
            f"{ms(self.floor):.3f} ms (raw crypto and three bare round trips, one durable)"
        )
        return lines

    def passed(self) -> bool:
        return all(figure <= limit for _, figure, limit, _ in self.checks())


def bench_ek(
    tcti: str, ek: BenchEk, backends: Sequence[str], args: argparse.Namespace, workdir: Path
) -> list[Figures]:
    iterations = 100 if args.quick else 2000
    warm_up = 1 if args.quick else 10
    with DeviceTPM(tcti, ek=AGENT_EK[ek]) as tpm:
        m = device_material(tpm, workdir / f"agent-{ek}")
        if ek == "rsa3072" and m.ek_template != "EK-HIGH-RSA3072":
            raise SystemExit(f"bench: the RSA-3072 swtpm's EK is {m.ek_template}")
        r = raw_inputs(m)
        check_make_credential(tpm, m, r)
        time_raw_and_verification(m, r, iterations // 10)  # warm-up
        times = time_raw_and_verification(m, r, iterations)
        raw_median = statistics.median(times.raw)
        split = ", ".join(
            f"{step} {ms(statistics.median(t)):.3f}" for step, t in times.raw_steps.items()
        )
        print(
            f"{ek}-ek {m.ek_template}, RSA AK: raw crypto per enrollment: median "
            f"{ms(raw_median):.3f} ms ({split}; {iterations} iterations)",
            flush=True,
        )
        verified = statistics.median(times.verification)
        print(
            f"{ek}-ek verification only (tpm_verify, no database): median "
            f"{ms(verified):.3f} ms, {verified / raw_median:.2f}x raw crypto "
            "(alternating with the raw crypto's iterations)",
            flush=True,
        )
        results = []
        for backend in backends:
            with DATABASES[backend]() as url, floor_timer(url, r) as time_floor:
                time_floor(iterations // 20)  # warm-up
                # The floor in slices between the steady batches, a quarter of the raw
                # crypto's iterations in all: both figures under the same load.
                batches = -(-(warm_up + args.enrollments) // BATCH)
                floor_times: list[float] = []
                between = functools.partial(
                    _extend, floor_times, time_floor, max(5, iterations // 4 // batches)
                )
                steady, isolated = time_server(
                    url, m, tpm, args.enrollments, warm_up, between=between
                )
                floor = statistics.median(floor_times)
            figures = Figures(
                backend,
                ek,
                steady,
                isolated,
                raw_median,
                verified,
                floor,
                args.limit_floor[backend],
                args.limit_ratio,
            )
            for line in figures.report():
                print(line, flush=True)
            results.append(figures)
        return results


def _extend(times: list[float], run: Callable[[int], list[float]], iterations: int) -> None:
    times.extend(run(iterations))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceremony",
        description="Time the server's side of TPM enrollments and print ratios to the targets.",
    )
    parser.add_argument("--enrollments", type=int, default=200, help="timed, per backend and EK")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--ek", choices=("rsa", "ecc", "rsa3072", "all"), default="all")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer raw and verification iterations and warm-ups (smoke runs)",
    )
    for backend, limit in FLOOR_LIMITS.items():
        parser.add_argument(
            f"--limit-floor-{backend}",
            type=float,
            default=limit,
            help=f"server time per enrollment / floor on {backend} (default {limit:g})",
        )
    parser.add_argument("--limit-ratio", type=float, default=3.0, help="verification / raw crypto")
    args = parser.parse_args(argv)
    args.limit_floor = {
        backend: getattr(args, f"limit_floor_{backend}") for backend in FLOOR_LIMITS
    }
    if args.enrollments < 2 or min(args.limit_floor.values()) <= 0 or args.limit_ratio <= 0:
        parser.error("--enrollments must be at least 2, the limits above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    eks: tuple[BenchEk, ...] = ("rsa", "ecc", "rsa3072") if args.ek == "all" else (args.ek,)
    # swtpm makes the RSA-2048 and ECC P-384 EKs together; RSA-3072 needs one of its own.
    made_by: dict[BenchEk, BenchEk] = {ek: "rsa3072" if ek == "rsa3072" else "rsa" for ek in eks}
    results = []
    with tempfile.TemporaryDirectory(prefix="devtrust_bench_") as tmp:
        for kind in dict.fromkeys(made_by.values()):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            with software_tpm(workdir, kind) as tcti:
                for ek in (ek for ek in eks if made_by[ek] == kind):
                    results += bench_ek(tcti, ek, backends, args, workdir)
    passed = all(r.passed() for r in results)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
