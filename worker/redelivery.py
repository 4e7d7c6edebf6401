"""A dead worker's messages come back within minutes on Redis, a live worker's never.

Celery's Redis transport (kombu) emulates acknowledgements: a message a worker takes
stays in the hash ``unacked`` and in the sorted set ``unacked_index``, scored by the
time it was delivered, until the worker acknowledges it (late, after the task, as
devtrust's tasks are). Every worker sweeps ``unacked_index`` now and then and puts back
on the queue every message delivered longer ago than the ``visibility_timeout``: that is
how a message of a worker killed mid-sync comes back. kombu never refreshes the score,
so the timeout had to outlast the longest sync (4 h), and a killed sync came back five
hours later. Neither Celery nor kombu offers a way to extend it.

So the worker's consumer refreshes the score itself: every quarter of the visibility
timeout, it sets the delivery time of each message it holds unacknowledged (running,
waiting for its ETA, or prefetched) to now, with ``ZADD XX`` (only messages still
there: one acknowledged or restored meanwhile is left alone). A live worker's messages
are then never older than a quarter of the timeout, however long they run; a dead
worker's stop being refreshed and come back one timeout later, plus one sweep.

The refresh runs on the consumer's timer, in the worker's main process (the event loop
that also receives and acknowledges messages), not in the pool process that runs the
task: a task that keeps a pool process busy does not stop it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

log = logging.getLogger("devtrust.worker.redelivery")

# The refreshes per visibility timeout: three may be missed before a message comes back.
RENEWALS_PER_TIMEOUT = 4


def renew_unacked(channel: Any, now: float | None = None) -> int:
    """Refresh the delivery time of every message ``channel`` holds unacknowledged;
    returns how many it holds."""
    try:
        tags = list(channel.qos._delivered)
    except RuntimeError:  # changed while read from another thread: next time
        return 0
    if not tags:
        return 0
    stamp = time.time() if now is None else now
    with channel.conn_or_acquire() as client:
        client.zadd(channel.unacked_index_key, dict.fromkeys(tags, stamp), xx=True)
    return len(tags)


class RenewUnacked(bootsteps.StartStopStep):  # type: ignore[misc]
    """The consumer step that keeps this worker's unacknowledged messages fresh."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._tref: Any = None

    def start(self, c: Any) -> None:
        options = c.app.conf.broker_transport_options or {}
        timeout = options.get("visibility_timeout")
        if not timeout or not str(c.app.conf.broker_url).startswith(("redis://", "rediss://")):
            return
        self._tref = c.timer.call_repeatedly(timeout / RENEWALS_PER_TIMEOUT, self._renew, (c,))

    def stop(self, c: Any) -> None:
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None

    shutdown = stop

    def _renew(self, c: Any) -> None:
        consumer = getattr(c, "task_consumer", None)
        if consumer is None:  # reconnecting: the restarted step renews again
            return
        try:
            renew_unacked(consumer.channel)
        except (RedisError, OperationalError, OSError) as exc:
            log.warning("could not refresh the messages this worker holds: %s", exc)
