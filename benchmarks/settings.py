"""Settings for the benchmarks: the test shop and database handling of ``tests.settings``, with Points accounts on
the local sandbox (four, or ``POINTS_BENCH_ACCOUNTS``) and the app's own defaults (timeouts, retries, lease, drain,
sweep) — what a shop would run, not the test suite's shortened timings.

The driver sets DATABASE_URL, REDIS_URL and POINTS_BASE_URL (and the POINTS_BENCH_* knobs below) before anything
imports this, and hands the same environment to the sandbox and the worker processes, so all of them agree on the
accounts and their keys.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import env

# acct1 .. acctN. At least the four the other benchmarks name; many_accounts.py asks for hundreds.
BENCH_ACCOUNTS = tuple(f"acct{i}" for i in range(1, max(4, env.int("POINTS_BENCH_ACCOUNTS", default=4)) + 1))
# Placeholder keys for the local sandbox only (it is given the same ones); never printed by the benchmarks.
BENCH_API_KEYS = {name: f"bench-{name}-key-{i}Zq" for i, name in enumerate(BENCH_ACCOUNTS, start=1)}
BENCH_MERCHANTS = {name: f"merchant-{name}" for name in BENCH_ACCOUNTS}

POINTS_EARN = {
    "ACCOUNTS": {
        name: {
            "PROVIDER": "points",
            "API_KEY": BENCH_API_KEYS[name],
            "BASE_URL": env("POINTS_BASE_URL", default="http://127.0.0.1:8765/api/v1"),
        }
        for name in BENCH_ACCOUNTS
    },
    "ORDER_ADAPTER": "tests.shop.adapters.ShopAdapter",
    # memory.py and profile_drain.py keep one drain job (one work horse) on the account for all its earnings.
    "DRAIN": {"MAX_SECONDS": env.float("POINTS_BENCH_DRAIN_SECONDS", default=60.0)},
}
# How many accounts one worker process drains at once (many_accounts.py --accounts-per-process); unset: the app's
# default. Code that does not know the key ignores it (conf.py merges DRAIN over its defaults, checks.py does not
# look inside DRAIN).
if os.environ.get("POINTS_BENCH_ACCOUNTS_PER_PROCESS"):
    POINTS_EARN["DRAIN"]["ACCOUNTS_PER_PROCESS"] = env.int("POINTS_BENCH_ACCOUNTS_PER_PROCESS")

# Every process logs what it would log in production (the app at INFO), to a file instead of the terminal.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"timed": {"format": "%(asctime)s %(process)d %(name)s %(message)s"}},
    "handlers": {
        "file": {
            "class": "logging.FileHandler",
            "filename": os.environ.get("POINTS_BENCH_LOG", os.devnull),
            "formatter": "timed",
        }
    },
    "root": {"handlers": ["file"], "level": "WARNING"},
    "loggers": {
        "django_points_earn": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "rq.worker": {"handlers": ["file"], "level": "INFO", "propagate": False},
    },
}

# PostgreSQL statements prepared (psycopg's prepare_threshold; Django's default is never): the app's hot path binds
# its parameters on the server, so it is prepared from its second use on a connection. A database setting of the
# shop's (not behind a PgBouncer older than 1.21 in transaction mode), compared in docs/capacity.md:
# POINTS_BENCH_PREPARE=1 turns it on for a run, POINTS_BENCH_SERVER_BINDING=1 also binds Django's own queries there.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    _options = DATABASES["default"].setdefault("OPTIONS", {})  # noqa: F405
    if env.bool("POINTS_BENCH_PREPARE", default=False) or env.bool("POINTS_BENCH_SERVER_BINDING", default=False):
        _options["prepare_threshold"] = 2
    if env.bool("POINTS_BENCH_SERVER_BINDING", default=False):
        _options["server_side_binding"] = True
