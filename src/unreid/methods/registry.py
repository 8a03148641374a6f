"""Methods by name: a tiny decorator registry (timm ``_registry.py`` style).

``@register_method("cluster_contrast")`` on a :class:`Method` subclass makes it
available as ``method.name: cluster_contrast``. A method that is not yet
registered is looked up as the module ``unreid.methods.<name>``, so adding a
method is adding one file: no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from unreid.config import Config
from unreid.errors import ConfigError
from unreid.methods.base import Method

__all__ = [
    "available_methods",
    "build_method",
    "get_method",
    "model_feature",
    "register_method",
]

_REGISTRY: dict[str, type[Method]] = {}
# Modules of the package that hold shared parts, not a method.
_NOT_METHODS = {"base", "common", "heads", "registry"}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass under ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) needs a Method subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_methods() -> list[str]:
    """Registered names plus the method files shipped in ``unreid/methods``."""
    # this file's folder is the package's: no need to import the package (a cycle)
    shipped = pkgutil.iter_modules([str(Path(__file__).parent)])
    files = {m.name for m in shipped if m.name not in _NOT_METHODS}
    return sorted(files | set(_REGISTRY))


def get_method(name: str) -> type[Method]:
    """The class registered as ``name`` (importing ``unreid.methods.<name>`` if needed)."""
    if name not in _REGISTRY and name.isidentifier() and name not in _NOT_METHODS:
        try:
            importlib.import_module(f"unreid.methods.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"unreid.methods.{name}":
                raise  # the method's own import failed: show that, not "unknown"
    if name not in _REGISTRY:
        raise ConfigError(
            f"method.name={name!r} is unknown: use one of {', '.join(available_methods())}"
        )
    return _REGISTRY[name]


def build_method(cfg: Config) -> Method:
    """An instance of the method ``cfg.method.name`` for this run."""
    return get_method(str(cfg.method.name))(cfg)


def model_feature(cfg: Config) -> str:
    """``model.feature``, with ``auto`` resolved to what the configured method declares."""
    feature = str(cfg.model.feature)
    return get_method(str(cfg.method.name)).feature if feature == "auto" else feature
