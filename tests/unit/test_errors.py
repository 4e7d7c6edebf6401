"""inventory.errors: what a library's exception shows a user, on one line (``one_line``),
and how much of their own input a message quotes back (``quoted``, ``clip``)."""

from __future__ import annotations

from inventory.errors import QUOTE_LIMIT, clip, one_line, quoted


def test_line_breaks_and_runs_of_spaces_fold_into_one_line() -> None:
    celery = RuntimeError(
        "\nRetry limit exceeded while trying to reconnect to the Celery result store\n"
        "backend. The Celery application must be restarted.\n"
    )
    assert one_line(celery) == (
        "Retry limit exceeded while trying to reconnect to the Celery result store backend. "
        "The Celery application must be restarted."
    )


def test_an_exception_without_a_message_is_named_by_its_class() -> None:
    assert one_line(ConnectionResetError()) == "ConnectionResetError"
    assert one_line(ValueError("  \n ")) == "ValueError"


def test_a_long_message_is_cut_with_an_ellipsis() -> None:
    text = one_line(OSError("x" * 500), limit=50)
    assert len(text) == 50 and text.endswith("...") and text.startswith("x" * 47)
    assert one_line(OSError("y" * 50), limit=50) == "y" * 50


def test_quoted_input_is_cut_with_an_ellipsis_and_its_length() -> None:
    assert quoted("C00AA0AAAA0A") == "'C00AA0AAAA0A'"
    long = quoted("A" * 10_000)
    assert long == repr("A" * (QUOTE_LIMIT - 1) + "\u2026") + " (10,000 characters)"
    assert len(long) < QUOTE_LIMIT + 30
    assert quoted("A" * QUOTE_LIMIT) == repr("A" * QUOTE_LIMIT)


def test_clip_bounds_a_text_to_its_limit() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab\u2026"
