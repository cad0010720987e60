"""Evaluate a model on one split: every caption queries the split's whole image gallery."""

from __future__ import annotations

import torch

from cpcl.clustering.rerank import RerankConfig
from cpcl.data.records import SplitData
from cpcl.data.transforms import ImageTransformConfig
from cpcl.evaluation.features import extract_image_features, extract_text_features
from cpcl.evaluation.metrics import retrieval_metrics
from cpcl.model.clip import CLIP
from cpcl.model.inference import LoadedModel
from cpcl.model.tokenizer import default_tokenizer
from cpcl.utils.errors import DataError
from cpcl.utils.preprocessing import Preprocessing


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


def evaluate_split(
    model: CLIP, split: SplitData, tokens: torch.Tensor, transform: ImageTransformConfig | Preprocessing,
    batch_size: int, workers: int, device: torch.device, dtype: torch.dtype | None, name: str = "test",
    rerank: RerankConfig | None = None,
) -> dict[str, float]:
    """R1/R5/R10/mAP/mINP (%) of text-to-image retrieval on `split`; tokens: [num captions, L]; with
    `rerank`, the gallery ranked by the k-reciprocal re-ranked distance (docs/method.md, Evaluation)."""
    query_ids, gallery_ids = person_ids(split, name)
    paths = [image.path for image in split.images]
    image_feats = extract_image_features(model, paths, transform, batch_size, workers, device, dtype,
                                         desc=f"{name} images")
    text_feats = extract_text_features(model, tokens, batch_size, device, dtype, desc=f"{name} captions")
    return retrieval_metrics(text_feats, image_feats, query_ids, gallery_ids, rerank=rerank)


def evaluate_loaded(loaded: LoadedModel, split: SplitData, batch_size: int, workers: int, name: str = "test",
                    rerank: RerankConfig | None = None) -> dict[str, float]:
    """`evaluate_split` for a checkpoint loaded for inference: its captions tokenized at the model's context
    length, its images through the preprocessing the checkpoint records."""
    tokens = default_tokenizer().tokenize([c.text for c in split.captions], loaded.model.config.text.context_length)
    return evaluate_split(loaded.model, split, tokens, loaded.preprocessing, batch_size, workers, loaded.device,
                          loaded.dtype, name=name, rerank=rerank)
