"""The one place that reads ``settings.POINTS_EARN``.

Everything is in one namespaced dict; every key has a default except the accounts and the order adapter.
Errors name the exact key that is missing or wrong, e.g. ``POINTS_EARN["ACCOUNTS"]["riyadh"]["API_KEY"]``.
Secrets read here (API keys, client secrets) are kept out of ``repr()`` so they never reach a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    "ACCOUNTS": {},
    # Dotted path of your OrderAdapter subclass; not needed when ORDER_FIELDS says where the fields are.
    "ORDER_ADAPTER": None,
    # The declarative adapter: where the order keeps each field, as dotted paths from the order, e.g.
    # {"number": "number", "phone": "customer.phone", "total": "total", "lines": "lines", "line_name": "product.name"}.
    # "number", "phone" and "total" are required; the keys are listed in adapters.ORDER_FIELD_KEYS.
    "ORDER_FIELDS": None,
    # Dotted path of a signal the shop already sends when an order is paid (instead of our ``order_paid``).
    "ORDER_PAID_SIGNAL": None,
    # RQ queue (a name in RQ_QUEUES) the earning jobs go to.
    "QUEUE": "default",
    # (connect, read) seconds for every HTTP call to a platform.
    "HTTP_TIMEOUT": (3.05, 10.0),
    # How long a claimed record may stay ``sending`` without its worker renewing the claim before a sweep treats
    # that worker as dead. A live worker renews it (and the account lock) every LEASE_SECONDS / 4 while it holds
    # the record, however long the call takes; so a killed worker holds up its account for about LEASE_SECONDS
    # plus one SWEEP_INTERVAL (8 + 5 s by default), not a whole HTTP timeout.
    "LEASE_SECONDS": 8,
    # Retries of transient failures (timeouts, 5xx): exponential backoff with full jitter.
    "RETRY": {
        "MAX_ATTEMPTS": 8,  # attempts that failed transiently before a record becomes ``failed``
        "BASE_DELAY": 5.0,  # seconds; the n-th retry waits up to BASE_DELAY * 2**(n-1) (full jitter)
        "MAX_DELAY": 3600.0,  # cap of one wait, also of any Retry-After a platform sends (inf, 1e30: this)
        # floor of one wait, so a jitter of ~0 (or a platform's "Retry-After: 0") never resends into a busy
        # platform in a hot loop
        "MIN_DELAY": 1.0,
        "RATE_LIMIT_DELAY": 1.0,  # 429 without a usable Retry-After: wait 1x-2x this, without using up an attempt
        # 429s a record may get without using up attempts. Past this, each further 429 counts as a failed attempt
        # with the exponential backoff above, so a record the platform keeps refusing ends ``failed`` after
        # MAX_ATTEMPTS more (and writes a bounded number of attempt rows) instead of retrying every second forever.
        "MAX_RATE_LIMITED": 30,
        # A 429 that says the platform's per-merchant lock is busy (Points: every 429 of its earning endpoints):
        # another call holds that lock, and it is free again within about one call (how long Points holds it is
        # undocumented). The refused earning is due again after 1x-2x this many seconds instead of
        # RATE_LIMIT_DELAY's, and the account's other due earnings go out meanwhile (the account does not pause).
        # May be below MIN_DELAY; a usable Retry-After still wins.
        "LOCK_BUSY_DELAY": 0.1,
        # How many of a record's 429s get that short wait; later ones wait RATE_LIMIT_DELAY, so a lock held for long
        # (another system sending with the same key) does not use up MAX_RATE_LIMITED within seconds. An earning
        # whose outcome is unknown (resent after a timeout) always waits RATE_LIMIT_DELAY: the platform may still be
        # working on its earlier call.
        "LOCK_BUSY_RETRIES": 10,
    },
    # A drain job keeps one call in flight for each of up to ACCOUNTS_PER_PROCESS accounts at once (its own, and
    # those waiting longest for a drain); it stops after MAX_SECONDS (and enqueues its accounts' successors) so that
    # workers rotate, and it waits in place only for retries due within MAX_WAIT seconds. When every slot is taken
    # and another account waits, an account gives its slot up after TURN_SECONDS (docs/capacity.md).
    # COOLDOWN_AFTER_TIMEOUT: after a call that got no answer in time, the platform may still be working on it
    # (Points holds its per-merchant lock meanwhile and answers any other call with 429). The account then makes no
    # call for this many seconds, and its first call after them is the resend of the timed-out record itself (same
    # order number): "duplicate" means the timed-out call was awarded, 429 means the platform is still working on it
    # (wait, ask again: still first), anything else settles it; only then do the account's other records go.
    "DRAIN": {
        "MAX_SECONDS": 60.0,
        "MAX_WAIT": 5.0,
        "COOLDOWN_AFTER_TIMEOUT": 2.0,
        "ACCOUNTS_PER_PROCESS": 32,
        "TURN_SECONDS": 10.0,
    },
    # What the shop's adapter may hand over for one order. An order over a limit is recorded ``rejected`` with the
    # reason at checkout (its oversized part not stored); checkout itself never fails.
    "LIMITS": {
        "MAX_LINES": 5000,  # order lines (a wholesale order of 3,000 lines is still accepted)
        "MAX_METADATA_BYTES": 32768,  # the adapter's metadata, as compact JSON (UTF-8)
    },
    # EarningWorker runs the due/lease sweep this often (seconds); 0 turns it off (then cron points_reconcile).
    "SWEEP_INTERVAL": 5.0,
    # Prefix of every Redis key the app writes (locks, drain flags).
    "REDIS_PREFIX": "points-earn",
    # Largest webhook body accepted (bytes); a bigger one (with the right secret) is answered 413 and not stored.
    # A Points delivery is one order, a few KB; keep this below Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
    "WEBHOOK_MAX_BYTES": 1_048_576,
    # Hold every account's earnings until the return window has closed, e.g. {"DAYS": 14} (also HOURS, MINUTES;
    # "AFTER": "delivery" starts the clock at the shop's order_delivered signal). An account's own "HOLD" wins;
    # the adapter's get_send_after(order) wins over both. None: send at once.
    "HOLD": None,
    # More platforms, without touching the package: name -> dotted path of a BaseBackend subclass, e.g.
    # {"acme": "shop.loyalty.AcmeBackend"}; an account then says "PROVIDER": "acme" (docs/adding-platforms.md).
    "PLATFORMS": {},
    # Prometheus metrics (docs/operations.md), when prometheus_client is installed (pip install
    # "django-points-earn[metrics]"); without it every metric is a no-op. ENABLED: False turns them off anyway.
    # TOKEN: a bearer token that lets a scraper read our metrics/ view without logging in (compared in constant
    # time, never logged); empty: only a signed-in user with the view_earningrecord permission may.
    "METRICS": {"ENABLED": True, "TOKEN": ""},
}


def _registry() -> Any:
    """The platform registry (it imports nothing of the package, so this is no circle)."""
    from . import platforms

    return platforms


def provider_names() -> tuple[str, ...]:
    """Every platform an account may name as PROVIDER (built in, registered, or in PLATFORMS)."""
    return tuple(_registry().platforms())


def provider_defaults(provider: str) -> dict[str, Any]:
    backend = _registry().platform(provider)
    return dict(backend.defaults) if backend is not None else {}


def required_keys(provider: str) -> tuple[str, ...]:
    backend = _registry().platform(provider)
    return tuple(backend.required_keys) if backend is not None else ()


def secret_keys() -> tuple[str, ...]:
    """The keys that are secrets on any platform: kept out of ``options`` and scrubbed from every stored text,
    whichever account carries them (a secret under a misplaced key is still a secret)."""
    registry = _registry()
    try:
        backends = list(registry.platforms().values())
    except ImproperlyConfigured:  # a PLATFORMS entry that cannot be imported: the built-in ones still count
        backends = [import_string(path) for path in registry.built_in().values()]
    keys: dict[str, None] = {}
    for backend in backends:
        keys.update(dict.fromkeys(backend.secret_keys))
    return tuple(keys)


def __getattr__(name: str) -> Any:
    """The former module constants, now asked of the registry (kept for code written against them)."""
    if name == "PROVIDERS":
        return provider_names()
    if name == "PROVIDER_DEFAULTS":
        return {p: provider_defaults(p) for p in provider_names()}
    if name == "REQUIRED_KEYS":
        return {p: required_keys(p) for p in provider_names()}
    if name == "SECRET_KEYS":
        return secret_keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setting_path(*keys: str) -> str:
    return "POINTS_EARN" + "".join(f'["{k}"]' for k in keys)


@dataclass(frozen=True)
class AccountConfig:
    """One configured platform account (a merchant key, a branch)."""

    name: str
    provider: str
    base_url: str
    timeout: tuple[float, float]
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def secret(self, key: str) -> str:
        value = self.secrets.get(key)
        if not value:
            raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', self.name, key)} is missing or empty.")
        return value

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class Settings:
    raw: dict[str, Any] = field(repr=False)

    def __getattr__(self, name: str) -> Any:
        key = name.upper()
        if key in DEFAULTS:
            value = self.raw.get(key, DEFAULTS[key])
            if isinstance(DEFAULTS[key], dict) and key != "ACCOUNTS":
                return {**DEFAULTS[key], **(value or {})}
            return value
        raise AttributeError(name)

    @property
    def account_names(self) -> list[str]:
        return list((self.raw.get("ACCOUNTS") or {}).keys())

    def account(self, name: str) -> AccountConfig:
        return _account(name)


def _raw() -> dict[str, Any]:
    raw = getattr(settings, "POINTS_EARN", None)
    if raw is None:
        raise ImproperlyConfigured("The POINTS_EARN setting is missing: add a dict with ACCOUNTS and ORDER_ADAPTER.")
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"POINTS_EARN must be a dict, not {type(raw).__name__}.")
    return raw


@cache
def get_settings() -> Settings:
    return Settings(_raw())


@cache
def _account(name: str) -> AccountConfig:
    accounts = get_settings().raw.get("ACCOUNTS") or {}
    if name not in accounts:
        raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', name)} is not configured.")
    conf = accounts[name]
    if not isinstance(conf, dict):
        raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', name)} must be a dict.")
    provider = conf.get("PROVIDER")
    if not provider:
        raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', name, 'PROVIDER')} is missing.")
    providers = provider_names()
    if provider not in providers:
        raise ImproperlyConfigured(
            f"{setting_path('ACCOUNTS', name, 'PROVIDER')} is {provider!r}; expected one of {', '.join(providers)}."
        )
    merged = {**provider_defaults(provider), **conf}
    base_url = (merged.get("BASE_URL") or "").rstrip("/")
    if not base_url:
        raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', name, 'BASE_URL')} is missing.")
    timeout = merged.get("HTTP_TIMEOUT", get_settings().http_timeout)
    if isinstance(timeout, int | float):
        timeout = (float(timeout), float(timeout))
    secret = secret_keys()
    secrets = {k: merged[k] for k in secret if merged.get(k)}
    options = {k: v for k, v in merged.items() if k not in secret}
    return AccountConfig(
        name=name,
        provider=provider,
        base_url=base_url,
        timeout=(float(timeout[0]), float(timeout[1])),
        options=options,
        secrets=secrets,
    )


def clear_cache() -> None:
    get_settings.cache_clear()
    all_secret_values.cache_clear()
    _account.cache_clear()
    _registry().clear_cache()


@receiver(setting_changed)
def _reset_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in ("POINTS_EARN", "RQ_QUEUES"):
        clear_cache()


@cache
def all_secret_values() -> tuple[str, ...]:
    """Every secret configured, so logs and messages can be scrubbed of them (defence in depth). Read once per
    settings (every call's answer is scrubbed: with hundreds of accounts, rebuilding this each time would cost more
    than the call)."""
    try:
        accounts = _raw().get("ACCOUNTS") or {}
    except ImproperlyConfigured:
        return []
    values = []
    keys = secret_keys()
    for conf in accounts.values():
        if isinstance(conf, dict):
            values.extend(str(conf[k]) for k in keys if conf.get(k))
    token = (_raw().get("METRICS") or {}).get("TOKEN")
    if token:
        values.append(str(token))
    return tuple(values)


# -- holds (earnings kept back until the return window closes: holds.py) ------------------------------------------
UNITS = {"DAYS": "days", "HOURS": "hours", "MINUTES": "minutes"}
AFTER = ("payment", "delivery")


@dataclass(frozen=True)
class Hold:
    """An account's hold: how long, and from when (payment, or the order's delivery)."""

    length: timedelta
    after_delivery: bool = False


def parse_hold(value: Any, where: str) -> Hold | None:
    """A HOLD setting as a :class:`Hold` (``None``/``{}``: no hold). Raises ``ImproperlyConfigured`` naming the key."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f'{where} must be a dict such as {{"DAYS": 14}}, not {type(value).__name__}.')
    unknown = set(value) - set(UNITS) - {"AFTER"}
    if unknown:
        raise ImproperlyConfigured(f"{where} has unknown keys {sorted(unknown)}; use DAYS, HOURS, MINUTES, AFTER.")
    amounts = {}
    for key, unit in UNITS.items():
        amount = value.get(key, 0)
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount <= 366 * 24 * 60:
            raise ImproperlyConfigured(f'{where}["{key}"] must be a number of {unit} from 0 up, not {amount!r}.')
        amounts[unit] = amount
    after = value.get("AFTER", "payment")
    if after not in AFTER:
        raise ImproperlyConfigured(f'{where}["AFTER"] must be "payment" or "delivery", not {after!r}.')
    length = timedelta(**amounts)
    if length <= timedelta(0) and after == "payment":
        return None
    return Hold(length, after_delivery=after == "delivery")


def account_hold(account: str) -> Hold | None:
    """The hold of one account: its own ``HOLD``, else ``POINTS_EARN["HOLD"]``."""
    config = get_settings().account(account)
    if "HOLD" in config.options:
        return parse_hold(config.options["HOLD"], setting_path("ACCOUNTS", account, "HOLD"))
    return parse_hold(get_settings().hold, setting_path("HOLD"))
