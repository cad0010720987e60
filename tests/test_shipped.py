"""Shipped starts: the compact format round-trips bit for bit, damage is refused, names resolve."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cpcl.data.readers import load_dataset
from cpcl.data.records import SplitData
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.model import CLIP, clip_preset, load_clip, read_checkpoint
from cpcl.model.inference import LoadedModel, load_for_inference
from cpcl.model.shipped import ROWS, SPARSE_KEY, VALUES, pack, resolve_checkpoint, shipped_file, unpack
from cpcl.synth import SynthConfig, write_synthpedes
from cpcl.utils.errors import CheckpointError
from cpcl.utils.preprocessing import Preprocessing

INIT = {"seed": 5, "preset": "tiny", "image_size": [64, 32], "context_length": 16}
PREPROCESSING = Preprocessing((64, 32), "bilinear", (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))  # what it was trained with


def trained_tiny() -> CLIP:
    """A tiny CLIP as `cpcl pretrain` would leave it: built after torch.manual_seed(seed), then a
    few token-embedding rows and every other tensor changed."""
    torch.manual_seed(INIT["seed"])
    model = CLIP(clip_preset(INIT["preset"], tuple(INIT["image_size"]), INIT["context_length"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name == SPARSE_KEY:
                param[[3, 17, 400]] += 0.5
            else:
                param.mul_(1.5).add_(0.01)
    return model


def test_pack_stores_changed_rows_and_unpacks_bit_identical(tmp_path: Path) -> None:
    model = trained_tiny()
    target = tmp_path / "start.safetensors"
    metadata = pack(model.state_dict(), model.config, PREPROCESSING, INIT, target)
    stored = load_file(str(target))
    assert stored[ROWS].tolist() == [3, 17, 400] and stored[VALUES].dtype == torch.float16
    assert SPARSE_KEY not in stored
    state, config, preprocessing = unpack(target)
    assert config == model.config and preprocessing == PREPROCESSING and len(metadata["state_sha256"]) == 64
    for key, value in model.state_dict().items():
        assert state[key].dtype == torch.float16
        assert torch.equal(state[key], value.to(torch.float16)), key
    loaded, _ = load_clip(target)  # read_checkpoint recognises the format by its metadata
    assert read_checkpoint(target).source == "shipped"
    assert torch.equal(loaded.token_embedding.weight, model.token_embedding.weight.half().float())


def test_damaged_or_wrong_init_is_refused(tmp_path: Path) -> None:
    model = trained_tiny()
    target = tmp_path / "start.safetensors"
    pack(model.state_dict(), model.config, PREPROCESSING, INIT, target)
    tensors = load_file(str(target))
    with safe_open(str(target), framework="pt") as handle:
        metadata = handle.metadata()
    tensors[VALUES][0, 0] += 1
    save_file(tensors, str(target), metadata=metadata)
    with pytest.raises(CheckpointError, match="is damaged"):
        read_checkpoint(target)
    with pytest.raises(CheckpointError, match="does not give the model's token embedding shape"):
        pack(model.state_dict(), model.config, PREPROCESSING, {**INIT, "preset": "small"},
             tmp_path / "other.safetensors")


def test_names_resolve_to_the_package_and_paths_win(tmp_path: Path, monkeypatch) -> None:
    assert resolve_checkpoint("synthpedes-small") == shipped_file("synthpedes-small")
    assert resolve_checkpoint(Path("runs/x/best.pt")) == Path("runs/x/best.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthpedes-small").mkdir()  # a path that exists is taken as given
    assert resolve_checkpoint("synthpedes-small") == Path("synthpedes-small")


def card_sha256(name: str) -> str:
    """The sha256 the model card states for the shipped file."""
    text = shipped_file(name).with_suffix(".md").read_text()
    match = re.search(r"sha256 `([0-9a-f]{64})`", text)
    assert match, f"{name}.md states no sha256"
    return match.group(1)


@pytest.fixture(scope="module")
def fresh_test_split(tmp_path_factory) -> SplitData:
    """The first 40 test identities of the default SynthPedes (seed 0), freshly drawn: never seen
    in pretraining, whose corpus excludes the default benchmark's identities."""
    out = tmp_path_factory.mktemp("fresh")
    write_synthpedes(out, SynthConfig(ids_train=0, ids_val=0, ids_test=40, workers=1))
    return load_dataset("cuhk-pedes", out).splits["test"]


def zero_shot_r1(loaded: LoadedModel, split: SplitData) -> float:
    return evaluate_split(loaded, split, 64)["R1"]


def test_shipped_start_matches_its_card_and_retrieves_people(fresh_test_split) -> None:
    path = shipped_file("synthpedes-small")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card_sha256("synthpedes-small")
    loaded = load_for_inference("synthpedes-small", device="cpu", precision="fp32")
    gallery = Counter(image.person_id for image in fresh_test_split.images)
    chance = 100 * statistics.fmean(gallery[fresh_test_split.images[c.image_id].person_id] / len(fresh_test_split.images)
                                    for c in fresh_test_split.captions)  # a random ranking's expected R1
    shipped = zero_shot_r1(loaded, fresh_test_split)
    torch.manual_seed(0)
    untrained = CLIP(loaded.model.config).eval()  # what the test says of random weights
    random = zero_shot_r1(replace(loaded, model=untrained), fresh_test_split)
    assert random < 4 * chance < 30 <= shipped, (random, chance, shipped)
