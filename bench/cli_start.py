"""Target: the CLI answers at once. ``devtrust --help``, ``devtrust --version`` and a
shell completion (what bash runs at each Tab) each within 10x the interpreter's bare
start, measured in the same run: 0.3 s on a machine whose ``python -c pass`` takes 30 ms.

What is measured: the wall time from spawning the installed ``devtrust`` console script
until it exits, output thrown away, the median of ``--runs`` runs; each run of each
command alternates with a bare start (``python -c pass``, the same interpreter), so the
machine's noise falls on both alike. ``devices ls`` on an empty SQLite inventory is
printed beside, for the reader (it opens the database: SQLAlchemy, the settings and the
migrations check, but not psycopg). The absolute 0.3 s of the issue is printed too; the
verdict is the ratio to 10x the bare start, which moves with the machine.

The figure is a ratio, median time / (10 x median bare start): at or below 1.0 the target
is met; the run fails (exit status 1) when one is above.

    python -m bench.cli_start [--runs R] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

STARTS = 10.0  # the limit, in bare starts
ABSOLUTE = 0.3  # seconds: the figure, for a machine with a 30 ms bare start


def devtrust() -> str:
    script = Path(sys.executable).parent / "devtrust"
    if not script.exists():
        raise SystemExit(f"no devtrust console script at {script}: pip install -e . first")
    return str(script)


def timed(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-300:]}")
    return took


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each, alternating")
    parser.add_argument("--smoke", action="store_true", help="two runs of each")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs = 2
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    script = devtrust()
    with tempfile.TemporaryDirectory(prefix="devtrust_bench_") as tmp:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
        env = {**clean, "DEVTRUST_DATA_DIR": str(Path(tmp) / "data")}
        completion = {**env, "_DEVTRUST_COMPLETE": "complete_bash",
                      "COMP_WORDS": "devtrust devices l", "COMP_CWORD": "2"}  # fmt: skip
        commands: list[tuple[str, list[str], dict[str, str], bool]] = [
            ("devtrust --help", [script, "--help"], env, True),
            ("devtrust --version", [script, "--version"], env, True),
            ("completion of `devtrust devices l`", [script], completion, True),
            ("devtrust devices ls (empty SQLite)", [script, "devices", "ls"], env, False),
        ]
        timed([script, "devices", "ls"], env)  # makes the database: not part of a figure
        bare: list[float] = []
        times: dict[str, list[float]] = {name: [] for name, *_ in commands}
        for _ in range(args.runs):
            for name, command, command_env, _judged in commands:
                bare.append(timed([sys.executable, "-c", "pass"], clean))
                times[name].append(timed(command, command_env))
    start = statistics.median(bare)
    limit = STARTS * start
    print(f"bare start (python -c pass): median {start * 1000:.1f} ms; "
          f"limit {STARTS:g}x = {limit * 1000:.0f} ms")  # fmt: skip
    failed = False
    for name, _, _, judged in commands:
        median = statistics.median(times[name])
        worst = max(times[name])
        figures = (
            f"{name:<36} median {median * 1000:6.1f} ms, max {worst * 1000:6.1f} ms  "
            f"({median / start:.1f} bare starts)"
        )
        if judged:
            ratio = median / limit
            failed |= ratio > 1
            figures += f"  ratio {ratio:.2f}  (to {ABSOLUTE:g} s: {median / ABSOLUTE:.2f})"
        print(figures)
    print("FAIL" if failed else "ok: the CLI starts within its limit")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
