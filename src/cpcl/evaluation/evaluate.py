"""Evaluate a model on one split: every caption queries the split's whole image gallery."""

from __future__ import annotations

import torch

from cpcl.clustering.rerank import RerankConfig
from cpcl.data.records import SplitData
from cpcl.evaluation.features import extract_image_features, extract_text_features
from cpcl.evaluation.metrics import retrieval_metrics
from cpcl.model.inference import LoadedModel
from cpcl.utils.errors import DataError


def person_ids(split: SplitData, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(query ids [num captions], gallery ids [num images]) of an evaluation split."""
    gallery = [image.person_id for image in split.images]
    if not gallery:
        raise DataError(f"the {name} split is empty: nothing to evaluate")
    if any(pid is None for pid in gallery):
        raise DataError(f"the {name} split has no person ids: retrieval metrics need them")
    gallery_ids = torch.tensor(gallery, dtype=torch.long)
    query_ids = gallery_ids[torch.tensor([c.image_id for c in split.captions], dtype=torch.long)]
    return query_ids, gallery_ids


def evaluate_split(loaded: LoadedModel, split: SplitData, batch_size: int, workers: int = 0, name: str = "test",
                   rerank: RerankConfig | None = None) -> dict[str, float]:
    """R1/R5/R10/mAP/mINP (%) of text-to-image retrieval on `split`: its captions tokenized at the model's
    context length, its images through the model's preprocessing; with `rerank`, the gallery ranked by the
    k-reciprocal re-ranked distance (docs/method.md, Evaluation)."""
    query_ids, gallery_ids = person_ids(split, name)
    image_feats = extract_image_features(loaded, [image.path for image in split.images], batch_size, workers,
                                         progress=f"{name} images")
    tokens = loaded.tokenize([caption.text for caption in split.captions])
    text_feats = extract_text_features(loaded, tokens, batch_size, desc=f"{name} captions")
    return retrieval_metrics(text_feats, image_feats, query_ids, gallery_ids, rerank=rerank)
