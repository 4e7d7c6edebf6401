"""Small runs of every benchmark, end to end: each prints all its figures (not judged)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *options: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<module> <options>``. Its figures are noisy timings, so exit
    status 1 (a target missed) is allowed; a crash is not."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *options],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode in (0, 1), result.stderr
    return result


@pytest.mark.postgres
def test_bench_devices_ls_runs_on_both_backends() -> None:
    result = run_bench("bench_devices_ls", "--devices", "2000", "--runs", "1")
    ratio_lines = [line for line in result.stdout.splitlines() if " ratio " in line]
    backends = {line.split()[0] for line in ratio_lines}
    assert backends == {"sqlite", "postgresql"}, result.stdout + result.stderr
    assert all("devices=2000" in line for line in ratio_lines), result.stdout
    assert result.stdout.rstrip().splitlines()[-1] in ("PASS", "FAIL"), result.stdout


@pytest.mark.postgres
def test_bench_sync_runs_every_measurement_on_both_backends() -> None:
    options = ("--devices", "1500", "--small", "500", "--latency-ms", "1", "--runs", "1")
    result = run_bench("sync", *options, timeout=300)
    lines = result.stdout.splitlines()
    ratios = [line for line in lines if " ratio " in line]
    for backend in ("sqlite", "postgresql"):
        names = {
            line.split(":")[0].split(None, 1)[1] for line in ratios if line.startswith(backend)
        }
        assert names == {
            "full sync",
            "no-change full sync",
            "partial sync, 1% changed",
            "full sync, keyset vs offset read",
            "peak RSS growth 500 -> 1500",
        }, result.stdout
    # The syncs did their work: nothing rewritten by the no-change sync, changes found.
    assert all(", 0 updated;" in line for line in lines if "no-change:" in line), result.stdout
    assert all("15 changed in Jamf" in line for line in lines if "partial:" in line), result.stdout
    # Both reads, keyset and the old offset one, created the same devices.
    reads = [line for line in lines if "full sync: keyset read" in line]
    assert len(reads) == 2, result.stdout
    for line in reads:
        keyset, offset = re.findall(r"\((\d+) created\)", line)
        assert keyset == offset and int(keyset) > 1000, line
    assert lines[-1] in ("PASS", "FAIL"), result.stdout


@pytest.mark.postgres
@pytest.mark.swtpm
def test_bench_ceremony_prints_every_figure_for_every_ek_and_backend() -> None:
    result = run_bench("ceremony", "--enrollments", "5", "--quick")
    lines = result.stdout.splitlines()
    # Each EK the bench names is the one it measured (RSA-3072 from a swtpm of its own).
    templates = {
        "rsa-ek": "EK-RSA2048",
        "ecc-ek": "EK-HIGH-ECC384",
        "rsa3072-ek": "EK-HIGH-RSA3072",
    }
    for ek, template in templates.items():
        alone = [line for line in lines if line.startswith(f"{ek} ")]
        raw = f"{ek} {template}, RSA AK: raw crypto per enrollment: median"
        assert any(line.startswith(raw) for line in alone), result.stdout
        assert any("verification only" in line for line in alone), result.stdout
        for backend in ("sqlite", "postgresql"):
            mine = [line for line in lines if line.split()[:2] == [backend, ek]]
            for mode in ("steady", "isolated"):
                assert any(f"{mode} enrollments=5" in line and "p95" in line for line in mine), (
                    result.stdout
                )
            names = {line.split(":")[0].split(None, 2)[2] for line in mine if " ratio " in line}
            assert names == {
                "server time per enrollment / floor",
                "verification / raw crypto",
            }, mine
            assert any("not judged: isolated server time" in line for line in mine), mine
            assert any(
                "not judged: steady server time" in line and "ms, floor" in line for line in mine
            ), mine
    assert lines[-1] in ("PASS", "FAIL"), result.stdout


@pytest.mark.postgres
def test_bench_auto_enroll_prints_every_figure_for_both_backends() -> None:
    # Loads of 0.3 s, not --quick's 1 s: still dozens of tasks each, for a p99 of its own.
    result = run_bench("auto_enroll", "--quick", "--seconds", "0.3", "--backend", "both")
    lines = result.stdout.splitlines()
    for backend in ("sqlite", "postgresql"):
        mine = [line for line in lines if line.startswith(f"{backend} ")]
        # A refused check stops the bench before its figures: these lines mean all passed.
        assert any(
            "throughput, 1 rounds of 100 tasks: no-op median" in line
            and "checks/s" in line
            and "every check passed" in line
            for line in mine
        ), result.stdout + result.stderr
        # Both loads at one rate, a share of the checks' throughput measured just before.
        loads = [
            re.search(r"latency, (\d+) (no-op tasks|checks) offered at (\d+)/s", line)
            for line in mine
        ]
        found = [(m.group(2), m.group(1), m.group(3)) for m in loads if m]
        assert [kind for kind, *_ in found] == ["no-op tasks", "checks"], result.stdout
        assert found[0][1:] == found[1][1:], found
        assert any("checks offered" in line and "every check passed" in line for line in mine)
        names = {line.split(":")[0].split(None, 1)[1] for line in mine if " ratio " in line}
        assert names == {
            "checks / no-op throughput",
            "p99 latency, checks / no-op at the same rate",
        }, mine
    assert lines[-1] in ("PASS", "FAIL"), result.stdout


def test_bench_webhooks_prints_its_figures_on_both_queues() -> None:
    result = run_bench("webhooks", "--changes", "10", "--devices", "100", timeout=300)
    lines = result.stdout.splitlines()
    for queue in ("embedded", "redis"):
        [ratio] = [line for line in lines if line.startswith(queue) and " ratio " in line]
        assert "webhook latency p99:" in ratio, result.stdout
        # Every change reached the inventory through a device run of its own.
        assert any(
            line.startswith(queue) and "10 changes: p50" in line and "'device': 10" in line
            for line in lines
        ), result.stdout
    assert lines[-1] in ("PASS", "FAIL"), result.stdout


def test_bench_access_prints_its_figures_direct_and_through_nginx() -> None:
    # One backend: the bench's code is the same for both, and the check's PostgreSQL
    # listener is tested in test_access_check.
    # Each measurement 0.15 s: a few hundred checks closed-loop, seven at 50/s.
    options = ("--seconds", "0.15", "--rate", "50", "--devices", "2", "--connections", "2",
               "--rounds", "1", "--backend", "sqlite")  # fmt: skip
    result = run_bench("access", *options)
    lines = result.stdout.splitlines()
    for backend in ("sqlite",):
        for path in ("direct", "nginx"):
            mine = [line for line in lines if line.split()[:2] == [backend, path]]
            assert any("throughput: check" in line for line in mine), result.stdout
            names = {line.split(":")[0].split(None, 2)[2] for line in mine if " ratio " in line}
            p99 = "check p99 at 50/s" if path == "direct" else "check p99 over the no-op's at 50/s"
            assert names == {"check / no-op throughput", p99}, mine
    assert lines[-1] in ("PASS", "FAIL"), result.stdout + result.stderr
