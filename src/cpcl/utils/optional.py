"""Optional dependencies: imported when a feature needs them, with one line saying how to install them."""

from __future__ import annotations

import importlib
from types import ModuleType

from cpcl.utils.errors import CpclError


def require(module: str, package: str, purpose: str, extra: str) -> ModuleType:
    """`module`, imported; CpclError naming `package` and the cpcl extra `extra` that installs it when missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CpclError(f"{purpose} needs the {package} package ({err}): pip install 'cpcl[{extra}]'") from None
