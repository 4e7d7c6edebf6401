"""Structured logging: the JSON fields, the log context, secrets, the terminal line."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.logs import (
    bind_celery_task,
    clear_context,
    configure_logging,
    current_context,
    log_context,
)

log = logging.getLogger("jamf.sync")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    clear_context()


def json_stream(level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def by_message(stream: io.StringIO) -> dict[str, dict[str, Any]]:
    return {line["message"]: line for line in lines(stream)}


# -- JSON lines ----------------------------------------------------------------------------


def test_a_json_line_has_utc_millisecond_time_level_logger_and_message() -> None:
    stream = json_stream()
    before = datetime.now(UTC)
    log.info("synced %d devices", 3)
    after = datetime.now(UTC)

    [line] = lines(stream)
    assert list(line) == ["time", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(line["time"]) <= after
    assert line["level"] == "INFO"
    assert line["logger"] == "jamf.sync"
    assert line["message"] == "synced 3 devices"


def test_json_is_chosen_automatically_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    log.warning("not a terminal")
    assert lines(stream)[0]["message"] == "not a terminal"


def test_an_exception_is_one_string_field_on_the_same_line() -> None:
    stream = json_stream()
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("page failed")

    assert len(stream.getvalue().splitlines()) == 1
    [line] = lines(stream)
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert line["exc_info"].endswith("ZeroDivisionError: division by zero")


def test_extra_fields_follow_the_standard_ones() -> None:
    stream = json_stream()
    log.info("sync done", extra={"devices": 1000, "full": True, "asset_tag": "C00AA0AAAA0A"})
    [line] = lines(stream)
    assert line["devices"] == 1000
    assert line["full"] is True
    assert line["asset_tag"] == "C00AA0AAAA0A"


def test_the_level_filters_records_and_an_unknown_level_is_refused() -> None:
    stream = json_stream("warning")
    log.info("hidden")
    log.warning("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")


def test_configuring_twice_replaces_the_handler_and_keeps_other_handlers() -> None:
    other = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(other))
    first = json_stream()
    second = json_stream()
    log.info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert other.getvalue() == "once\n"


# -- the log context -----------------------------------------------------------------------


def test_context_fields_are_on_every_line_in_the_block_and_gone_after_it() -> None:
    stream = json_stream()
    log.info("before")
    with log_context(task_id="t-1", inventory="prod"):
        log.info("inside")
        logging.getLogger("inventory.services").info("elsewhere")
    log.info("after")

    seen = by_message(stream)
    assert "task_id" not in seen["before"]
    assert "inventory" not in seen["before"]
    assert list(seen["inside"])[4:] == ["task_id", "inventory"]
    assert (seen["inside"]["task_id"], seen["inside"]["inventory"]) == ("t-1", "prod")
    assert seen["elsewhere"]["task_id"] == "t-1"
    assert "task_id" not in seen["after"]
    assert current_context() == {}


def test_nested_contexts_add_and_override_then_restore_the_outer_fields() -> None:
    stream = json_stream()
    with log_context(task_id="t-1", inventory="prod"):
        with log_context(inventory="lab", page=2):
            log.info("inner")
        log.info("outer")

    seen = by_message(stream)
    assert {k: seen["inner"][k] for k in ("task_id", "inventory", "page")} == {
        "task_id": "t-1",
        "inventory": "lab",
        "page": 2,
    }
    assert seen["outer"]["inventory"] == "prod"
    assert "page" not in seen["outer"]


def test_the_context_is_restored_when_the_block_raises() -> None:
    with log_context(task_id="t-1"):
        with pytest.raises(RuntimeError), log_context(task_id="t-2"):
            raise RuntimeError("page failed")
        assert current_context() == {"task_id": "t-1"}
    assert current_context() == {}


def test_a_field_given_at_the_call_site_wins_over_the_context() -> None:
    stream = json_stream()
    with log_context(task_id="t-1", inventory="prod"):
        log.info("explicit", extra={"inventory": "lab"})
    assert lines(stream)[0]["inventory"] == "lab"


def test_context_field_names_may_not_shadow_record_attributes() -> None:
    with pytest.raises(ValueError, match=r"\['msg', 'name'\]"), log_context(name="x", msg="y"):
        pass


def test_a_celery_task_binding_replaces_the_context_and_clearing_empties_it() -> None:
    stream = json_stream()
    with log_context(user="alice"):
        bind_celery_task("t-1", "prod")
        log.info("first task")
        bind_celery_task("t-2", None)
        log.info("second task")
        clear_context()
        log.info("between tasks")

    seen = by_message(stream)
    assert (seen["first task"]["task_id"], seen["first task"]["inventory"]) == ("t-1", "prod")
    assert "user" not in seen["first task"]
    assert seen["second task"]["task_id"] == "t-2"
    assert "inventory" not in seen["second task"]  # not known: left out, not null
    assert "task_id" not in seen["between tasks"]


# -- threads: the context follows only when it is copied on purpose -----------------------


def test_a_thread_starts_with_an_empty_context_unless_the_context_is_copied() -> None:
    stream = json_stream()
    with log_context(task_id="t-1", inventory="prod"):
        plain = threading.Thread(target=log.info, args=("plain thread",))
        copied = threading.Thread(
            target=contextvars.copy_context().run, args=(log.info, "copied context")
        )
        for thread in (plain, copied):
            thread.start()
            thread.join()

    seen = by_message(stream)
    assert "task_id" not in seen["plain thread"]
    assert (seen["copied context"]["task_id"], seen["copied context"]["inventory"]) == (
        "t-1",
        "prod",
    )


def test_nested_contexts_in_concurrent_threads_stay_apart_and_leave_the_parent_alone() -> None:
    stream = json_stream()
    both_inside = threading.Barrier(2, timeout=10)

    def sync(inventory: str) -> None:
        with log_context(inventory=inventory):
            both_inside.wait()  # both threads are in their own block at the same time
            log.info("inside %s", inventory)
            with log_context(page=2):
                both_inside.wait()
                log.info("nested %s", inventory)
            log.info("after nested %s", inventory)

    with log_context(task_id="t-1"):
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(sync, name))
            for name in ("prod", "lab")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.info("parent")

    seen = by_message(stream)
    for name in ("prod", "lab"):
        assert seen[f"inside {name}"]["task_id"] == "t-1"
        assert seen[f"inside {name}"]["inventory"] == name
        assert "page" not in seen[f"inside {name}"]
        assert (seen[f"nested {name}"]["inventory"], seen[f"nested {name}"]["page"]) == (name, 2)
        assert "page" not in seen[f"after nested {name}"]
    assert seen["parent"]["task_id"] == "t-1"
    assert "inventory" not in seen["parent"]


# -- secrets -------------------------------------------------------------------------------


def test_secret_values_in_extra_and_context_fields_are_masked() -> None:
    stream = json_stream()
    with log_context(task_id="t-1", jamf_client_secret="hunter2"):
        log.info(
            "token refreshed",
            extra={
                "client_id": "devtrust",
                "password": "hunter2",
                "access_token": "hunter2",
                "request": {"url": "/api/oauth/token", "headers": {"Authorization": "hunter2"}},
                "attempts": [{"api_key": "hunter2", "status": 401}],
                "token_ttl": None,
            },
        )

    assert "hunter2" not in stream.getvalue()
    [line] = lines(stream)
    assert line["jamf_client_secret"] == "***"
    assert line["password"] == "***"
    assert line["access_token"] == "***"
    assert line["request"] == {"url": "/api/oauth/token", "headers": {"Authorization": "***"}}
    assert line["attempts"] == [{"api_key": "***", "status": 401}]
    assert line["token_ttl"] is None  # nothing to hide
    assert line["client_id"] == "devtrust"
    assert line["task_id"] == "t-1"


# -- the terminal line ---------------------------------------------------------------------


def test_a_terminal_gets_one_compact_line_with_the_fields_at_the_end() -> None:
    terminal = Terminal()
    configure_logging(stream=terminal)  # auto: the stream says it is a terminal
    with log_context(task_id="t-1", inventory="prod"):
        log.info("full sync done", extra={"devices": 1000, "note": "two pages", "secret": "x"})

    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} INFO    jamf\.sync: full sync done  "
        r'task_id=t-1 inventory=prod devices=1000 note="two pages" secret=\*\*\*\n',
        terminal.getvalue(),
    )


def test_a_terminal_line_shows_the_traceback_below_it() -> None:
    stream = io.StringIO()
    configure_logging(json_output=False, stream=stream)
    try:
        raise KeyError("serial")
    except KeyError:
        log.exception("mapping failed")

    first, *rest = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} ERROR   jamf\.sync: mapping failed", first)
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'serial'"


def test_json_can_be_forced_on_a_terminal() -> None:
    terminal = Terminal()
    configure_logging(json_output=True, stream=terminal)
    log.info("forced")
    assert json.loads(terminal.getvalue())["message"] == "forced"
