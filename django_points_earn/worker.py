"""An RQ worker that also runs the sweep every few seconds, so retries and crash recovery need no scheduler.

Use it with ``manage.py rqworker --worker-class django_points_earn.worker.EarningWorker`` (or set
``RQ = {"WORKER_CLASS": "django_points_earn.worker.EarningWorker"}``). With a plain worker, run
``manage.py points_reconcile`` from cron instead: the sweep is the same function.
"""

from __future__ import annotations

import logging
import time

from django.db import close_old_connections, connections
from rq.worker import Worker

from .conf import get_settings

log = logging.getLogger("django_points_earn")


class EarningWorker(Worker):
    _last_sweep = 0.0

    @property
    def sweep_interval(self) -> float:
        return float(get_settings().sweep_interval or 0)

    @property
    def dequeue_timeout(self) -> int:
        # Wake up from the blocking dequeue often enough to sweep on time.
        base = super().dequeue_timeout
        return max(1, min(base, int(self.sweep_interval))) if self.sweep_interval else base

    def execute_job(self, job, queue):
        self.warm_tokens()
        return super().execute_job(job, queue)

    def warm_tokens(self) -> None:
        """fabric tokens are cached per process: fetch (or keep) them here, in the parent, so that every forked
        job inherits a fresh one instead of fetching its own. Pooled sockets are closed before the fork."""
        from django.core.exceptions import ImproperlyConfigured

        from .providers import get_backend
        from .providers.base import close_sessions

        try:
            settings = get_settings()
            accounts = [settings.account(name) for name in settings.account_names]
        except ImproperlyConfigured:
            return  # the job itself reports configuration errors, on the record
        for account in accounts:
            if account.provider != "fabric":
                continue
            try:
                get_backend(account).warm_token()
            except Exception:  # never let the parent die over a token: the job will meet the problem itself
                log.exception("could not prepare a token for account %s before the job", account.name)
        close_sessions()

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
