"""The chaos run's settings: the benchmark accounts with short timeouts, so that faults, kills and recoveries happen
many times in a few minutes. The lease still outlasts a whole call (timeouts + 5 s, points_earn.E008), and a retry
never comes before a slow answer's server-side work is over (MIN_DELAY ≥ the sandbox's slow_seconds - read)."""

from benchmarks.settings import *  # noqa: F403
from benchmarks.settings import POINTS_EARN as _BENCH

POINTS_EARN = {
    **_BENCH,
    # Each account receives the sandbox's webhooks (chaos.WebhookRelay): a placeholder secret, local only.
    "ACCOUNTS": {
        name: {**account, "WEBHOOK_SECRET": f"chaos-webhook-{name}-placeholder"}
        for name, account in _BENCH["ACCOUNTS"].items()
    },
    "HTTP_TIMEOUT": (1.0, 2.0),
    "LEASE_SECONDS": 9,
    "RETRY": {"MAX_ATTEMPTS": 12, "BASE_DELAY": 0.5, "MIN_DELAY": 1.0, "MAX_DELAY": 5.0, "RATE_LIMIT_DELAY": 0.2},
    "DRAIN": {"MAX_SECONDS": 20.0, "MAX_WAIT": 2.0},
    "SWEEP_INTERVAL": 1.0,
}
