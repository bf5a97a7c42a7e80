from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PointsEarnConfig(AppConfig):
    name = "django_points_earn"
    label = "django_points_earn"
    verbose_name = _("Loyalty points")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .metrics import register_collector
        from .phones import install_log_filter
        from .receivers import connect_receivers
        from .reversals import register_lifecycle_hooks

        connect_receivers()
        register_lifecycle_hooks()  # refunds waiting for an earning move on with it, in the same transaction
        install_log_filter()  # phones typed into free text never reach a log in full
        # The database gauges in prometheus_client's default registry (django-prometheus's /metrics shows them);
        # nothing is queried until a scrape, and nothing happens without prometheus_client.
        register_collector()
