"""The Redis client the app uses at checkout and in workers: one per process and connection settings."""

import pytest

from django_points_earn import queueing


def test_checkouts_reuse_one_redis_connection(place_order, settings, redis_server, clean_redis):
    """A new client per checkout meant a new TCP connection per paid order (docs/benchmarks.md, checkout cost)."""
    first = queueing.connection()
    assert queueing.connection() is first
    before = clean_redis.info("stats")["total_connections_received"]
    for n in range(5):
        place_order(f"SO-REUSE-{n}")
    assert clean_redis.info("stats")["total_connections_received"] == before


@pytest.mark.django_db
def test_a_changed_redis_url_gets_its_own_client(settings, redis_server):
    first = queueing.connection()
    good = settings.RQ_QUEUES["default"]["URL"]
    settings.RQ_QUEUES["default"]["URL"] = "redis://127.0.0.1:1/0"
    try:
        other = queueing.connection()
        assert other is not first
        assert other.connection_pool.connection_kwargs["port"] == 1
    finally:
        settings.RQ_QUEUES["default"]["URL"] = good
    assert queueing.connection() is first
