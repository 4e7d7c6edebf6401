"""Talking to the worker's queue from the CLI: send a task, follow it to its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer

from inventory.errors import DevtrustError, one_line
from inventory.settings import Settings

POLL_SECONDS = 0.5
# With --wait, a task no worker has taken after this long gets a hint on stderr.
NO_WORKER_HINT_SECONDS = 10.0


class BrokerUnavailable(DevtrustError):
    http_status = 503


def _where(settings: Settings) -> str:
    from worker.locks import redacted_url

    if not settings.broker_url:
        return f"the embedded queue in {settings.data_dir}"
    return redacted_url(settings.broker_url)


def _results(app: Any) -> str:
    from worker.locks import redacted_url

    return redacted_url(str(app.conf.result_backend))


def send_sync(settings: Settings, *, inventory: str, kind: str, force: bool, actor: str) -> str:
    """Queue a sync; a broker that is briefly away is retried for about a minute."""
    from kombu.exceptions import OperationalError

    from worker.celery import QUEUE, SYNC_TASK, app

    try:
        result = app.send_task(
            SYNC_TASK,
            kwargs={"inventory": inventory, "kind": kind, "force": force, "requested_by": actor},
            queue=QUEUE,
            retry=True,
            retry_policy={
                "max_retries": 60,
                "interval_start": 0.2,
                "interval_step": 0.5,
                "interval_max": 1.0,
            },
        )
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot queue the sync: {_where(settings)} did not answer ({one_line(exc)})"
        ) from None
    except RuntimeError as exc:  # Celery's result backend, given up reconnecting
        raise BrokerUnavailable(
            f"cannot queue the sync: the result backend {_results(app)} did not answer "
            f"({one_line(exc)})"
        ) from None
    return str(result.id)


@dataclass(frozen=True)
class TaskView:
    """A queued task as a follower sees it: ``GET /v1/admin/jamf/tasks/{id}`` answers
    exactly these fields, so the CLI follows a sync the same way either side of the API."""

    state: str  # Celery's: PENDING (or not known), STARTED, PROGRESS, SUCCESS, FAILURE...
    done: bool
    progress: dict[str, Any] | None = None  # a running sync's pages and counts
    outcome: Any = None  # a finished task's result (the sync's run)
    error: str | None = None  # why a failed task failed

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "done": self.done, "progress": self.progress,
                "outcome": self.outcome, "error": self.error}  # fmt: skip


def task_view(task_id: str) -> TaskView:
    """What the result backend knows of ``task_id`` now (PENDING for a task it does not
    know: Celery cannot tell a queued task from an unknown one)."""
    from celery import states
    from celery.result import AsyncResult

    from worker.celery import app

    result = AsyncResult(task_id, app=app)
    state = result.state
    if state not in states.READY_STATES:
        info = result.info if state == "PROGRESS" else None
        return TaskView(state, False, progress=info if isinstance(info, dict) else None)
    if state == states.SUCCESS:
        return TaskView(state, True, outcome=result.result)
    return TaskView(state, True, error=one_line(result.result) or state)


class Lost(DevtrustError):
    """What the follower asks for went away while it waited."""


def follow(settings: Settings, task_id: str, *, timeout: float) -> int:
    """Show the task's progress until it ends; the exit status the CLI should return."""
    from kombu.exceptions import OperationalError

    from worker.celery import app

    def view() -> TaskView:
        try:
            return task_view(task_id)
        except (OperationalError, OSError, RuntimeError) as exc:
            raise Lost(f"lost the result backend {_results(app)} while waiting "
                       f"({one_line(exc)})") from None  # fmt: skip

    return follow_view(view, task_id, timeout=timeout, where=_where(settings))


def follow_view(
    view: Callable[[], TaskView], task_id: str, *, timeout: float, where: str
) -> int:
    """Follow the task ``view`` reads until it ends, with a progress bar on a terminal;
    the exit status the CLI should return. ``where`` is the queue a worker should serve."""
    try:
        return _follow(view, task_id, timeout=timeout, where=where)
    except Lost as exc:
        typer.echo(
            f"error: {exc}; the sync may still run: `devtrust jamf status` tells", err=True
        )
        return 1


def _follow(view: Callable[[], TaskView], task_id: str, *, timeout: float, where: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    began = time.monotonic()
    deadline = began + timeout
    hinted = False
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages  {task.fields[devices]} devices"),
    )
    # On a terminal only: in a log, a transient bar leaves blank lines behind.
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        line = bar.add_task("waiting for a worker", total=None, devices=0)
        while not (current := view()).done:
            if time.monotonic() > deadline:
                typer.echo(f"error: task {task_id} still running after {timeout:g} s", err=True)
                return 1
            info = current.progress
            if info is not None:
                bar.update(
                    line,
                    description=f"{info.get('kind', '')} sync of {info.get('inventory', '')}",
                    completed=info.get("pages_done", 0),
                    total=max(info.get("pages_expected", 0), info.get("pages_done", 0)) or None,
                    devices=info.get("fetched", 0),
                )
            elif current.state == "STARTED":
                bar.update(line, description="syncing")
            elif not hinted and time.monotonic() - began > NO_WORKER_HINT_SECONDS:
                hinted = True
                console.print(
                    f"no worker has taken task {task_id} yet: is `devtrust worker` running "
                    f"on {where}?",
                    highlight=False,
                    soft_wrap=True,
                )
            time.sleep(POLL_SECONDS)
    if current.error is not None:
        typer.echo(f"error: the sync task failed: {current.error}", err=True)
        return 1
    return _summary(current.outcome)


def _summary(outcome: Any) -> int:
    if not isinstance(outcome, dict):
        typer.echo(f"error: unexpected task result {outcome!r}", err=True)
        return 1
    if outcome.get("status") == "skipped":
        typer.echo(f"error: sync skipped: {outcome.get('reason')}", err=True)
        return 1
    run = outcome.get("run") or {}
    seconds = run.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    counts = ", ".join(
        f"{key} {run.get(key, 0)}"
        for key in ("fetched", "created", "updated", "unchanged", "deleted", "skipped")
    )
    typer.echo(
        f"{run.get('kind')} sync of {run.get('inventory')} {run.get('status')}{took}: {counts}"
    )
    if run.get("status") != "succeeded":
        typer.echo(f"error: {run.get('error')}", err=True)
        return 1
    return 0
