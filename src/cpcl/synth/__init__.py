"""SynthPedes: a synthetic text-based person search benchmark drawn with PIL.

Identities (`attributes`) are rendered under varying views, poses, backgrounds, occluders and
cameras (`scene`, `figure`, `props`, `render`) and described by independent, partial,
slightly noisy captions (`captions`, `wording`). `writer` writes the CUHK-PEDES layout and a
web-style pretraining corpus; `preview` draws a contact sheet.

The public names below are loaded on first use, so importing `cpcl.synth.config` (as the CLI
does to show defaults) does not pull in numpy and PIL.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Identity": "attributes", "diff_groups": "attributes", "near_duplicate": "attributes",
    "sample_identity": "attributes", "Caption": "captions", "write_alt_text": "captions",
    "write_caption": "captions", "write_captions": "captions", "SynthConfig": "config",
    "render_preview_grid": "preview", "render_image": "render", "Scene": "scene",
    "sample_scene": "scene", "plan_benchmark": "writer", "plan_pretrain": "writer",
    "write_pretrain_corpus": "writer", "write_synthpedes": "writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cpcl.synth' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cpcl.synth.{_EXPORTS[name]}"), name)
