"""Redis side of dispatch: the per-account lock, the "drain requested" flag and enqueueing drain jobs.

Redis only ever holds hints: the database is the source of truth, and a sweep rebuilds anything Redis lost.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import django_rq
from django.conf import settings as django_settings
from django_rq.connection_utils import filter_connection_params
from redis import Redis
from redis.lock import Lock

from .conf import AccountConfig, get_settings

log = logging.getLogger("django_points_earn")

# Seconds a "drain requested" flag suppresses further enqueues for the account. Short on purpose: a worker killed
# between dequeuing the job and starting it loses the job but not the flag, and the account must not wait long for
# the sweep. Under load a queued job may outlive it; the extra job it lets through finds nothing to do.
DRAIN_FLAG_TTL = 15
_clients: dict[str, Redis] = {}


def _key(kind: str, account: str) -> str:
    return f"{get_settings().redis_prefix}:{kind}:{account}"


def connection() -> Redis:
    """The queue's Redis client, one per process and connection settings, so its connection pool is reused.

    ``django_rq.get_connection`` builds a new client (a new TCP connection) on every call: at checkout that was
    most of the time the app added (docs/benchmarks.md). redis-py's pool opens fresh connections after a fork.
    """
    name = get_settings().queue
    key = repr(sorted(filter_connection_params(django_settings.RQ_QUEUES[name]).items()))
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = django_rq.get_connection(name)
    return client


def lock_ttl(account: AccountConfig) -> float:
    """Longer than one whole HTTP call, so the lock cannot lapse while our call is still in flight."""
    connect, read = account.timeout
    return connect + read + 5


def account_lock(account: AccountConfig, conn: Redis | None = None, *, ttl: float | None = None) -> Lock:
    """The account's lock. Without ``ttl`` it outlives one whole HTTP call (for a holder that makes one call and
    does not renew it); a drain takes it for ``LEASE_SECONDS`` and renews it from its heartbeat, so a killed
    worker's lock lapses within seconds."""
    timeout = ttl if ttl is not None else lock_ttl(account)
    return Lock(conn or connection(), _key("lock", account.name), timeout=timeout, thread_local=False)


DRAIN_JOB = "django_points_earn.jobs.drain_account"
WEBHOOK_JOB = "django_points_earn.jobs.process_webhook"


_DRAIN_JOB_PREFIX = "points-earn-drain-"


def job_id(account: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", account)[:60]
    return f"{_DRAIN_JOB_PREFIX}{slug}-{uuid.uuid4().hex[:12]}"


def request_drain(account: str, conn: Redis | None = None) -> bool:
    """Make sure a drain job for ``account`` is queued, and that running drains with a free slot see it waiting.
    Returns True if this call enqueued a job."""
    conn = conn or connection()
    flag = _key("drain-requested", account)
    with conn.pipeline(transaction=False) as pipe:  # one round trip
        pipe.zadd(_wanted_key(), {account: time.time()}, nx=True)  # keeps its place if it already waits
        pipe.set(flag, "1", nx=True, ex=DRAIN_FLAG_TTL)
        _, flagged = pipe.execute()
    if not flagged:
        return False  # a job is already waiting in the queue; it will see our record
    try:
        queue = django_rq.get_queue(get_settings().queue, commit_mode="auto", connection=conn)
        queue.enqueue(
            DRAIN_JOB,  # by dotted path: the queue layer does not import the jobs that use it
            account,
            job_id=job_id(account),
            job_timeout=int(get_settings().drain["MAX_SECONDS"]) + 120,
            result_ttl=600,
            failure_ttl=7 * 24 * 3600,
            description=f"points-earn: drain account {account}",
        )
    except Exception:
        conn.delete(flag)
        raise
    return True


def _wanted_key() -> str:
    return f"{get_settings().redis_prefix}:wanted"


# How many accounts held elsewhere a full drain's "does anyone wait?" looks past (one pipeline, once a second).
UNLOCKED_LOOKAHEAD = 256


def wanted(limit: int, *, exclude: frozenset[str] = frozenset(), unlocked: bool = False) -> list[str]:
    """Up to ``limit`` accounts waiting for a drain, longest-waiting first (a drain with free slots takes them),
    leaving out ``exclude``; with ``unlocked``, only those no drain holds (a lock held elsewhere covers the rest)."""
    if limit <= 0:
        return []
    conn = connection()
    # With ``unlocked``, look past accounts held elsewhere too: one that got a new order while its lane runs in
    # another process waits at the head with its old place, and would hide every account behind it.
    window = limit + len(exclude) + (UNLOCKED_LOOKAHEAD if unlocked else 0)
    names = [name.decode() for name in conn.zrange(_wanted_key(), 0, window - 1)]
    names = [name for name in names if name not in exclude]
    if unlocked and names:
        with conn.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(_key("lock", name))
            locked = pipe.execute()
        names = [name for name, is_locked in zip(names, locked, strict=True) if not is_locked]
    return names[:limit]


def jobs_waiting() -> bool:
    """Whether other jobs wait in our queue (then a drain job should not idle on its own backoff)."""
    return django_rq.get_queue(get_settings().queue, connection=connection()).count > 0


# How far down the queue the sweep looks for a drain job (the next ones to run): a bounded read every pass, however
# long a shared queue's backlog of other jobs is.
DRAIN_JOBS_LOOKED_AT = 1000


def drain_jobs_queued(conn: Redis | None = None) -> bool:
    """Whether a drain job waits among the next ``DRAIN_JOBS_LOOKED_AT`` jobs of our queue."""
    queue = django_rq.get_queue(get_settings().queue, connection=conn or connection())
    return any(job.startswith(_DRAIN_JOB_PREFIX) for job in queue.get_job_ids(0, DRAIN_JOBS_LOOKED_AT))


def clear_drain_request(account: str, conn: Redis | None = None) -> None:
    """A drain starts on the account (or finds it held): it no longer waits, and its next request enqueues again."""
    with (conn or connection()).pipeline(transaction=False) as pipe:
        pipe.delete(_key("drain-requested", account))
        pipe.zrem(_wanted_key(), account)
        pipe.execute()


def drain_active(account: str, conn: Redis | None = None) -> bool:
    """A drain job is queued or running for the account (as far as Redis knows)."""
    conn = conn or connection()
    return bool(conn.exists(_key("drain-requested", account), _key("lock", account)))


def without_drain(accounts: list[str], conn: Redis | None = None) -> list[str]:
    """The accounts no drain will reach as things stand: no drain job queued for them or running on them, and not
    waiting in the list that queued jobs adopt from. Looked up in one round trip, however many accounts there are
    (the sweep asks this every few seconds)."""
    if not accounts:
        return []
    conn = conn or connection()
    with conn.pipeline(transaction=False) as pipe:
        for account in accounts:
            pipe.exists(_key("drain-requested", account))
            pipe.exists(_key("lock", account))
            pipe.zscore(_wanted_key(), account)
        answers = pipe.execute()
    flagged, locked, waiting = answers[0::3], answers[1::3], answers[2::3]
    # Every drain job, whichever account it was queued for, takes waiting accounts into its free slots: while drain
    # jobs are queued, a waiting account needs no job of its own (with 1,000 accounts that is 1,000 forks saved).
    # Only a drain job adopts (a webhook's job, or a shop's own on a shared queue, does not): one is queued if an
    # account's flag says so (set when it is queued, cleared when it starts), or if the queue shows one.
    drain_queued = any(score is not None for score in waiting) and (any(flagged) or drain_jobs_queued(conn))
    return [
        account
        for account, is_flagged, is_locked, score in zip(accounts, flagged, locked, waiting, strict=True)
        if not (is_flagged or is_locked) and not (score is not None and drain_queued)
    ]


def request_drains(accounts: list[str], conn: Redis | None = None) -> list[str]:
    """Make sure a drain reaches each of ``accounts``: all wait in the list running drains adopt from, and only as
    many get a job of their own as it takes to serve them all (each job takes up to ``ACCOUNTS_PER_PROCESS``). After
    Redis lost its data, a thousand accounts need a few dozen jobs, not a thousand. Returns the accounts."""
    if not accounts:
        return []
    conn = conn or connection()
    now = time.time()
    conn.zadd(_wanted_key(), {account: now for account in accounts}, nx=True)
    slots = max(1, int(get_settings().drain["ACCOUNTS_PER_PROCESS"]))
    for account in accounts[: -(-len(accounts) // slots)]:  # ceil(n / slots) jobs
        request_drain(account, conn)
    return accounts


def request_drain_safely(account: str) -> None:
    """For ``transaction.on_commit`` at checkout: never raises. Without Redis the record waits for a sweep."""
    try:
        request_drain(account)
    except Exception as exc:
        log.warning(
            "could not enqueue earning work for account %s (%s: %s); the earning is saved as queued and the "
            "next sweep (EarningWorker or points_reconcile) sends it",
            account,
            type(exc).__name__,
            exc,
        )
