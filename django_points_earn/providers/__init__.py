"""Platform clients over :mod:`.base`: ``points`` in one module, ``fabric`` in :mod:`.fabric` and its ``fabric_*``
modules.

The registry of platforms is :mod:`django_points_earn.platforms`; its functions are re-exported here, where the
package's own code and shops have always found ``get_backend``.
"""

from __future__ import annotations

from ..platforms import clear_cache, get_backend, label, platform, platforms, register, unregister

# The platforms that come with the package: name -> dotted path of its backend class.
BUILT_IN: dict[str, str] = {
    "points": "django_points_earn.providers.points.PointsBackend",
    "fabric": "django_points_earn.providers.fabric.FabricBackend",
}

__all__ = ["BUILT_IN", "clear_cache", "get_backend", "label", "platform", "platforms", "register", "unregister"]
