"""Domain registry. A new domain is one module here plus one entry in `_DOMAIN_CLASSES`."""
from __future__ import annotations

from importlib import import_module

from .base import Domain

# name -> "module:Class", imported on first use
_DOMAIN_CLASSES = {
    "salp": "salp:SalpDomain",
    "overcooked": "overcooked:OvercookedDomain",
    "warehouse": "warehouse:WarehouseDomain",
}
_LOADED: dict[str, Domain] = {}


def get_domain(name: str) -> Domain:
    if name not in _DOMAIN_CLASSES:
        raise KeyError(f"unknown domain {name!r}; domains: {', '.join(domain_names())}")
    if name not in _LOADED:
        module, cls = _DOMAIN_CLASSES[name].split(":")
        _LOADED[name] = getattr(import_module(f"{__name__}.{module}"), cls)()
    return _LOADED[name]


def domain_names() -> tuple[str, ...]:
    return tuple(sorted(_DOMAIN_CLASSES))
