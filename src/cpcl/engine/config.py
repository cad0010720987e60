"""The training run config (docs/method.md: every default and every ablation switch is a field).

`cpcl train -c FILE key=value ...` resolves defaults <- YAML (with `base:`) <- overrides into a
frozen `TrainConfig`, validated once and written to `RUN_DIR/config.yaml`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from cpcl.clustering import ClusterConfig, JaccardOptions
from cpcl.clustering.knn import AUTO, EXACT_BACKENDS
from cpcl.clustering.rerank import RerankConfig
from cpcl.clustering.select import SelectionGrid
from cpcl.data.transforms import ImageTransformConfig
from cpcl.engine.pseudo_labels.pair_fused import PairFusedSection
from cpcl.engine.pseudo_labels.registry import label_strategy
from cpcl.model.architecture import ArchitectureHints
from cpcl.utils.config import Range, build, check_ranges, load_yaml, to_dict
from cpcl.utils.errors import ConfigError

Method = Literal["zero_shot", "itc", "cpcl", "oracle"]
RETIRED_NUMBERS = "its numbers are in docs/experiments.md (2026-12-07, retired switches)"


def retired(why: str) -> str:
    """The one-line error of a retired config key (utils.config.build reads a section's RETIRED)."""
    return f"was retired ({why}); {RETIRED_NUMBERS}"


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
class RerankSection:
    """eval.rerank_options: Zhong et al.'s re-ranking parameters; the gallery's neighbours are found with the
    cluster section's kNN engine (cluster.knn_backend, cluster.knn_device)."""

    RETIRED: ClassVar[dict[str, str]] = {"search": "was retired: re-ranking searches with cluster.knn_backend and "
                                                   "cluster.knn_device; the other engine options stay library "
                                                   "defaults (set them with cpcl evaluate or cpcl cluster)"}
    k1: int = 20  # a query's gallery neighbours N(q), and the gallery's k-reciprocal neighbourhood size
    k2: int = 6  # query expansion: the query and its k2 - 1 nearest gallery items (1 = none)
    lambda_value: float = 0.3  # weight of the original distance (1 - s) / 2 in the final distance

    def __post_init__(self) -> None:
        self.config(JaccardOptions())  # checks k1, k2 and lambda_value

    def config(self, search: JaccardOptions) -> RerankConfig:
        """The re-ranking with these parameters, finding neighbours as `search` says."""
        return RerankConfig(self.k1, self.k2, self.lambda_value, search)


@dataclass(frozen=True)
class ClusterSection:
    """cluster: Jaccard + DBSCAN per modality (docs/method.md step 2), and where its kNN search runs. The kNN
    engine's other options (blocks, HNSW, chunks, tolerances) stay library defaults in training: `cpcl cluster`
    and the benchmarks set them."""

    RETIRED: ClassVar[dict[str, str]] = {"search": "was retired: training configs set cluster.knn_backend and "
                                                   "cluster.knn_device only; the other kNN engine options stay "
                                                   "library defaults (cpcl cluster and benchmarks set them)"}
    k1: int = 30  # k-reciprocal neighbourhood size
    k2: int = 6  # query-expansion neighbours, the point itself included (1 = no expansion)
    eps: float = 0.6  # DBSCAN radius on the Jaccard distance, 0 < eps < 1
    min_samples: int = 4  # DBSCAN core-point threshold, the point itself included
    convention: Literal["cluster_contrast", "zhong"] = "cluster_contrast"  # kNN lists: k1 incl. self (the field's code) | k1+1 (Zhong)
    knn_backend: str = "auto"  # auto (the faster exact engine here) | flat | faiss_flat | hnsw (approximate)
    knn_device: str = "auto"  # where flat runs: auto | cpu | cuda:N

    def __post_init__(self) -> None:
        self.config()  # ClusterConfig and JaccardOptions check their fields

    def config(self) -> ClusterConfig:
        """This section as the clustering layer's config (engine options other than the two: defaults)."""
        return ClusterConfig(self.k1, self.k2, self.eps, self.min_samples, self.convention,
                             JaccardOptions(knn_backend=self.knn_backend, knn_device=self.knn_device))


@dataclass(frozen=True)
class EvalSection:
    dataset: str | None = None  # evaluation data format (None: the training data's)
    root: str | None = None  # evaluation data root (None: the training data's)
    batch_size: int = 256  # feature extraction batch
    every: int = 1  # evaluate on val every N epochs (the last epoch always)
    rerank: bool = False  # rank every evaluation's gallery by k-reciprocal re-ranking (docs/method.md, Evaluation)
    rerank_options: RerankSection = field(default_factory=RerankSection)  # its k1, k2, lambda_value (with rerank)

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
    RETIRED: ClassVar[dict[str, str]] = {
        "itc_warmup_epochs": retired("2 ITC warm-up epochs stayed at or below ITC on val"),
        "weight_by_val_f": retired("cluster terms weighted by val F: +0.19 [-0.44, +0.82] test R1 over CPCL, 5 seeds"),
    }
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
    sampler: Literal["random", "pk"] = "random"  # random pairs, or P pseudo-identities x K pairs
    pk_instances: int = 4  # K of the pk sampler

    def __post_init__(self) -> None:
        check_ranges(self, "cpcl", {
            "tau": Range(0, low_open=True), "momentum": Range(0, 1), "theta": Range(-1, 1),
            "icpm_scale": Range(0, low_open=True), "icpm_eps": Range(0, 1, low_open=True, high_open=True),
            "pcm_weight": Range(0), "icpm_weight": Range(0), "itc_weight": Range(0), "pk_instances": Range(1)})


# labels.refine's parameters, retired with it (a run saved with refine off left them unused)
REFINE_PARAMETERS = ("split_agreement", "split_min_pairs", "merge_share", "merge_min_similarity")


@dataclass(frozen=True)
class LabelsSection:
    """labels: which pseudo-label strategy (engine/pseudo_labels/registry.py: LABEL_STRATEGIES), and the
    sections of the strategies that have one."""

    RETIRED: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("refine", *REFINE_PARAMETERS),
                        retired("refinement by the caption clusters never beat CPCL on val")),
        "panel": retired("the every-variant quality panel; oracle_image_* and oracle_text_* remain"),
        "image_colour": retired("grey-world labels: +0.07 [-0.48, +0.63] val R1 over CPCL"),
        **dict.fromkeys(("fused_image_weight", "fused_text_weight", "fused_cross_weight"),
                        "moved to labels.pair_fused.weights: [image, text, cross]"),
    }
    mode: str = "cpcl"  # cpcl: steps 2-3 | image_centred | pair_fused (docs/method.md, step 3b)
    pair_fused: PairFusedSection = field(default_factory=PairFusedSection)  # pair_fused's fusion weights

    def __post_init__(self) -> None:
        label_strategy(self.mode)  # ConfigError listing the valid strategies


@dataclass(frozen=True)
class ClusterSelectSection:
    RETIRED: ClassVar[dict[str, str]] = {"fused_weights": "moved to labels.pair_fused.weights_on_val"}
    on: Literal["fixed", "val"] = "fixed"  # fixed: cluster.* as given; val: per epoch and modality, the best grid setting on val
    grid: SelectionGrid = field(default_factory=SelectionGrid)  # settings tried with on=val (convention and kNN engine kept)


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
    cluster: ClusterSection = field(default_factory=ClusterSection)  # Jaccard + DBSCAN per modality
    cluster_select: ClusterSelectSection = field(default_factory=ClusterSelectSection)  # fixed cluster.*, or chosen on val
    cpcl: CpclSection = field(default_factory=CpclSection)  # CPCL losses, memory, OPLM, sampler
    labels: LabelsSection = field(default_factory=LabelsSection)  # which pseudo labels: CPCL's or a plug-in strategy
    log: LogSection = field(default_factory=LogSection)  # TensorBoard (train.log is always written)

    def __post_init__(self) -> None:  # each section checks its own ranges; here what spans sections
        check_ranges(self, "", {"seed": Range(0, 2**32 - 1)})
        if self.cpcl.sampler == "pk" and self.optim.batch_size % self.cpcl.pk_instances:
            raise ConfigError(f"optim.batch_size {self.optim.batch_size} must divide by "
                              f"cpcl.pk_instances {self.cpcl.pk_instances} for the pk sampler")
        if self.labels.pair_fused.weights_on_val and (self.cluster_select.on != "val"
                                                      or self.labels.mode != "pair_fused"):
            raise ConfigError("labels.pair_fused.weights_on_val is chosen on val for pair_fused labels: it needs "
                              f"cluster_select.on=val and labels.mode=pair_fused (got on={self.cluster_select.on}, "
                              f"mode={self.labels.mode})")


UNUSED = {  # (section, key): the value an earlier version saved for a retired switch it did not use
    ("labels", "refine"): "off", ("labels", "panel"): False, ("labels", "image_colour"): "as_drawn",
    ("cpcl", "weight_by_val_f"): False, ("cpcl", "itc_warmup_epochs"): 0,
}
KNN_PLACE = ("knn_backend", "knn_device")  # the kNN engine options a training config still sets (in cluster)


def _default_search(search: Any, kept: tuple[str, ...] = ()) -> bool:
    """Whether a saved `search` section changes nothing but speed: an exact kNN backend (then no option changes
    the result beyond float rounding: JaccardOptions), or the library's JaccardOptions defaults (`kept` aside)."""
    if not isinstance(search, dict):
        return False
    if search.get("knn_backend", JaccardOptions.knn_backend) in (AUTO, *EXACT_BACKENDS):
        return True
    defaults = to_dict(JaccardOptions())
    return all(search.get(key, value) == value for key, value in defaults.items() if key not in kept)


def _move_keys(labels: dict, select: dict, cluster: dict) -> None:
    """labels.fused_* -> labels.pair_fused.weights, cluster_select.fused_weights -> .weights_on_val, and
    cluster.search's knn_backend and knn_device -> cluster.* where the rest of it is the defaults."""
    moved = [labels.pop(f"fused_{part}_weight") for part in ("image", "text", "cross") if f"fused_{part}_weight" in labels]
    if len(moved) == 3:
        labels.setdefault("pair_fused", {})["weights"] = moved
    if "fused_weights" in select:
        labels.setdefault("pair_fused", {})["weights_on_val"] = select.pop("fused_weights")
    if _default_search(cluster.get("search"), KNN_PLACE):
        cluster.update({key: value for key, value in cluster.pop("search").items() if key in KNN_PLACE})


def upgrade_saved(data: dict) -> dict:
    """A config.yaml that a run saved before issue 33 (every field, the retired ones included) in today's keys:
    moved keys moved (`_move_keys`), retired switches dropped where the run left them unused. A retired switch
    the run did use stays, so that `build` refuses it in one line."""
    data = copy.deepcopy(data)
    sections = {name: data[name] for name in ("labels", "cluster_select", "cluster", "cpcl", "eval")
                if isinstance(data.get(name), dict)}
    labels, select = sections.get("labels", {}), sections.get("cluster_select", {})
    _move_keys(labels, select, sections.get("cluster", {}))
    for (section, key), unused in UNUSED.items():
        saved = sections.get(section, {}).get(key)
        if saved == unused or (unused == "off" and saved is False):  # YAML 1.1 reads a bare off as false
            sections[section].pop(key)
    if "refine" not in labels:
        for key in REFINE_PARAMETERS:
            labels.pop(key, None)
    if isinstance(select.get("grid"), dict) and select["grid"].get("beta") == 1.0:
        select["grid"].pop("beta")
    rerank = sections.get("eval", {}).get("rerank_options")
    if isinstance(rerank, dict) and _default_search(rerank.get("search")):
        rerank.pop("search")
    return data


def load_run_config(path: Path) -> TrainConfig:
    """The TrainConfig a run folder's config.yaml holds, saved by this version or an earlier one (`upgrade_saved`)."""
    return build(TrainConfig, upgrade_saved(load_yaml(path)))
