"""An RQ worker that also runs the sweep every few seconds, so retries and crash recovery need no scheduler.

Use it with ``manage.py rqworker --worker-class django_points_earn.worker.EarningWorker`` (or set
``RQ = {"WORKER_CLASS": "django_points_earn.worker.EarningWorker"}``). With a plain worker, run
``manage.py points_reconcile`` from cron instead: the sweep is the same function.

Warm-up state (a platform's OAuth tokens: any platform may declare some, ``BaseBackend.share_state``): RQ forks a work
horse per job, and a token fetched in a work horse would die with it. So each work horse tells the worker (over a
pipe, in memory) what its drain learnt about the tokens of the account it drained — a new token, or a failure and
its back-off — and the next job is forked with it. The worker itself never calls a token endpoint: no job, of any
account, waits for another platform's token (issue 13 item 6).
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import partial
from typing import Any

from django.db import close_old_connections, connections
from rq.worker import Worker

from .conf import get_settings

log = logging.getLogger("django_points_earn")


class EarningWorker(Worker):
    _last_sweep = 0.0
    _token_pipe: tuple[int, int] | None = None

    @property
    def sweep_interval(self) -> float:
        return float(get_settings().sweep_interval or 0)

    @property
    def dequeue_timeout(self) -> int:
        # Wake up from the blocking dequeue often enough to sweep on time.
        base = super().dequeue_timeout
        return max(1, min(base, int(self.sweep_interval))) if self.sweep_interval else base

    def execute_job(self, job, queue):
        from .providers.transport import close_sessions

        close_sessions()  # no pooled socket of this process is handed down to the work horse
        read_fd, write_fd = os.pipe()
        self._token_pipe = (read_fd, write_fd)
        try:
            return super().execute_job(job, queue)
        finally:
            self._token_pipe = None
            os.close(write_fd)
            learn_tokens(read_fd)
            os.close(read_fd)

    def main_work_horse(self, job, queue):
        """In the work horse (the forked child): share what it learns (e.g. tokens) with the worker."""
        if self._token_pipe is not None:
            from .providers import platforms

            read_fd, write_fd = self._token_pipe
            os.close(read_fd)
            os.set_blocking(write_fd, False)
            for backend in platforms().values():
                backend.share_state(partial(tell_worker, write_fd))
        return super().main_work_horse(job, queue)

    def heartbeat(self, *args, **kwargs):
        result = super().heartbeat(*args, **kwargs)
        self.maybe_sweep()
        return result

    def maybe_sweep(self) -> None:
        interval = self.sweep_interval
        if not interval or time.monotonic() - self._last_sweep < interval:
            return
        self._last_sweep = time.monotonic()
        prefix = get_settings().redis_prefix
        # One sweeper per interval across all workers.
        if not self.connection.set(f"{prefix}:sweep", self.name, nx=True, px=int(interval * 1000)):
            return
        from .reconcile import sweep

        try:
            close_old_connections()
            report = sweep()
            if report.recovered_leases or report.drains_requested:
                log.info("sweep: %s", report.as_dict())
        except Exception:
            log.exception("sweep failed; the worker carries on")
        finally:
            # This is the parent process: never let a forked job inherit its database connection.
            connections.close_all()


def tell_worker(write_fd: int, event: dict[str, Any]) -> None:
    """In a work horse: one token event for the worker, as a JSON line (atomic: far below PIPE_BUF). A full pipe
    drops the event: sharing only spares the next job a token request."""
    try:
        os.write(write_fd, (json.dumps(event) + "\n").encode())
    except OSError:
        pass


def learn_tokens(read_fd: int) -> int:
    """In the worker, once its work horse is done: take in every event it shared (each platform's
    ``learn_state`` is offered it, see BaseBackend). Returns how many a platform took."""
    from .providers import platforms

    backends = list(platforms().values())

    os.set_blocking(read_fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    learnt = 0
    for line in b"".join(chunks).splitlines():
        try:
            event = json.loads(line)
            learnt += any([backend.learn_state(event) for backend in backends])
        except (ValueError, TypeError, KeyError, AttributeError):  # a line cut short by a killed work horse
            continue
    return learnt
