"""Settings for the app's own test suite: SQLite by default, PostgreSQL with DATABASE_URL=postgres://…"""

import os
import tempfile
from pathlib import Path

import environ

env = environ.Env()
BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Asia/Riyadh"
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS and JS, served by live_server to the browser tests
    "django_rq",
    "django_points_earn",
    "tests.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
LANGUAGES = [("ar", "العربية"), ("en", "English")]

# Worker subprocesses must see the same test database: SQLite goes to a file (WAL, so readers and the
# worker's writer do not lock each other out), never to :memory:.
# One file per test run (worker subprocesses are handed its name), so parallel runs never share it.
_sqlite_test_file = os.environ.setdefault(
    "POINTS_TEST_SQLITE", os.path.join(tempfile.gettempdir(), f"points-earn-test-{os.getpid()}.sqlite3")
)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{_sqlite_test_file}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": _sqlite_test_file}

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/15")
RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 300}}

POINTS_API_KEY = "test-points-key-7Qx9"
POINTS_WEBHOOK_SECRET = "test-webhook-secret-Qp2k"
FABRIC_CLIENT_ID = "test-fabric-client"
FABRIC_CLIENT_SECRET = "test-fabric-secret-Zr8w"
POINTS_EARN = {
    "ACCOUNTS": {
        "main": {
            "PROVIDER": "points",
            "API_KEY": POINTS_API_KEY,
            "WEBHOOK_SECRET": POINTS_WEBHOOK_SECRET,
            "BASE_URL": env("POINTS_BASE_URL", default="https://sandbox.papp.sa/api/v1"),
        },
        "branch": {
            "PROVIDER": "points",
            "API_KEY": "test-branch-key-Lm3v",
            "BASE_URL": env("POINTS_BASE_URL", default="https://sandbox.papp.sa/api/v1"),
        },
        # fabric Loyalty, on the defaults (Basic grant, discountValue as an integer, a missing member rejected).
        "fabric": {
            "PROVIDER": "fabric",
            "BASE_URL": env("FABRIC_BASE_URL", default="https://loyalty.fabric.test/api"),
            "TOKEN_URL": env("FABRIC_TOKEN_URL", default="https://login.fabric.test/oauth2/default/v1/token"),
            "CLIENT_ID": FABRIC_CLIENT_ID,
            "CLIENT_SECRET": FABRIC_CLIENT_SECRET,
            "ENTITY_REFERENCE": "Riyadh Park",
            "TRANSACTION_TYPE": "PURCHASE",
        },
    },
    "ORDER_ADAPTER": "tests.shop.adapters.ShopAdapter",
    "HTTP_TIMEOUT": (1.0, 2.0),
    "LEASE_SECONDS": env.float("POINTS_TEST_LEASE", default=15),
    "RETRY": {
        "BASE_DELAY": 0.2,
        "MIN_DELAY": 0.05,
        "MAX_DELAY": 1.0,
        "RATE_LIMIT_DELAY": 0.05,
        "LOCK_BUSY_DELAY": 0.05,
        "MAX_ATTEMPTS": 5,
    },
    "DRAIN": {"MAX_SECONDS": 30, "MAX_WAIT": 2, "COOLDOWN_AFTER_TIMEOUT": 0.6},
    "SWEEP_INTERVAL": 1,
}

if env.bool("POINTS_TEST_PRODUCTION_TIMING", default=False):
    # A worker subprocess on the library's own timing (HTTP timeouts, lease, sweep, retries), e.g. to measure what
    # a SIGKILLed worker costs its account as a shop would see it.
    for _key in ("HTTP_TIMEOUT", "LEASE_SECONDS", "RETRY", "DRAIN", "SWEEP_INTERVAL"):
        POINTS_EARN.pop(_key)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_points_earn": {"handlers": ["console"], "level": "INFO"}},
}
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# PostgreSQL with server-side parameter binding and prepared statements (docs/capacity.md recommends them for many
# accounts): POINTS_TEST_SERVER_BINDING=1 runs the suite that way.
if env.bool("POINTS_TEST_SERVER_BINDING", default=False) and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
