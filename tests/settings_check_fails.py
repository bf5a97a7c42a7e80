"""tests.settings with a mistake `manage.py check` reports (an order adapter that does not exist)."""

from tests.settings import *  # noqa: F403

POINTS_EARN = {**POINTS_EARN, "ORDER_ADAPTER": "tests.shop.adapters.NoSuchAdapter"}  # noqa: F405
