"""What every registry shares: import paths resolved when used, the unknown-name message, plugins.

Registries are plain dicts of light entries, so ``pdsearch.config`` validates names
without importing torch, Ray or Optuna (Ray Tune's ``SEARCH_ALG_IMPORT`` does the same);
an entry names its heavy part by import path (``"pdsearch.data.loaders:digits"``).
A plugin module (``plugins: [my_package.pruning]`` in the config) adds entries from
outside pdsearch: it is imported before the config is validated, and again in every
trial and Ray task, so workers know the same names as the driver.
"""
from __future__ import annotations

import difflib
import functools
import importlib
from typing import Any, Iterable

from pdsearch.errors import PdsearchError


def did_you_mean(name: Any, names: Iterable[str]) -> str:
    """' (did you mean a or b?)' for the close matches of ``name``, '' if there are none."""
    close = difflib.get_close_matches(str(name), [str(n) for n in names], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def unknown(what: str, name: Any, names: Iterable[str]) -> str:
    """The message for a name a registry lacks: close matches, and the names it has."""
    names = [str(n) for n in names]
    return f"unknown {what} {name!r}{did_you_mean(name, names)}: use one of {', '.join(names)}"


def resolve(path: str) -> Any:
    """The object an import path ``package.module:attribute[.attribute]`` names."""
    module, _, attributes = path.partition(":")
    try:
        return functools.reduce(getattr, attributes.split(".") if attributes else [], importlib.import_module(module))
    except (ImportError, AttributeError) as exc:
        raise PdsearchError(f"cannot import {path!r}: {exc}") from None


def load_plugins(modules: Iterable[str]) -> None:
    """Import the plugin modules that register entries (idempotent: Python imports each once)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PdsearchError(f"plugins: cannot import {module!r}: {exc}") from None
