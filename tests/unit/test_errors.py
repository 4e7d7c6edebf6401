"""inventory.errors.one_line: what a library's exception shows a user, on one line."""

from __future__ import annotations

from inventory.errors import one_line


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
