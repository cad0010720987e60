"""`torch.load(weights_only=True)`, the one way a pickled checkpoint is read, with its refusals in one line.

torch's refusal of a file holding other objects (a class, a function to call: a pickle that would run
code) advises loading it with `weights_only=False`, which runs that code. The line kept here names the
object refused, and nothing else.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cpcl.utils.errors import CheckpointError


def load_weights_only(path: Path) -> Any:
    """The tensors and plain types pickled in `path` (on the CPU); CheckpointError in one line when it holds
    anything else, or is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({named.group(1)})" if named else ""
        raise CheckpointError(f"cannot read {path}: it holds an object other than tensors and plain types{what}; "
                              f"cpcl reads weights only and never runs code from a file") from None
    except Exception as err:  # zip and EOF errors of a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read {path}: {reason}") from None
