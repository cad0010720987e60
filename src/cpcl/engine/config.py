"""The training run config (docs/method.md: every default and every ablation switch is a field).

`cpcl train -c FILE key=value ...` resolves defaults <- YAML (with `base:`) <- overrides into a
frozen `TrainConfig`, validated once and written to `RUN_DIR/config.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cpcl.clustering import ClusterConfig
from cpcl.clustering.rerank import RerankConfig
from cpcl.clustering.select import SelectionGrid
from cpcl.data.transforms import ImageTransformConfig
from cpcl.model.architecture import ArchitectureHints
from cpcl.utils.config import Range, check_ranges
from cpcl.utils.errors import ConfigError

Method = Literal["zero_shot", "itc", "cpcl", "oracle"]


@dataclass(frozen=True)
class ModelSection:
    init: str = "openai:ViT-B-16"  # starting weights: a checkpoint path (OpenAI .pt, HF or open_clip dir, cpcl .pt), a name (openai:NAME, hf:ORG/NAME: downloaded; synthpedes-small: shipped) or "preset:NAME" (random init)
    image_size: tuple[int, int] = (384, 128)  # input (H, W); positional embedding resized to (H/patch, W/patch)
    context_length: int = 77  # text tokens (SOT + up to L-2 BPE tokens + EOT)
    grad_checkpointing: bool = False  # recompute each residual block's activations in backward (both towers): less memory, one more forward
    act: str | None = None  # MLP activation of weights that do not record it: quick_gelu | gelu | gelu_tanh (None: guess, warned)
    head_width: int | None = None  # channels per attention head of weights that do not record it (None: guess 64, warned)

    def __post_init__(self) -> None:
        check_ranges(self, "model", {"image_size": Range(1), "context_length": Range(3)})
        self.architecture()  # checks act and head_width

    def architecture(self) -> ArchitectureHints:
        """What this section states about the architecture of `init`'s weights."""
        return ArchitectureHints(self.act, self.head_width)


@dataclass(frozen=True)
class DataSection:
    dataset: str = "cuhk-pedes"  # training data format, a key of cpcl.data.readers.DATASETS
    root: str = "data"  # folder holding the dataset folder
    skip_bad_images: bool = False  # drop missing/unreadable images (and captions) instead of failing
    strict: bool = False  # refuse an image in two splits or under two person ids (default: a loud warning)
    allow_outside_root: bool = False  # read images that resolve outside the dataset's image folder (warned)
    workers: int = 2  # DataLoader worker processes

    def __post_init__(self) -> None:
        check_ranges(self, "data", {"workers": Range(0)})


@dataclass(frozen=True)
class EvalSection:
    dataset: str | None = None  # evaluation data format (None: the training data's)
    root: str | None = None  # evaluation data root (None: the training data's)
    batch_size: int = 256  # feature extraction batch
    every: int = 1  # evaluate on val every N epochs (the last epoch always)
    rerank: bool = False  # rank every evaluation's gallery by k-reciprocal re-ranking (docs/method.md, Evaluation)
    rerank_options: RerankConfig = field(default_factory=RerankConfig)  # its k1, k2, lambda_value (with rerank)

    def __post_init__(self) -> None:
        check_ranges(self, "eval", {"batch_size": Range(1), "every": Range(1)})


@dataclass(frozen=True)
class OptimSection:
    epochs: int = 60  # training epochs
    batch_size: int = 64  # pairs per step: the global batch, split evenly over torchrun's processes
    lr: float = 1e-5  # Adam learning rate after warm-up (for the global batch; never rescaled by world size)
    weight_decay: float = 4e-5  # Adam weight decay
    warmup_epochs: int = 5  # linear warm-up epochs, from warmup_start_factor * lr
    warmup_start_factor: float = 0.1  # lr multiplier at the first step
    min_lr_factor: float = 0.0  # cosine decay ends at min_lr_factor * lr
    grad_clip: float = 0.0  # clip the gradient norm to this (0: off)

    def __post_init__(self) -> None:
        check_ranges(self, "optim", {
            "epochs": Range(0), "batch_size": Range(2), "lr": Range(0, low_open=True), "weight_decay": Range(0),
            "warmup_epochs": Range(0), "warmup_start_factor": Range(0, 1), "min_lr_factor": Range(0, 1),
            "grad_clip": Range(0)})


@dataclass(frozen=True)
class CpclSection:
    pcm: Literal["single", "cross", "both"] = "both"  # PCM terms: single-modal, cross-modal, or both
    tau: float = 0.05  # ClusterNCE temperature
    memory_update: Literal["on", "off"] = "on"  # momentum-update prototypes after each step (off: fixed per epoch)
    momentum: float = 0.2  # mu of c <- mu * c + (1 - mu) * f
    oplm: Literal["off", "one_stage", "two_stage"] = "two_stage"  # outlier pseudo-label mining
    theta: float = 0.5  # OPLM similarity threshold
    icpm_positives: Literal["image", "text", "either", "both"] = "image"  # which pseudo labels make ICPM positives
    icpm_scale: float = 50.0  # ICPM logit scale s (temperature 1/s)
    icpm_eps: float = 1e-8  # ICPM: epsilon inside log(q)
    pcm_weight: float = 1.0  # weight of the PCM terms
    icpm_weight: float = 1.0  # lambda, weight of ICPM
    itc_weight: float = 0.0  # weight of an extra instance InfoNCE term (0: docs/method.md's loss)
    itc_warmup_epochs: int = 0  # epochs of plain ITC before the first clustering (weak starts)
    weight_by_val_f: bool = False  # scale each cluster term by the val pairwise F of the clustering its labels
    # come from (needs cluster_select.on=val): labels that find people on val pull harder
    sampler: Literal["random", "pk"] = "random"  # random pairs, or P pseudo-identities x K pairs
    pk_instances: int = 4  # K of the pk sampler

    def __post_init__(self) -> None:
        check_ranges(self, "cpcl", {
            "tau": Range(0, low_open=True), "momentum": Range(0, 1), "theta": Range(-1, 1),
            "icpm_scale": Range(0, low_open=True), "icpm_eps": Range(0, 1, low_open=True, high_open=True),
            "pcm_weight": Range(0), "icpm_weight": Range(0), "itc_weight": Range(0), "itc_warmup_epochs": Range(0),
            "pk_instances": Range(1)})


@dataclass(frozen=True)
class LabelsSection:
    mode: Literal["cpcl", "image_centred", "pair_fused"] = "cpcl"  # cpcl: steps 2-3 | image_centred | pair_fused (docs/method.md, step 3b)
    fused_image_weight: float = 1.0  # pair_fused: weight of the image-image similarity
    fused_text_weight: float = 1.0  # pair_fused: weight of the text-text similarity
    fused_cross_weight: float = 0.5  # pair_fused: weight of the cross-modal similarities, at most the other two
    refine: Literal["off", "split", "merge", "both"] = "off"  # refine the image labels by the caption clusters
    split_agreement: float = 0.7  # split a cluster whose largest caption cluster holds < this share of its captions
    split_min_pairs: int = 4  # pairs a caption cluster needs in a split cluster to become a part of it
    merge_share: float = 0.8  # merge clusters each with >= this share of pairs in one caption cluster (> 0.5)
    merge_min_similarity: float = 0.8  # ... and whose mean image features have at least this cosine (tune on val)
    panel: bool = False  # also make every variant's labels each epoch, for oracle_panel_ diagnostics only
    image_colour: Literal["as_drawn", "grey_world"] = "as_drawn"  # the images the labels are made from (train
    # clustering, OPLM, the val selection): as drawn, or each with its colour cast discounted (grey world); the
    # memories always start from the images as drawn, as training sees them

    @property
    def colour_constancy(self) -> bool:
        """Whether the images the labels are made from are grey-world balanced (image_colour=grey_world)."""
        return self.image_colour == "grey_world"

    def __post_init__(self) -> None:
        check_ranges(self, "labels", {
            "fused_image_weight": Range(0), "fused_text_weight": Range(0), "fused_cross_weight": Range(0),
            "split_agreement": Range(0, 1, low_open=True), "split_min_pairs": Range(1),
            "merge_share": Range(0.5, 1, low_open=True), "merge_min_similarity": Range(-1, 1)})
        if self.fused_cross_weight > min(self.fused_image_weight, self.fused_text_weight):
            raise ConfigError(f"labels.fused_cross_weight {self.fused_cross_weight} must be at most "
                              f"labels.fused_image_weight and labels.fused_text_weight")
        if self.fused_image_weight + self.fused_text_weight <= 0:
            raise ConfigError("labels.fused_image_weight and labels.fused_text_weight cannot both be 0")


@dataclass(frozen=True)
class ClusterSelectSection:
    on: Literal["fixed", "val"] = "fixed"  # fixed: cluster.* as given; val: per epoch and modality, the best grid setting on val
    grid: SelectionGrid = field(default_factory=SelectionGrid)  # settings tried with on=val (convention and search kept)
    fused_weights: tuple[tuple[float, float, float], ...] = ()  # labels.mode=pair_fused with on=val: the (image, text,
    # cross) weights tried beside labels.fused_*, each with the grid; the pair clustering that matches val best wins

    def __post_init__(self) -> None:
        for image, text, cross in self.fused_weights:
            if min(image, text, cross) < 0 or cross > min(image, text) or image + text <= 0:
                raise ConfigError(f"cluster_select.fused_weights: each (image, text, cross) needs weights >= 0, "
                                  f"cross <= image and text, image + text > 0; got ({image}, {text}, {cross})")


@dataclass(frozen=True)
class LogSection:
    tensorboard: bool = False  # also write TensorBoard events to RUN_DIR/tensorboard (needs the tensorboard extra)
    examples: int = 4  # with tensorboard: test queries drawn at the end with the best checkpoint's top examples_k
    examples_k: int = 5  # thumbnails per retrieval example

    def __post_init__(self) -> None:
        check_ranges(self, "log", {"examples": Range(0), "examples_k": Range(1)})


@dataclass(frozen=True)
class TrainConfig:
    method: Method = "cpcl"  # zero_shot (evaluate only) | itc | cpcl | oracle (true ids: upper bound)
    seed: int = 0  # seeds python, numpy and torch; epoch e uses seed + e
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # autocast dtype; auto: bf16 where supported, else fp16 on CUDA; fp16 trains with loss scaling
    model: ModelSection = field(default_factory=ModelSection)  # backbone and input sizes
    data: DataSection = field(default_factory=DataSection)  # training data
    eval: EvalSection = field(default_factory=EvalSection)  # evaluation data and cadence
    optim: OptimSection = field(default_factory=OptimSection)  # optimiser and schedule
    augment: ImageTransformConfig = field(default_factory=ImageTransformConfig)  # normalisation and augmentation
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # Jaccard + DBSCAN per modality
    cluster_select: ClusterSelectSection = field(default_factory=ClusterSelectSection)  # fixed cluster.*, or chosen on val
    cpcl: CpclSection = field(default_factory=CpclSection)  # CPCL losses, memory, OPLM, sampler
    labels: LabelsSection = field(default_factory=LabelsSection)  # which pseudo labels: CPCL's or a pairing variant
    log: LogSection = field(default_factory=LogSection)  # TensorBoard (train.log is always written)

    def __post_init__(self) -> None:  # each section checks its own ranges; here what spans sections
        check_ranges(self, "", {"seed": Range(0, 2**32 - 1)})
        if self.cpcl.sampler == "pk" and self.optim.batch_size % self.cpcl.pk_instances:
            raise ConfigError(f"optim.batch_size {self.optim.batch_size} must divide by "
                              f"cpcl.pk_instances {self.cpcl.pk_instances} for the pk sampler")
        if self.cpcl.weight_by_val_f and (self.cluster_select.on != "val" or self.method != "cpcl"):
            raise ConfigError("cpcl.weight_by_val_f weights CPCL's cluster terms by how well their clustering matched "
                              f"val: it needs method=cpcl and cluster_select.on=val (got method={self.method}, "
                              f"on={self.cluster_select.on})")
        if self.cluster_select.fused_weights and (self.cluster_select.on != "val" or self.labels.mode != "pair_fused"):
            raise ConfigError("cluster_select.fused_weights is chosen on val for pair_fused labels: it needs "
                              f"cluster_select.on=val and labels.mode=pair_fused (got on={self.cluster_select.on}, "
                              f"mode={self.labels.mode})")
