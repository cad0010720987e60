"""Plans of the experiments, light to import (the CLI reads their defaults to build its parser)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

SCRATCH = "scratch"  # start name meaning "pretrain a CLIP preset from random weights first"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of the demo, chosen to finish in under 8 minutes on 2 CPU cores."""

    seed: int = 0  # data and training seed
    ids: tuple[int, int, int] = (300, 50, 100)  # identities per split (train, val, test)
    style: str = "shifted"  # SynthPedes style (SynthConfig.styled): shifted, drawn and worded unlike the start's
    # pretraining corpus, so fine-tuning has a domain gap to close; observed: the same cameras and team captioning
    # each image as seen; standard: the start's own look, little to learn
    epochs: int = 4  # fine-tuning epochs of ITC, CPCL and the oracle
    start: str = "synthpedes-small"  # the checkpoint fine-tuned (a shipped name or a path), or "scratch"
    pretrain_pairs: int = 12000  # pairs of the pretraining corpus (start "scratch" only)
    pretrain_epochs: int = 2  # pretraining epochs (start "scratch" only)
    preset: str = "small"  # CLIP preset pretrained from random weights (start "scratch" only)

    @property
    def scratch(self) -> bool:
        return self.start == SCRATCH

    def reusable_part(self) -> dict:
        """What the generated data (and a pretrained start) depend on, as JSON reads it back."""
        plan = asdict(self)
        plan.pop("epochs")
        if not self.scratch:
            for key in ("pretrain_pairs", "pretrain_epochs", "preset"):
                plan.pop(key)
        return json.loads(json.dumps(plan))
