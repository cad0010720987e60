"""cpcl: weakly supervised text-based person search (Cross-Modal Prototypical Contrastive Learning).

The Python API (`cpcl.api`), imported on first use so that `import cpcl` stays light:
`cpcl.load(name_or_path)` -> a `Model` with `.encode_images` / `.encode_texts`, `cpcl.open_index(path)` -> an
`Index` with `.search(text, k)`, and `cpcl.train(config, out, **overrides)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Hit", "Index", "Model", "__version__", "load", "open_index", "train"]

if TYPE_CHECKING:
    from cpcl.api import Hit, Index, Model, load, open_index, train


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cpcl import api

        return getattr(api, name)
    raise AttributeError(f"module 'cpcl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
