"""How ``bench/sync.py`` judges its time targets: each round against its own limit."""

from __future__ import annotations

from typing import Any

from bench.sync import Figures, Round


def _round(fetch: float, write: float, full: float, no_change: float) -> Round:
    counts = {"created": 100, "updated": 0, "unchanged": 0, "fetched": 100, "peak_rss": 0}
    sync: dict[str, Any] = {
        "full": {"seconds": full, **counts},
        "no-change": {"seconds": no_change, **counts},
        "partial": {"seconds": 0.01 * full, "changed": 1, **counts},
    }
    return Round(
        fetch={"seconds": fetch},
        write={"seconds": write},
        sync=sync,
        offset={"full": {"seconds": full, **counts}},
    )


def _ratios(figures: Figures) -> dict[str, float]:
    return {name: ratio for name, *_, ratio in figures.checks()}


def test_a_slow_round_is_judged_against_its_own_slow_fetch() -> None:
    # The machine slowed down in round 2 for everything alike. The full sync meets its
    # limit in two rounds of three, so it passes, where the median sync (12.2) against
    # the limit of the median fetch (1.5 x 8 = 12) would miss.
    rounds = [
        _round(fetch=8, write=4, full=11.5, no_change=9.5),
        _round(fetch=12, write=6, full=17.5, no_change=14.0),
        _round(fetch=7, write=4, full=12.2, no_change=8.3),
    ]
    figures = Figures("sqlite", 100, rounds, {"full": {"peak_rss": 0}}, 10)
    ratios = _ratios(figures)
    assert ratios["full sync"] < 1.0
    assert ratios["no-change full sync"] < 1.0
    assert figures.passed()
    # The figures shown are medians of the rounds.
    shown = {name: (figure, limit) for name, figure, limit, *_ in figures.checks()}
    assert shown["full sync"] == (12.2, 12)


def test_a_target_missed_in_most_rounds_fails() -> None:
    rounds = [
        _round(fetch=8, write=4, full=13, no_change=9),
        _round(fetch=8, write=4, full=11, no_change=9),
        _round(fetch=8, write=4, full=12.5, no_change=9),
    ]
    figures = Figures("postgresql", 100, rounds, {"full": {"peak_rss": 0}}, 10)
    ratios = _ratios(figures)
    assert ratios["full sync"] == 12.5 / 12
    assert not figures.passed()
