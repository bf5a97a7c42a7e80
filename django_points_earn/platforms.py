"""The platform registry: the one list of platforms. Everything else asks it (docs/adding-platforms.md).

It imports nothing of the package: backends are named by dotted path and imported when first asked, so the
settings layer (``conf``) can ask it while the backends themselves build on ``conf``.

The built-in platforms are below; a shop (or a test) adds one without touching the package, either in settings::

    POINTS_EARN = {..., "PLATFORMS": {"acme": "shop.loyalty.AcmeBackend"}}

or from its ``AppConfig.ready()``::

    from django_points_earn.platforms import register
    register("acme", AcmeBackend)

An account then says ``"PROVIDER": "acme"``. A platform is a :class:`~.base.BaseBackend` subclass that declares
its settings (``defaults``, ``required_keys``, ``secret_keys``), its ``label``, ``supports_refunds``, its
``webhook_view`` and ``webhook_parser`` (if any: the parser reads a delivery into neutral events), its ``check()``
and its warm-up hooks.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# A backend class (a django_points_earn.providers.base.BaseBackend subclass); named loosely here so that this
# module imports nothing of the package.
BaseBackend = Any

# The built-in platforms are declared beside their code (providers/__init__.py), read by dotted path.
BUILT_IN_PATH = "django_points_earn.providers.BUILT_IN"
_registered: dict[str, type[BaseBackend] | str] = {}
_resolved: dict[str, type[BaseBackend]] | None = None


def built_in() -> dict[str, str]:
    """Name -> dotted path of the platforms that come with the package."""
    return import_string(BUILT_IN_PATH)


def register(name: str, backend: type[BaseBackend] | str) -> None:
    """Add (or replace) the platform ``name``: a BaseBackend subclass or its dotted path."""
    global _resolved
    _registered[name] = backend
    _resolved = None


def unregister(name: str) -> None:
    """Remove a platform added with :func:`register` (tests)."""
    global _resolved
    _registered.pop(name, None)
    _resolved = None


def clear_cache() -> None:
    """Forget the resolved classes (called by ``conf.clear_cache`` when settings change)."""
    global _resolved
    _resolved = None


def _from_settings() -> dict[str, type[BaseBackend] | str]:
    from django.conf import settings

    raw = getattr(settings, "POINTS_EARN", None)
    platforms = raw.get("PLATFORMS") if isinstance(raw, dict) else None
    if platforms in (None, {}):
        return {}
    if not isinstance(platforms, dict):
        raise ImproperlyConfigured('POINTS_EARN["PLATFORMS"] must be a dict of name -> dotted path of a backend.')
    return platforms


def _resolve(name: str, backend: type[BaseBackend] | str, where: str) -> type[BaseBackend]:
    if isinstance(backend, str):
        try:
            backend = import_string(backend)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{where} = {backend!r} cannot be imported: {exc}") from exc
    if not (isinstance(backend, type) and _is_backend(backend)):
        raise ImproperlyConfigured(f"{where} is not a BaseBackend subclass.")
    if backend.provider != name:
        raise ImproperlyConfigured(f"{where}: its class says provider = {backend.provider!r}, not {name!r}.")
    return backend


def _is_backend(cls: type) -> bool:
    """A subclass of providers.base.BaseBackend, told by its class hierarchy's names (no import of it here)."""
    return any(
        klass.__name__ == "BaseBackend" and klass.__module__ == "django_points_earn.providers.base"
        for klass in cls.__mro__
    )


def platforms() -> dict[str, type[BaseBackend]]:
    """Every platform by name: built in, then ``register()``-ed, then ``POINTS_EARN["PLATFORMS"]`` (last wins).

    Raises ImproperlyConfigured with the exact key if one cannot be imported."""
    global _resolved
    if _resolved is None:
        found: dict[str, type[BaseBackend]] = {}
        for name, backend in built_in().items():
            found[name] = _resolve(name, backend, f"platform {name!r}")
        for name, backend in _registered.items():
            found[name] = _resolve(name, backend, f"register({name!r})")
        for name, backend in _from_settings().items():
            found[name] = _resolve(name, backend, f'POINTS_EARN["PLATFORMS"]["{name}"]')
        _resolved = found
    return _resolved


def platform(name: str) -> type[BaseBackend] | None:
    """The backend class of platform ``name``, or None if no such platform is registered."""
    return platforms().get(name)


def label(name: str) -> str:
    """A platform's human name (its product name, not translated); an unknown one is shown as it is stored."""
    try:
        backend = platform(name)
    except ImproperlyConfigured:
        backend = None
    return backend.label if backend is not None and backend.label else name


def get_backend(account: Any) -> BaseBackend:
    backend = platform(account.provider)
    if backend is None:
        raise ImproperlyConfigured(f"No backend for provider {account.provider!r} (account {account.name!r}).")
    return backend(account)
