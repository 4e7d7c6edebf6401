"""``devtrust worker`` and ``devtrust beat``: plain wrappers over Celery's own commands.

``celery -A worker worker`` and ``celery -A worker beat`` do the same; these check the
configuration first, so a mistake is one line rather than a traceback from a worker
that has already started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import database, settings

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _checked_level(loglevel: str) -> str:
    level = loglevel.upper()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"--loglevel must be one of {', '.join(LOG_LEVELS)}")
    return level


def _check_configuration() -> None:
    from jamf.config import source_from_settings
    from worker.celery import app, beat_schedule, beat_settings, broker_settings

    current = settings()
    source_from_settings(current)
    queue = broker_settings(current)
    beat_schedule(current, app)  # the start delay and the periods, checked now
    beat_settings(current, queue["broker_url"])  # the lock timeout


def worker(
    beat: Annotated[
        bool, typer.Option("--beat", "-B", help="also run the scheduler (one machine only)")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(help="worker processes (default: one per CPU)")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="node name, e.g. sync1@%h (default: celery@host)"),
    ] = None,
) -> None:
    """Run a worker: Jamf syncs, scheduled and on demand."""
    level = _checked_level(loglevel)
    if concurrency is not None and concurrency < 1:
        raise typer.BadParameter("--concurrency must be at least 1")
    _check_configuration()
    from worker.celery import QUEUE, app

    argv = ["worker", f"--loglevel={level}", f"--queues={QUEUE}"]
    if beat:
        # Named here too, as `devtrust beat` has them from the configuration: the schedule
        # in Redis (redbeat), or in its file under the data directory.
        argv += [
            "--beat",
            f"--scheduler={app.conf.beat_scheduler}",
            f"--schedule-filename={app.conf.beat_schedule_filename}",
        ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if name:
        argv.append(f"--hostname={name}")
    app.worker_main(argv)


def beat(
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run the scheduler alone: it queues each inventory's partial and full syncs.

    On Redis, two may run (on two machines): one schedules, the other stands by.
    """
    level = _checked_level(loglevel)
    _check_configuration()
    from worker.celery import app

    app.start(
        [
            "beat",
            f"--loglevel={level}",
            f"--scheduler={app.conf.beat_scheduler}",
            f"--schedule={app.conf.beat_schedule_filename}",
        ]
    )


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 8800,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="TLS certificate (PEM, chain after it)", metavar="FILE"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="its key (PEM)", metavar="FILE")
    ] = None,
    tls_self_signed: Annotated[
        bool,
        typer.Option("--tls-self-signed", help="make a self-signed pair under <data dir>/tls"),
    ] = False,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-client-ca",
            help="ask for (not require) client certificates of this CA",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Run the ceremony HTTP service: enrollment, auto-enrollment, /healthz, /openapi.json.

    Plain HTTP on loopback only; elsewhere give --tls-cert/--tls-key or --tls-self-signed.

    DEVTRUST_TLS_TERMINATED_BY_PROXY=true: a proxy in front ends TLS (plain HTTP anywhere).
    """
    if not 0 < port < 65536:
        raise typer.BadParameter("--port must be between 1 and 65535")
    from ceremony.tls import server_tls
    from jamf.simulator.server import bind

    # A host that does not resolve or a port taken is said before what TLS would say.
    bind(host, port).close()
    current = settings()
    tls, notes = server_tls(
        host,
        cert_file=tls_cert or current.tls_cert_file,
        key_file=tls_key or current.tls_key_file,
        self_signed=tls_self_signed or current.tls_self_signed,
        client_ca_file=tls_client_ca or current.tls_client_ca_file,
        terminated_by_proxy=current.tls_terminated_by_proxy,
        data_dir=current.data_dir,
    )
    for note in notes:
        typer.echo(note, err=True)
    import uvicorn

    from ceremony.authn import AuthConfig, DeviceAuthentication
    from ceremony.autoenroll import AutoEnrollment
    from ceremony.device_ca import DeviceCA
    from ceremony.enroll import CeremonyConfig, EnrollmentCeremony
    from ceremony.errors import DeviceCAError
    from ceremony.limits import SERVER_OPTIONS
    from ceremony.ratelimit import rate_limiter_for
    from ceremony.service import broker_check, create_app, database_check
    from inventory.durations import parse_duration
    from inventory.errors import ConfigurationError
    from worker.celery import broker_settings
    from worker.celery import create_app as create_celery
    from worker.dispatch import CeleryCheckQueue
    from worker.logs import configure_logging

    queue = broker_settings(current)
    checks = {
        "database": database_check(current),
        "broker": broker_check(queue["broker_url"], queue.get("broker_transport_options", {})),
    }
    config = CeremonyConfig(
        challenge_ttl=parse_duration(current.challenge_ttl, what="DEVTRUST_CHALLENGE_TTL"),
        history_limit=current.collected_history_limit,
    )
    ceremony = EnrollmentCeremony(database(), config)
    window = parse_duration(current.auto_enroll_window, what="DEVTRUST_AUTO_ENROLL_WINDOW")
    limiter = rate_limiter_for(
        current.lock_url or queue["broker_url"],
        current.auto_enroll_attempts,
        window,
        "auto-enrollment attempts",
    )
    celery = create_celery(current)
    auto = AutoEnrollment(database(), CeleryCheckQueue(celery), limiter, current.auto_enroll_wait)
    try:
        ca = DeviceCA.load_or_create(
            current.data_dir / "device-ca",
            key_file=current.device_ca_key_file,
            cert_file=current.device_ca_cert_file,
        )
    except DeviceCAError as exc:
        raise ConfigurationError(str(exc)) from None
    authentication = DeviceAuthentication(
        database(),
        ca,
        AuthConfig(
            challenge_ttl=config.challenge_ttl,
            certificate_ttl=parse_duration(
                current.device_cert_ttl, what="DEVTRUST_DEVICE_CERT_TTL"
            ),
            history_limit=current.collected_history_limit,
        ),
    )
    # Bound once first: a port taken is one error line, not uvicorn's among its start-up logs.
    bind(host, port).close()
    configure_logging("INFO")
    from ceremony.webhooks import JamfWebhooks
    from worker.celery import DeviceSyncQueue

    webhooks = JamfWebhooks(current, DeviceSyncQueue(celery, current).submit)
    metrics = service_metrics(current, celery)
    from ceremony.gate import gate_for

    secret = current.access_proxy_secret
    access = gate_for(
        database(), current.database_url_value, ca.cert,
        trusted_proxies=current.access_trusted_proxies,
        proxy_secret=secret.get_secret_value() if secret else None,
        certificate_header=current.access_certificate_header.lower(),
    )  # fmt: skip
    from ceremony.admin import AdminApi

    admin = AdminApi(database(), current)  # /v1/admin/* and /v1/me/devices
    app = create_app(
        current, checks, ceremony, auto, authentication, webhooks, metrics, access=access,
        admin=admin,
    )  # fmt: skip
    # What start-up built lives as long as the process: out of the collector's sight, so
    # that a full collection, every few thousand requests, does not walk it (a pause of
    # tens of milliseconds on every request waiting meanwhile).
    import gc

    gc.freeze()
    # h11 with bounded headers, not httptools: see ceremony.limits.
    tls_options = tls.uvicorn_options() if tls is not None else {}
    uvicorn.run(app, host=host, port=port, log_config=None, **SERVER_OPTIONS, **tls_options)


def service_metrics(current: Any, celery: Any) -> Any:
    """``devtrust serve``'s metrics: the sync figures of the configured Jamf inventories
    (none when Jamf's inventories cannot be read from the settings) and the queue."""
    from ceremony.metrics import Metrics, QueueCollector, SyncCollector, celery_queue_depth
    from inventory.errors import DevtrustError
    from jamf.config import source_from_settings
    from worker.celery import QUEUE

    metrics = Metrics()
    try:
        source = source_from_settings(current)
    except DevtrustError as exc:
        typer.echo(f"warning: no sync metrics: {exc}", err=True)
    else:
        metrics.registry.register(SyncCollector(database(), source.name, source.inventories))

    metrics.registry.register(QueueCollector(lambda: celery_queue_depth(celery, QUEUE)))
    return metrics
