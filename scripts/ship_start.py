"""Pack a `cpcl pretrain` run into a shipped start: src/cpcl/weights/NAME.safetensors and NAME.md.

    .venv/bin/python scripts/ship_start.py runs/pretrain --name synthpedes-small \
        --command "cpcl synth data/synthpedes --pretrain --pairs 256000 && cpcl pretrain --out runs/pretrain"

The weights are packed with `cpcl.model.shipped.pack` (float16, changed token-embedding rows
only, verified to unpack bit for bit), then the *shipped file* is evaluated zero-shot on the val
and test splits the run selected on, and the model card is written from the run's config,
metrics.jsonl and those numbers. A maintainer tool: run it when a start is replaced (seldom).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from cpcl.data.readers import load_dataset
from cpcl.engine.config import TrainConfig
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.model.checkpoints import read_checkpoint
from cpcl.model.inference import load_for_inference
from cpcl.model.shipped import SHIPPED_DIR, pack
from cpcl.utils.config import load_config


def evaluate_shipped(path: Path, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """Zero-shot metrics of the packed file on the run's evaluation splits."""
    loaded = load_for_inference(path, cfg.device, cfg.precision)
    data = load_dataset(cfg.eval.dataset or cfg.data.dataset, Path(cfg.eval.root or cfg.data.root))
    return {name: evaluate_split(loaded, data.splits[name], cfg.eval.batch_size, cfg.data.workers, name=name)
            for name in ("val", "test")}


def corpus_counts(cfg: TrainConfig) -> dict[str, int]:
    train = load_dataset(cfg.data.dataset, Path(cfg.data.root)).splits["train"]
    return {"images": len(train.images), "captions": len(train.captions)}


def card(name: str, run_dir: Path, cfg: TrainConfig, records: list[dict], metrics: dict, meta: dict,
         sha256: str, size: int, command: str) -> str:
    counts = corpus_counts(cfg)
    curve = "\n".join(f"| {r['epoch'] + 1} | {r['loss']:.4f} | {r['lr']:.2e} | {r.get('val_R1', float('nan')):.2f} | "
                      f"{r.get('time_train', 0) / 60:.1f} |" for r in records)
    rows = "\n".join(f"| {split} | " + " | ".join(f"{v:.2f}" for v in values.values()) + " |"
                     for split, values in metrics.items())
    init = json.loads(meta["token_embedding_init"])
    preprocessing = json.loads(meta["preprocessing"])
    return f"""# {name}: a small CLIP pretrained from scratch on SynthPedes' web-style corpus

The start that `synthpedes.yaml`, `cpcl demo` and `cpcl bench quality --preset standard` fine-tune.
Use it by name: `model.init: {name}` in a config, `--checkpoint {name}` on the command line.

- **Architecture**: preset `{init['preset']}` (`cpcl.model.clip.CLIP_PRESETS`), input {cfg.model.image_size[0]}x{cfg.model.image_size[1]}, context {cfg.model.context_length}.
- **Data**: the SynthPedes pretraining corpus, seed {cfg.seed}: {counts['images']:,} image / alt-text pairs (`{cfg.data.root}`),
  identities disjoint from the SynthPedes benchmark of the same seed (default sizes and shape, and every prefix of them).
  No person id is read.
- **Command**: `{command}`, then `python scripts/ship_start.py {run_dir} --name {name}`.
- **Recipe**: symmetric InfoNCE (method itc), {cfg.optim.epochs} epochs, batch {cfg.optim.batch_size}, Adam lr {cfg.optim.lr:g}
  (warm-up {cfg.optim.warmup_epochs} epoch from {cfg.optim.warmup_start_factor:g}x, cosine), weight decay {cfg.optim.weight_decay:g},
  grad clip {cfg.optim.grad_clip:g}, precision {cfg.precision}, seed {cfg.seed}; checkpoint selected on SynthPedes val R1.
- **File**: `{name}.safetensors`, {size / 2**20:.1f} MiB, float16; the token embedding stores the {meta['rows']:,} rows
  pretraining changed, the rest is regenerated from torch seed {init['seed']} (`cpcl.model.shipped`).
  sha256 `{sha256}`; digest of the unpacked float16 state dict and the preprocessing `{meta['state_sha256']}`
  (checked on every load).
- **Preprocessing** (recorded in the file, used wherever it is loaded): resize to {preprocessing['image_size'][0]}x{preprocessing['image_size'][1]} ({preprocessing['resize']}),
  mean {preprocessing['mean']}, std {preprocessing['std']}.

## Loss curve (per epoch)

| epoch | InfoNCE loss | lr at the end | val R1 | train min |
|---|---|---|---|---|
{curve}

## Zero-shot text-to-image retrieval of this file (SynthPedes, {cfg.eval.root or cfg.data.root})

| split | R1 | R5 | R10 | mAP | mINP |
|---|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished `cpcl pretrain` run directory")
    parser.add_argument("--name", required=True, help="the shipped name, e.g. synthpedes-small")
    parser.add_argument("--command", default="cpcl pretrain", help="the commands that made the run, for the card")
    args = parser.parse_args(argv)
    cfg = load_config(TrainConfig, args.run_dir / "config.yaml")
    preset = cfg.model.init.removeprefix("preset:")
    init = {"seed": cfg.seed, "preset": preset, "image_size": list(cfg.model.image_size),
            "context_length": cfg.model.context_length}
    checkpoint = read_checkpoint(args.run_dir / "best.pt")
    target = SHIPPED_DIR / f"{args.name}.safetensors"
    preprocessing = checkpoint.preprocessing or cfg.augment.preprocessing(cfg.model.image_size)  # a run before
    # checkpoints recorded it: its config says what it trained with
    meta = pack(checkpoint.state_dict, checkpoint.config, preprocessing, init, target)
    meta["rows"] = int(read_rows(target))
    metrics = evaluate_shipped(target, cfg)
    records = [json.loads(line) for line in (args.run_dir / "metrics.jsonl").read_text().splitlines() if line]
    sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
    text = card(args.name, args.run_dir, cfg, records, metrics, meta, sha256, target.stat().st_size, args.command)
    (SHIPPED_DIR / f"{args.name}.md").write_text(text)
    print(text)
    return 0


def read_rows(path: Path) -> int:
    from safetensors import safe_open

    from cpcl.model.shipped import ROWS

    with safe_open(str(path), framework="pt") as handle:
        return handle.get_slice(ROWS).get_shape()[0]


if __name__ == "__main__":
    sys.exit(main())
