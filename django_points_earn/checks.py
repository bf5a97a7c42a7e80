"""System checks (``manage.py check``): configuration mistakes surface at deploy time, with the exact key."""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import DEFAULTS, parse_hold, setting_path

TAG = "points_earn"
# Keys an account of any platform may have, on top of its platform's defaults, required and secret keys.
COMMON_ACCOUNT_KEYS = ("PROVIDER", "BASE_URL", "HTTP_TIMEOUT", "HOLD", "EARNING_RATE")


def account_keys(provider: str) -> set[str]:
    """Every key an account of ``provider`` understands (declared by its backend, so a new setting is known at
    once); an unknown provider knows only the common keys."""
    from .providers import platform

    backend = platform(provider)
    if backend is None:
        return set(COMMON_ACCOUNT_KEYS)
    return {*COMMON_ACCOUNT_KEYS, *backend.secret_keys, *backend.required_keys, *backend.defaults}


def close_match(key: str, known: set[str] | list[str]) -> str | None:
    """The known key ``key`` is most likely a typo of (``APIKEY`` -> ``API_KEY``), if any; case is ignored."""
    by_upper = {k.upper(): k for k in known}
    folded = {k.replace("_", "").upper(): k for k in known}
    if key.replace("_", "").upper() in folded:
        return folded[key.replace("_", "").upper()]
    found = get_close_matches(key.upper(), sorted(by_upper), n=1, cutoff=0.75)
    return by_upper[found[0]] if found else None


@checks.register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    raw = getattr(django_settings, "POINTS_EARN", None)
    if raw is None:
        return [
            checks.Error(
                "POINTS_EARN is not set.", hint="Add a dict with ACCOUNTS and ORDER_ADAPTER.", id="points_earn.E001"
            )
        ]
    if not isinstance(raw, dict):
        return [checks.Error(f"POINTS_EARN must be a dict, not {type(raw).__name__}.", id="points_earn.E001")]
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        guesses = [f'"{k}" (did you mean "{m}"?)' if (m := close_match(k, set(DEFAULTS))) else k for k in unknown]
        errors.append(checks.Warning(f"POINTS_EARN has unknown keys: {', '.join(guesses)}.", id="points_earn.W002"))
    if not apps.is_installed("django_rq"):
        errors.append(
            checks.Error(
                '"django_rq" is not in INSTALLED_APPS: earnings would be recorded but never sent.',
                hint='INSTALLED_APPS = [..., "django_rq", "django_points_earn"] (and RQ_QUEUES for its Redis).',
                id="points_earn.E010",
            )
        )

    accounts = raw.get("ACCOUNTS")
    if not accounts or not isinstance(accounts, dict):
        errors.append(
            checks.Error(
                f"{setting_path('ACCOUNTS')} is missing or empty.",
                hint=_accounts_hint(),
                id="points_earn.E002",
            )
        )
        accounts = {}
    from .providers import platforms

    try:
        platforms()
    except ImproperlyConfigured as exc:  # a PLATFORMS entry: said once, not once per account
        errors.append(checks.Error(str(exc), id="points_earn.E003"))
        accounts = {}
    for name, conf in accounts.items():
        errors += _check_account(name, conf)

    fields = raw.get("ORDER_FIELDS")
    errors += _check_import("ORDER_ADAPTER", raw.get("ORDER_ADAPTER"), required=not fields, id="points_earn.E005")
    if fields is not None:
        errors += _check_order_fields(fields)
    if raw.get("ORDER_PAID_SIGNAL"):
        errors += _check_import("ORDER_PAID_SIGNAL", raw["ORDER_PAID_SIGNAL"], required=False, id="points_earn.E006")

    queue = raw.get("QUEUE", DEFAULTS["QUEUE"])
    rq_queues = getattr(django_settings, "RQ_QUEUES", {}) or {}
    if queue not in rq_queues:
        errors.append(
            checks.Error(
                f"{setting_path('QUEUE')} is {queue!r}, which is not in RQ_QUEUES.",
                hint="Add it to RQ_QUEUES (django-rq) or name an existing queue.",
                id="points_earn.E007",
            )
        )
    errors += _check_timing(raw)
    errors += _check_drain(raw.get("DRAIN", {}))
    errors += _check_hold(raw.get("HOLD"), setting_path("HOLD"))
    return errors


def _check_hold(value: Any, where: str) -> list[checks.CheckMessage]:
    try:
        parse_hold(value, where)
    except ImproperlyConfigured as exc:
        return [
            checks.Error(str(exc), hint='e.g. {"DAYS": 14} or {"DAYS": 7, "AFTER": "delivery"}', id="points_earn.E013")
        ]
    return []


def _accounts_hint() -> str:
    """e.g. {"main": {"PROVIDER": "<first platform>", "<its first required key>": env(...)}}"""
    from .providers import platforms

    try:
        name, backend = next(iter(platforms().items()))
    except (ImproperlyConfigured, StopIteration):
        return "One dict per platform account (docs/settings.md)."
    key = next(iter(backend.required_keys), "BASE_URL")
    return f'e.g. {{"main": {{"PROVIDER": "{name}", "{key}": env("{name.upper()}_{key}")}}}}'


def _check_account(name: str, conf: Any) -> list[checks.CheckMessage]:
    if not isinstance(conf, dict):
        return [checks.Error(f"{setting_path('ACCOUNTS', name)} must be a dict.", id="points_earn.E003")]
    from .providers import platforms

    provider = conf.get("PROVIDER")
    try:
        backends = platforms()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="points_earn.E003")]
    if provider not in backends:
        return [
            checks.Error(
                f"{setting_path('ACCOUNTS', name, 'PROVIDER')} is {provider!r}; expected one of {', '.join(backends)}.",
                id="points_earn.E003",
            )
        ]
    backend = backends[provider]
    errors: list[checks.CheckMessage] = []
    known = account_keys(provider)
    typos = {k: close_match(str(k), known) for k in conf if k not in known}
    for key in backend.required_keys:
        if not conf.get(key):
            typo = next((k for k, match in typos.items() if match == key), None)
            hint = "Read it from the environment; never commit it."
            if typo is not None:
                hint = f'{setting_path("ACCOUNTS", name)} has "{typo}": did you mean "{key}"? ' + hint
            errors.append(
                checks.Error(
                    f"{setting_path('ACCOUNTS', name, key)} is missing or empty.", hint=hint, id="points_earn.E004"
                )
            )
    for key, match in sorted(typos.items(), key=lambda item: str(item[0])):
        guess = f': did you mean "{match}"?' if match else "."
        errors.append(
            checks.Warning(f'{setting_path("ACCOUNTS", name)} has an unknown key "{key}"{guess}', id="points_earn.W003")
        )
    errors += _check_earning_rate(name, conf.get("EARNING_RATE"))
    from .conf import get_settings

    try:
        account = get_settings().account(name)
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="points_earn.E003"))
        return errors
    errors += _check_hold(conf.get("HOLD"), setting_path("ACCOUNTS", name, "HOLD"))
    return errors + list(backend.check(account))


def _check_earning_rate(name: str, value: Any) -> list[checks.CheckMessage]:
    """EARNING_RATE (optional) is what customers are shown as an estimate before the platform answers: a bad one
    is named here rather than showing no number (or a wrong one) on every order page."""
    from .api import parse_earning_rate

    try:
        parse_earning_rate(value, name)
    except ValueError as exc:
        return [checks.Error(str(exc), hint='e.g. "EARNING_RATE": 10 (points per riyal)', id="points_earn.E014")]
    return []


def _check_import(key: str, path: Any, *, required: bool, id: str) -> list[checks.CheckMessage]:
    if not path:
        return (
            [
                checks.Error(
                    f"{setting_path(key)} is missing.", hint="The dotted path of your OrderAdapter subclass.", id=id
                )
            ]
            if required
            else []
        )
    try:
        obj = import_string(path)
    except ImportError as exc:
        return [checks.Error(f"{setting_path(key)} = {path!r} cannot be imported: {exc}", id=id)]
    if key == "ORDER_ADAPTER":
        from .adapters import OrderAdapter

        if not (isinstance(obj, type) and issubclass(obj, OrderAdapter)):
            return [checks.Error(f"{setting_path(key)} = {path!r} is not an OrderAdapter subclass.", id=id)]
    if key == "ORDER_PAID_SIGNAL" and not hasattr(obj, "connect"):
        return [checks.Error(f"{setting_path(key)} = {path!r} is not a signal.", id=id)]
    return []


def _check_order_fields(fields: Any) -> list[checks.CheckMessage]:
    from .adapters import ORDER_FIELD_KEYS, REQUIRED_ORDER_FIELDS

    path = setting_path("ORDER_FIELDS")
    if not isinstance(fields, dict):
        return [checks.Error(f"{path} must be a dict of dotted paths.", id="points_earn.E011")]
    errors: list[checks.CheckMessage] = []
    for key in REQUIRED_ORDER_FIELDS:
        if not fields.get(key):
            errors.append(
                checks.Error(
                    f'{path}["{key}"] is missing: where the order keeps its {key}.',
                    hint='e.g. {"number": "number", "phone": "customer.phone", "total": "total"}',
                    id="points_earn.E011",
                )
            )
    for key, value in fields.items():
        if key not in ORDER_FIELD_KEYS:
            match = close_match(str(key), set(ORDER_FIELD_KEYS))
            guess = f': did you mean "{match}"?' if match else f"; known: {', '.join(ORDER_FIELD_KEYS)}."
            errors.append(checks.Warning(f'{path} has an unknown key "{key}"{guess}', id="points_earn.W004"))
        elif value is not None and (not isinstance(value, str) or not all(value.split("."))):
            errors.append(
                checks.Error(
                    f'{path}["{key}"] = {value!r} is not a dotted path like "customer.phone".', id="points_earn.E011"
                )
            )
    return errors


def _check_timing(raw: dict[str, Any]) -> list[checks.CheckMessage]:
    timeout = raw.get("HTTP_TIMEOUT", DEFAULTS["HTTP_TIMEOUT"])
    try:
        [float(t) for t in timeout] if isinstance(timeout, tuple | list) else float(timeout)  # numbers?
    except (TypeError, ValueError):
        return [
            checks.Error(f"{setting_path('HTTP_TIMEOUT')} must be seconds or (connect, read).", id="points_earn.E008")
        ]
    lease = raw.get("LEASE_SECONDS", DEFAULTS["LEASE_SECONDS"])
    # A live worker renews its leases every quarter lease, however long the call: the lease need not outlast a
    # call, only a few missed renewals (a busy database, a pause in the worker).
    if float(lease) < MIN_LEASE_SECONDS:
        return [
            checks.Error(
                f"{setting_path('LEASE_SECONDS')} ({lease}) must be at least {MIN_LEASE_SECONDS}s: a worker renews "
                "its claims every quarter lease, and a shorter one could lapse while its call is still in flight.",
                id="points_earn.E008",
            )
        ]
    return []


MIN_LEASE_SECONDS = 4


def _check_drain(drain: Any) -> list[checks.CheckMessage]:
    """How many accounts one worker process serves at once, and for how long one keeps its slot when others wait."""
    if not isinstance(drain, dict):
        return [checks.Error(f"{setting_path('DRAIN')} must be a dict.", id="points_earn.E015")]
    errors = []
    slots = drain.get("ACCOUNTS_PER_PROCESS", DEFAULTS["DRAIN"]["ACCOUNTS_PER_PROCESS"])
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        errors.append(
            checks.Error(
                f'{setting_path("DRAIN")}["ACCOUNTS_PER_PROCESS"] = {slots!r} must be a whole number from 1 up.',
                hint="Each account served at once costs a call thread; 32 suits a 150 ms platform (docs/capacity.md).",
                id="points_earn.E015",
            )
        )
    turn = drain.get("TURN_SECONDS", DEFAULTS["DRAIN"]["TURN_SECONDS"])
    try:
        turn_ok = float(turn) > 0 and not isinstance(turn, bool)
    except (TypeError, ValueError):
        turn_ok = False
    if not turn_ok:
        errors.append(
            checks.Error(
                f'{setting_path("DRAIN")}["TURN_SECONDS"] = {turn!r} must be a number of seconds above 0.',
                id="points_earn.E015",
            )
        )
    return errors
