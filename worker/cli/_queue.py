"""Talking to the worker's queue from the CLI: send a task, follow it to its end."""

from __future__ import annotations

import time
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


def follow(settings: Settings, task_id: str, *, timeout: float) -> int:
    """Show the task's progress until it ends; the exit status the CLI should return."""
    from kombu.exceptions import OperationalError

    from worker.celery import app

    try:
        return _follow(settings, task_id, timeout=timeout)
    except (OperationalError, OSError, RuntimeError) as exc:
        typer.echo(
            f"error: lost the result backend {_results(app)} while waiting ({one_line(exc)}); "
            "the sync may still run: `devtrust jamf status` tells",
            err=True,
        )
        return 1


def _follow(settings: Settings, task_id: str, *, timeout: float) -> int:
    from celery.result import AsyncResult
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from worker.celery import app

    result = AsyncResult(task_id, app=app)
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
        while not result.ready():
            if time.monotonic() > deadline:
                typer.echo(f"error: task {task_id} still running after {timeout:g} s", err=True)
                return 1
            info = result.info if result.state == "PROGRESS" else None
            if isinstance(info, dict):
                bar.update(
                    line,
                    description=f"{info.get('kind', '')} sync of {info.get('inventory', '')}",
                    completed=info.get("pages_done", 0),
                    total=max(info.get("pages_expected", 0), info.get("pages_done", 0)) or None,
                    devices=info.get("fetched", 0),
                )
            elif result.state == "STARTED":
                bar.update(line, description="syncing")
            elif not hinted and time.monotonic() - began > NO_WORKER_HINT_SECONDS:
                hinted = True
                console.print(
                    f"no worker has taken task {task_id} yet: is `devtrust worker` running "
                    f"on {_where(settings)}?",
                    highlight=False,
                    soft_wrap=True,
                )
            time.sleep(POLL_SECONDS)
    if result.failed():
        typer.echo(f"error: the sync task failed: {result.result}", err=True)
        return 1
    return _summary(result.result)


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
