"""cpcl's Python API: load a model and encode with it, search an index, train. The command line calls these same
functions (`cpcl encode`, `cpcl search`, `cpcl train`); `import cpcl` exposes them lazily (`cpcl.load`, ...).

    import cpcl
    model = cpcl.load("openai:ViT-B-16")                  # a path, a shipped name, or weights by name
    texts = model.encode_texts(["a woman in a red coat"])  # [N, D] float32, L2-normalised
    images = model.encode_images(["a.jpg", "b.jpg"])      # file paths or PIL images -> [N, D]
    scores = texts @ images.T                              # cosine similarities
    hits = cpcl.open_index("gallery.index").search("a man with a black backpack", k=5)
    results = cpcl.train("synthpedes", "runs/mine", optim__epochs=2)   # results.json's dict
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cpcl.clustering.rerank import RerankConfig
from cpcl.configs import resolve_config_path
from cpcl.data.check import find_bad_images, image_problem
from cpcl.data.transforms import load_rgb
from cpcl.engine.config import TrainConfig, load_run_config
from cpcl.engine.train import run_training
from cpcl.evaluation.features import extract_image_features, extract_text_features, pil_image_features
from cpcl.index.search import Filters, Hit, Searcher
from cpcl.model.architecture import ArchitectureHints
from cpcl.model.clip import CLIP
from cpcl.model.inference import LoadedModel, load_for_inference
from cpcl.utils.closing import Closing
from cpcl.utils.config import load_config
from cpcl.utils.distributed import World, detect_world
from cpcl.utils.errors import ConfigError, DataError
from cpcl.utils.preprocessing import Preprocessing
from cpcl.utils.text import blank

__all__ = ["Hit", "Index", "Model", "load", "open_index", "train"]

ImageInput = str | Path | Image.Image  # an image file, or an image already open
MAX_NAMED = 5  # unreadable images named in an error


class Model:
    """A CLIP ready to encode, with the preprocessing its checkpoint records. Embeddings are float32 numpy arrays
    [N, D], L2-normalised, so the cosine similarity of a text and an image is their dot product."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded  # model, device, dtype, preprocessing and tokenizer, as evaluation and index take it

    @property
    def module(self) -> CLIP:
        """The torch module (eval mode, on `device`)."""
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def preprocessing(self) -> Preprocessing:
        """What every image goes through: size (H, W), resize filter, mean, std."""
        return self.loaded.preprocessing

    @property
    def dim(self) -> int:
        """D, the length of an embedding."""
        return self.loaded.dim

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """texts -> [N, D]; longer ones are cut at the model's context length, as in training."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of texts; wrap one text in a list")
        tokens = self.loaded.tokenize(texts)
        if not len(tokens):
            return np.empty((0, self.dim), dtype=np.float32)
        return extract_text_features(self.loaded, tokens, batch_size).numpy()

    @torch.no_grad()
    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 256, workers: int = 0) -> np.ndarray:
        """Image files (read by `workers` processes) and/or PIL images -> [N, D], in input order. An unreadable
        file is a DataError naming it."""
        files = [i for i, image in enumerate(images) if not isinstance(image, Image.Image)]
        paths = [Path(images[i]) for i in files]
        if bad := find_bad_images(paths, show_progress=False):
            named = "; ".join(f"{path} ({problem})" for path, problem in list(bad.items())[:MAX_NAMED])
            raise DataError(f"{len(bad)} of {len(paths)} images cannot be read: {named}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        if paths:
            out[files] = extract_image_features(self.loaded, paths, batch_size, workers).numpy()
        if opened := sorted(set(range(len(images))) - set(files)):
            out[opened] = pil_image_features(self.loaded, [images[i] for i in opened], batch_size).numpy()
        return out


def load(name_or_path: str | Path, device: str = "auto", precision: str = "auto",
         image_size: tuple[int, int] | None = None, act: str | None = None, head_width: int | None = None) -> Model:
    """Any checkpoint cpcl reads: a file or folder (OpenAI, Hugging Face, open_clip, cpcl), a shipped start
    (synthpedes-small) or weights by name (openai:ViT-B-16, hf:ORG/NAME: downloaded and checked on first use).
    device: auto | cpu | cuda[:N]; precision: auto | fp32 | bf16 | fp16 (autocast); image_size (H, W): None, the
    checkpoint's own; act / head_width: the architecture of weights that do not record it."""
    return Model(load_for_inference(name_or_path, device, precision, image_size, ArchitectureHints(act, head_width)))


class Index(Closing):
    """An index built by `cpcl index build`, with the model it was built with (checked against its manifest)."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher  # everything else: filters' vocabularies, footage sources, vector search

    def __len__(self) -> int:
        return self.searcher.count

    def close(self) -> None:
        """Release what the index holds open (a Milvus connection); also at the end of `with open_index(...)`."""
        self.searcher.close()

    @property
    def root(self) -> Path:
        """The gallery folder hit paths are relative to."""
        return self.searcher.root

    def search(self, query: str | Image.Image | Path, k: int = 10, *, min_score: float | None = None,
               cameras: Sequence[str] = (), time_from: Any = None, time_to: Any = None, sources: Sequence[str] = (),
               group: bool = True, rerank: bool = False) -> list[Hit]:
        """A sentence (str) or an example image (PIL image or image file) -> up to k hits, best first.
        Filters: cameras, a time range (ISO 8601 or seconds), footage sources; min_score: a cosine floor; group:
        one hit per person track in footage; rerank: order by k-reciprocal re-ranking over the whole gallery.

        Takes 9 parameters because it is the public search call: the query, k and each filter a caller may set,
        the filters keyword-only so that every call names them."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        filters = Filters.parse(cameras, time_from, time_to, sources)
        if isinstance(query, str):
            if blank(query):
                raise ConfigError("the search text is empty (white space or control characters only)")
            return self.searcher.search_text(query, k, min_score, filters, group, rerank)
        if not isinstance(query, Image.Image):
            if problem := image_problem(Path(query)):
                raise DataError(f"{query}: {problem}")
            query = load_rgb(Path(query))
        return self.searcher.search_image(query, k, min_score, filters, group, rerank)


def open_index(path: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
               precision: str = "auto", rerank: RerankConfig | None = None) -> Index:
    """The index at `path` and its model (`checkpoint`: where that file is now, if it moved; it must be the same
    bytes). rerank: the re-ranking's k1, k2, lambda for searches that ask for it."""
    return Index(Searcher.open(Path(path), Path(checkpoint) if checkpoint else None, device, precision,
                               rerank=rerank))


def train(config: str | Path | TrainConfig | None = None, out: str | Path | None = None, *,
          resume: str | Path | None = None, world: World | None = None, **overrides: Any) -> dict[str, Any]:
    """Train as `cpcl train` does; returns results.json's dict. config: a YAML file, a shipped config name
    (synthpedes, cuhk_pedes, ...) or a TrainConfig; out: the run folder; overrides: config fields with `__` for the
    dot (optim__epochs=2, cpcl__oplm="off"). resume=RUN_DIR continues an interrupted run with its saved config.
    world: this process's rank under torchrun (None: read from the environment, as the command line does)."""
    if resume is not None:
        if config is not None or out is not None or overrides:
            raise ConfigError("resume takes the run's saved config.yaml; give no config, out or overrides with it")
        return run_training(load_run_config(Path(resume) / "config.yaml"), Path(resume), resume=True,
                            world=world or detect_world())
    if out is None:
        raise ConfigError("say where the run goes: out=RUN_DIR (or resume=RUN_DIR)")
    return run_training(train_config(config, overrides), Path(out), world=world or detect_world())


def train_config(config: str | Path | TrainConfig | None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The resolved TrainConfig of a file, a shipped name or a TrainConfig, with `train`'s overrides."""
    values = {key.replace("__", "."): value for key, value in (overrides or {}).items()}
    if isinstance(config, TrainConfig):
        if values:
            raise ConfigError("give overrides with a config file or name, not with a TrainConfig")
        return config
    return load_config(TrainConfig, resolve_config_path(str(config)) if config is not None else None, values=values)
