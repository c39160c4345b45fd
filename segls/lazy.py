"""Package attributes loaded on first use (PEP 562), so that a light submodule imports light.

Importing ``segls.data.names`` runs ``segls/data/__init__.py`` first; if that imported the
package's modules, the config (which imports the allowed values from each package's
``names`` module) would pull in torch, albumentations and smp before it could report a
misspelled key. Such packages declare where each public name lives instead.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], sources: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for `package`, whose public names load on first use.

    `sources` maps each public name to the submodule that defines it (``"read_image":
    "readers"``); `namespace` is the package's ``globals()``, where a loaded name is kept.
    Other names load as submodules, as after an eager import of the package.
    """

    def __getattr__(name: str) -> Any:
        if name in sources:
            value = getattr(importlib.import_module(f"{package}.{sources[name]}"), name)
        elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *sources})

    return __getattr__, __dir__
