"""Settings of the example shop, all read from the environment (django-environ), as a deployed shop would.

Variables: ``DEBUG``, ``SECRET_KEY``, ``DATABASE_URL``, ``REDIS_URL``, ``POINTS_API_KEY``,
``POINTS_BASE_URL``, ``POINTS_RETRY_BASE_DELAY``, ``POINTS_SWEEP_INTERVAL``, and for the boutique's fabric
account ``FABRIC_BASE_URL``, ``FABRIC_TOKEN_URL``, ``FABRIC_CLIENT_ID``, ``FABRIC_CLIENT_SECRET``.
``POINTS_API_KEY`` and the fabric ones have no default: without them, ``manage.py check`` reports
``points_earn.E004``. ``POINTS_BASE_URL`` unset or empty means the app's default, the production Points API.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env(
    DEBUG=(bool, False),
    POINTS_RETRY_BASE_DELAY=(float, 5.0),
    POINTS_SWEEP_INTERVAL=(float, 5.0),
)

DEBUG = env("DEBUG")
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY in the environment (or DEBUG=1 for a local development key).")
    SECRET_KEY = "dev-only-insecure-key-for-the-example-shop"  # only ever used with DEBUG on

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "django_points_earn",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop_site.urls"
WSGI_APPLICATION = "shop_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# -- database ------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The workers are separate processes writing to the same file: wait for locks, take the write lock up
    # front (no deadlocking upgrades from a read transaction), and let readers run alongside the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# -- Redis and the workers -----------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300}}
# django-rq registers its dashboard in the admin for every staff member by default: only superusers may see the
# queues (urls.py mounts them at /django-rq/ behind a superuser check).
RQ_SHOW_ADMIN_LINK = False

# -- loyalty points ------------------------------------------------------------------------------------------
POINTS_ACCOUNT = {
    "PROVIDER": "points",
    "API_KEY": env("POINTS_API_KEY", default=""),
    # What points_webhook_register stored (the demo makes one up): /loyalty/webhooks/points/main/ checks it.
    "WEBHOOK_SECRET": env("POINTS_WEBHOOK_SECRET", default=""),
}
if env("POINTS_BASE_URL", default=""):
    POINTS_ACCOUNT["BASE_URL"] = env("POINTS_BASE_URL")  # else the app's default: the production API

# The boutique earns on fabric Loyalty. fabric gives each tenant its own hosts, so there are no defaults.
FABRIC_ACCOUNT = {
    "PROVIDER": "fabric",
    "BASE_URL": env("FABRIC_BASE_URL", default=""),  # https://<tenant>-loyalty.fabric.zone/api
    "TOKEN_URL": env("FABRIC_TOKEN_URL", default=""),
    "CLIENT_ID": env("FABRIC_CLIENT_ID", default=""),
    "CLIENT_SECRET": env("FABRIC_CLIENT_SECRET", default=""),
    "ENTITY_REFERENCE": "Oud Boutique Riyadh",  # the store as set up in fabric
    # /v2/earn/reverse takes an entity of 3-15 characters: the returns entity as set up in fabric
    "REVERSE_ENTITY_REFERENCE": "Oud Returns",
    "TRANSACTION_TYPE": "PURCHASE",  # the purchase transaction type as set up in fabric
    # Our discounts have halalas. fabric types discountValue as an integer: confirmed with fabric that
    # decimals are accepted (the sandbox plays it that way), else keep "integer" and such orders are refused.
    "DISCOUNT_VALUE_AS": "number",
    # A boutique customer who never joined the programme earns nothing: no one needs to look at that.
    "MISSING_MEMBER": "skipped",
    "ISSUE_AUDIT_USER": "web-shop",
}

# Shipped gift boxes can be returned within this window: their points are held until it closes (shop.adapters'
# get_send_after). The demo makes it 2 minutes.
SHOP_RETURN_WINDOW = timedelta(minutes=env.int("SHOP_RETURN_WINDOW_MINUTES", default=14 * 24 * 60))

POINTS_EARN = {
    "ACCOUNTS": {"main": POINTS_ACCOUNT, "boutique": FABRIC_ACCOUNT},
    "ORDER_ADAPTER": "shop.adapters.ShopOrderAdapter",
    "RETRY": {"BASE_DELAY": env("POINTS_RETRY_BASE_DELAY")},
    "SWEEP_INTERVAL": env("POINTS_SWEEP_INTERVAL"),
    # /loyalty/metrics/ for Prometheus, with `Authorization: Bearer $POINTS_METRICS_TOKEN` (docs/operations.md).
    "METRICS": {"TOKEN": env("POINTS_METRICS_TOKEN", default="")},
}

# -- languages -----------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("ar", _("Arabic")), ("en", _("English"))]
TIME_ZONE = "Asia/Riyadh"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

# -- logging: the app's decisions on the console -------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {"format": "{asctime} {levelname} {name} [{process}] {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console"},
    },
    "loggers": {
        "django_points_earn": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
