"""What the benchmark and the demo share: generated data, and the start every method fine-tunes."""

from __future__ import annotations

from pathlib import Path

from cpcl.engine.train import run_config
from cpcl.experiments.plans import SCRATCH
from cpcl.synth.config import DEFAULT_SHAPE, SynthConfig
from cpcl.synth.writer import BENCHMARK_DIR, PRETRAIN_DIR, write_pretrain_corpus, write_synthpedes


def generate_data(root: Path, ids: tuple[int, int, int], seed: int, pretrain_pairs: int = 0,
                  style: str = "standard", shape: str = DEFAULT_SHAPE, **fields) -> None:
    """SynthPedes (root/CUHK-PEDES) in `style` (`SynthConfig.styled`: its cameras, wording and settings) and
    `shape` (a real dataset's images per person and captions per image), `fields` overriding any SynthConfig
    field, and, when `pretrain_pairs` > 0, its web-style pretraining corpus (root/SynthPedes-pretrain),
    identities disjoint from it."""
    train, val, test = ids
    cfg = SynthConfig.styled(style, shape, **{"seed": seed, "ids_train": train, "ids_val": val, "ids_test": test,
                                              "pretrain_pairs": max(pretrain_pairs, 1), **fields})
    write_synthpedes(root, cfg, overwrite=True)
    if pretrain_pairs > 0:
        write_pretrain_corpus(root, cfg, overwrite=True)


def has_data(root: Path, pretraining: bool) -> bool:
    return (root / BENCHMARK_DIR / "reid_raw.json").is_file() and (not pretraining or (root / PRETRAIN_DIR).is_dir())


def pretrain_overrides(data: Path, preset: str, epochs: int, seed: int) -> list[str]:
    """Overrides of the `pretrain_synthpedes` config for the data generated under `data`."""
    return [f"seed={seed}", f"model.init=preset:{preset}", f"optim.epochs={epochs}",
            f"data.root={data / PRETRAIN_DIR}", f"eval.root={data}"]


def finetune_overrides(data: Path, start: str | Path, epochs: int, seed: int) -> list[str]:
    """Overrides of the `synthpedes` config: fine-tune checkpoint `start` (a path or a shipped
    name) on the data under `data`."""
    return [f"seed={seed}", f"optim.epochs={epochs}", f"model.init={start}", f"data.root={data}"]


def pretrain_start(data: Path, run_dir: Path, preset: str, epochs: int, seed: int,
                   extra: tuple[str, ...] = ()) -> Path:
    """Pretrain a `preset` CLIP from scratch on the corpus under `data` (once); its best.pt."""
    if not (run_dir / "results.json").is_file():
        run_config("pretrain_synthpedes", run_dir, [*pretrain_overrides(data, preset, epochs, seed), *extra])
    return run_dir / "best.pt"
