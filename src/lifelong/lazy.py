"""Lazy attributes of a package (PEP 562).

A package's public name is imported from the module that defines it the first time it is used, so
``import lifelong`` costs nothing and the command line's light commands (``lifelong --help``, ``runs``,
``show``, ``compare``) start without importing torch. ``from lifelong import train`` and
``lifelong.train`` work as with eager imports; a name is looked up once, then kept on the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, whose public name ``name`` is
    defined in the module ``exports[name]``."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
