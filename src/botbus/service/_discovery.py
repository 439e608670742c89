"""Installed services, found through the entry-point group ``botbus.services``.

A package makes its service known to ``botbus up`` and ``botbus service NAME``
by declaring, in its pyproject.toml::

    [project.entry-points."botbus.services"]
    weather = "weather.service:service"

The name is the service's name; the value points at its module-level
:class:`~botbus.service.Service`. botbus itself names no service: the
bundled ones are declared the same way in botbus's own pyproject.toml.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from botbus.auth import Grants
from botbus.errors import ConfigError
from botbus.service._declare import Service

ENTRY_POINT_GROUP = "botbus.services"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_services() -> list[str]:
    """Names of every installed service, sorted."""
    return sorted(_entry_points())


def entry_point_of(name: str) -> str:
    """``module:attribute`` of service ``name``; :class:`ConfigError` if none is installed."""
    found = _entry_points().get(name)
    if found is None:
        known = ", ".join(installed_services()) or "none"
        raise ConfigError(
            f"no service {name!r} is installed (installed: {known}); a package declares one "
            f'under [project.entry-points."{ENTRY_POINT_GROUP}"] in its pyproject.toml'
        )
    return str(found.value)


def load_service(name: str) -> Service:
    """Import installed service ``name`` and return its :class:`Service`."""
    target = entry_point_of(name)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure of a package's import: one line, not a traceback
        raise ConfigError(
            f"service {name!r} ({target}) cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    found = getattr(module, attr or "service", None)
    if not isinstance(found, Service):
        raise ConfigError(f"{target} is not a botbus Service (the entry point of {name!r})")
    if found.name != name:
        raise ConfigError(
            f"the entry point {name!r} points at service {found.name!r}: rename one of them"
        )
    return found


def declared_grants(name: str) -> Grants:
    """The grants service ``name`` declares (:attr:`Service.grants`), if it is installed
    here; else none. :class:`ConfigError` if it is installed but cannot be loaded."""
    if name not in _entry_points():
        return Grants()
    return load_service(name).grants
