"""The epoch record: what one epoch of `cpcl train` measured, filled by its phases (docs/method.md, One
epoch) and read by the logs, TensorBoard, the report and the benchmark.

On disk it is one flat JSON line of metrics.jsonl (`to_json`, `from_json`), with the keys earlier versions
wrote, so run folders of any version read alike. Each group holds its keys as metrics.jsonl spells them:
  losses     "*loss": the epoch's mean loss terms and their sum "loss" (`loop.train_one_epoch`)
  times      "time_*": seconds of the phases (extract, cluster, train, eval)
  labels     the pseudo labels' counts: "*_clusters", "*_outliers", "cluster_*_seconds" (step 2), the strategy's
             own ("oplm_rescued_*", "image_centred_rescued"), "labels_*_clusters", "pairs_unlabelled"
  selection  "select_*": the clustering chosen on val and its val scores (cluster_select.on=val)
  oracle     "oracle_*": the labels against true ids (diagnostics only; nothing trains on them)
  val        "val_*": the val metrics (R1, R5, R10, mAP, mINP)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cpcl.utils.errors import RunDirError

PREFIXED = (("val", "val_"), ("selection", "select_"), ("oracle", "oracle_"), ("times", "time_"))  # group, key prefix
TAGS = {"losses": "train", "times": "time", "labels": "clusters", "selection": "cluster_select", "oracle": "oracle",
        "val": "val"}  # TensorBoard's tag group of each group


@dataclass
class EpochTraining:
    """What the optimiser loop measured over the epoch (`loop.train_one_epoch`)."""

    losses: dict[str, float]  # mean of each loss term over the steps, and "loss" (their sum)
    lr: float  # the last step's learning rate
    grad_scale: float | None = None  # fp16 loss scale at the end (None: no scaler, bf16 / fp32)
    skipped_steps: int | None = None  # fp16 steps skipped for inf/NaN gradients (None: no scaler)


@dataclass
class EpochRecord:
    """One epoch's measurements (rank 0's is logged); see the module docstring for the groups."""

    epoch: int  # from 0
    method: str  # the config's method
    world_size: int = 1  # processes that trained it
    losses: dict[str, float] = field(default_factory=dict)
    lr: float | None = None  # the last step's learning rate (None: a record without training)
    grad_scale: float | None = None  # fp16 only
    skipped_steps: int | None = None  # fp16 only
    times: dict[str, float] = field(default_factory=dict)
    labels: dict[str, float] = field(default_factory=dict)
    selection: dict[str, float] = field(default_factory=dict)
    oracle: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    labels_digest: str | None = None  # digest of the epoch's pseudo labels (equal on every rank)
    memory_digests: list[str] | None = None  # digest of each rank's prototype memories after the epoch

    def trained(self, training: EpochTraining) -> None:
        """Take in what the optimiser loop measured."""
        self.losses = dict(training.losses)
        self.lr, self.grad_scale, self.skipped_steps = training.lr, training.grad_scale, training.skipped_steps

    @property
    def loss(self) -> float | None:
        """The epoch's mean summed loss (None: nothing trained)."""
        return self.losses.get("loss")

    @property
    def val_r1(self) -> float | None:
        """Val R1 of this epoch's model (None: not evaluated this epoch)."""
        return self.val.get("val_R1")

    def to_json(self) -> dict[str, Any]:
        """The flat metrics.jsonl record (the keys earlier versions wrote)."""
        optional = {"lr": self.lr, "grad_scale": self.grad_scale, "skipped_steps": self.skipped_steps,
                    "labels_digest": self.labels_digest, "memory_digests": self.memory_digests}
        return {"epoch": self.epoch, "method": self.method, "world_size": self.world_size, **self.times,
                **self.selection, **self.oracle, **self.labels, **self.losses,
                **{key: value for key, value in optional.items() if value is not None}, **self.val}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "metrics.jsonl") -> EpochRecord:
        """A metrics.jsonl record of any version; RunDirError naming `where` and the key for a value of the
        wrong type. Keys of retired switches (labels.panel's oracle_panel_*, cpcl.weight_by_val_f's weights)
        land in their group like the others."""
        scalars = {"epoch": int, "method": str, "world_size": int, "skipped_steps": int, "labels_digest": str}
        for key, kind in scalars.items():
            if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
                raise RunDirError(f"{where}: '{key}' is a {type(data[key]).__name__}, expected {kind.__name__}")
        record = cls(data["epoch"], data.get("method", ""), data.get("world_size", 1),
                     lr=_number(data, "lr", where), grad_scale=_number(data, "grad_scale", where),
                     skipped_steps=data.get("skipped_steps"), labels_digest=data.get("labels_digest"),
                     memory_digests=data.get("memory_digests"))
        for key, value in data.items():
            if key not in (*scalars, "lr", "grad_scale", "memory_digests"):
                getattr(record, group_of(key))[key] = _number(data, key, where, required=True)
        return record

    def groups(self) -> dict[str, dict[str, float]]:
        """Every measurement by TensorBoard tag group, named without its group's key prefix: "train" (losses, lr,
        fp16 scaler), "time" (phases, and step 2's seconds), "clusters", "cluster_select", "oracle", "val"."""
        out: dict[str, dict[str, float]] = {tag: {} for tag in TAGS.values()}
        for group, tag in TAGS.items():
            prefix = dict(PREFIXED).get(group, "")
            for key, value in getattr(self, group).items():
                seconds = group == "labels" and key.endswith("_seconds")
                out["time" if seconds else tag][key if seconds else key.removeprefix(prefix)] = value
        extra = {"lr": self.lr, "grad_scale": self.grad_scale, "skipped_steps": self.skipped_steps}
        out["train"].update({key: value for key, value in extra.items() if value is not None})
        return out


def group_of(key: str) -> str:
    """The group of a metrics.jsonl key: by prefix (val_, select_, oracle_, time_), "losses" for *loss, else
    "labels"."""
    for group, prefix in PREFIXED:
        if key.startswith(prefix):
            return group
    return "losses" if key.endswith("loss") else "labels"


def _number(data: Mapping[str, Any], key: str, where: str, required: bool = False) -> float | None:
    """data[key] as a number (None when absent or null, unless `required`); RunDirError naming it otherwise."""
    value = data.get(key)
    if (value is not None or required) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise RunDirError(f"{where}: '{key}' is a {type(value).__name__}, expected a number")
    return value
