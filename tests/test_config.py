"""Config machinery: YAML bases, dotted overrides, typed validation, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from cpcl.utils.config import load_config, save_config, to_dict
from cpcl.utils.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-5  # learning rate
    size: tuple[int, int] = (384, 128)  # H, W
    mode: Literal["a", "b"] = "a"  # a switch


@dataclass(frozen=True)
class Outer:
    name: str = "run"  # run name
    epochs: int = 60  # epochs
    checkpoint: str | None = None  # optional path
    inner: Inner = field(default_factory=Inner)  # nested section

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


def test_defaults_base_file_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 10\ninner:\n  lr: 0.001\n  mode: b\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: child\ninner:\n  size: [64, 32]\n")
    cfg = load_config(Outer, tmp_path / "child.yaml", ["inner.lr=3e-4", "checkpoint=/x.pt", "epochs=2"])
    assert cfg == Outer(name="child", epochs=2, checkpoint="/x.pt", inner=Inner(lr=3e-4, size=(64, 32), mode="b"))
    assert load_config(Outer, None) == Outer()


def test_save_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["inner.size=[96, 32]", "epochs=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == to_dict(cfg)
    assert load_config(Outer, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("overrides,message", [
    (["inner.lrr=1"], "unknown config field 'inner.lrr'; valid fields of inner: lr, size, mode"),
    (["epochs=ten"], "config field 'epochs' must be int, got 'ten'"),
    (["epochs=true"], "config field 'epochs' must be int, got True"),
    (["inner.mode=c"], "config field 'inner.mode' must be one of a, b; got 'c'"),
    (["inner.size=[1]"], "config field 'inner.size' must have 2 items, got 1"),
    (["epochs=0"], "epochs must be >= 1, got 0"),
    (["epochs"], "override 'epochs' is not of the form key=value"),
    (["inner=3"], "config field 'inner' must be a mapping"),
])
def test_invalid_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(Outer, None, overrides)


def test_file_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(Outer, tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: malformed YAML at line \d+ column \d+"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Outer, tmp_path / "list.yaml")


@pytest.mark.parametrize("raw,expected", [("off", "off"), ("on", "on"), ("'off'", "off")])
def test_on_off_switches_survive_yaml_booleans(tmp_path, raw, expected):
    """YAML 1.1 reads a bare on / off as a boolean; a Literal switch of those words takes it back."""
    from cpcl.engine.config import TrainConfig

    cfg = load_config(TrainConfig, None, [f"cpcl.memory_update={raw}"])
    assert cfg.cpcl.memory_update == expected
    (tmp_path / "c.yaml").write_text(f"cpcl:\n  memory_update: {raw}\n")
    assert load_config(TrainConfig, tmp_path / "c.yaml").cpcl.memory_update == expected
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(TrainConfig, tmp_path / "saved.yaml") == cfg
    with pytest.raises(ConfigError, match="must be one of a, b; got True"):
        load_config(Outer, None, ["inner.mode=on"])  # no such word among the options: still an error


def test_a_field_named_on_survives_yaml_reading_the_key_as_a_boolean(tmp_path):
    """`on:` as a key is True to YAML 1.1; the field it names takes it back, and a saved config round-trips."""
    from cpcl.engine.config import TrainConfig

    (tmp_path / "c.yaml").write_text("cluster_select:\n  on: val\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml")
    assert cfg.cluster_select.on == "val"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(TrainConfig, tmp_path / "saved.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("optim:\n  on: 3\n")  # no field named on, yes or true there
    with pytest.raises(ConfigError, match="unknown config field 'optim.True'"):
        load_config(TrainConfig, tmp_path / "bad.yaml")


@pytest.mark.parametrize("override, key, expected", [
    ("eval.every=0", "eval.every", ">= 1"),
    ("eval.batch_size=0", "eval.batch_size", ">= 1"),
    ("optim.lr=-1e-4", "optim.lr", "> 0"),
    ("optim.lr=.nan", "optim.lr", "> 0"),
    ("optim.lr=.inf", "optim.lr", "> 0"),
    ("optim.warmup_start_factor=-5", "optim.warmup_start_factor", ">= 0 and <= 1"),
    ("optim.min_lr_factor=2", "optim.min_lr_factor", ">= 0 and <= 1"),
    ("optim.batch_size=1", "optim.batch_size", ">= 2"),
    ("optim.epochs=-1", "optim.epochs", ">= 0"),
    ("cpcl.pk_instances=0", "cpcl.pk_instances", ">= 1"),
    ("cpcl.tau=0", "cpcl.tau", "> 0"),
    ("cpcl.momentum=1.5", "cpcl.momentum", ">= 0 and <= 1"),
    ("cpcl.icpm_weight=-1", "cpcl.icpm_weight", ">= 0"),
    ("model.image_size=[0, 128]", "model.image_size", ">= 1"),
    ("data.workers=-1", "data.workers", ">= 0"),
    ("augment.std=[0.5, 0, 0.5]", "augment.std", "> 0"),
    ("augment.flip_prob=1.5", "augment.flip_prob", ">= 0 and <= 1"),
    ("augment.erase_area=[0.5, 0.1]", "augment.erase_area", "low <= high"),
    ("seed=-1", "seed", ">= 0"),
    ("cluster.eps=0", "cluster", "eps"),
])
def test_every_nonsense_training_value_is_refused_naming_its_key(override, key, expected, tmp_path, capsys):
    from cpcl.cli import main
    from cpcl.engine.config import TrainConfig

    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, None, [override])
    assert f"config field '{key}'" in str(err.value) and expected in str(err.value)
    assert main(["train", "--out", str(tmp_path / "run"), override, "--dry-run"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpcl train: error: config field")
    assert not (tmp_path / "run").exists()


def numeric_fields(config) -> list[tuple[str, type]]:
    """(dotted key, int or float) of every numeric field of a (nested) config dataclass."""
    import dataclasses
    import typing

    found = []
    for f in dataclasses.fields(config):
        kind = typing.get_type_hints(type(config))[f.name]
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found += [(f"{f.name}.{key}", t) for key, t in numeric_fields(value)]
        elif kind in (int, float) or typing.get_origin(kind) is tuple and typing.get_args(kind)[0] in (int, float):
            found.append((f.name, int if (typing.get_args(kind) or (kind,))[0] is int else float))
    return found


def test_every_numeric_training_field_has_a_range():
    """Absurd values (NaN for a float, -10**12 for an integer) are refused for every numeric field."""
    from cpcl.engine.config import TrainConfig

    sections = ("model.", "data.", "eval.", "optim.", "cpcl.", "augment.", "cluster.", "seed")
    fields = [(key, kind) for key, kind in numeric_fields(TrainConfig()) if key.startswith(sections)]
    assert len(fields) > 30 and ("optim.lr", float) in fields and ("cpcl.pk_instances", int) in fields
    for key, kind in fields:
        default = getattr_dotted(TrainConfig(), key)
        absurd = ".nan" if kind is float else "-1000000000000"
        value = f"[{', '.join([absurd] * len(default))}]" if isinstance(default, tuple) else absurd
        with pytest.raises(ConfigError, match=key.split(".")[0]):
            load_config(TrainConfig, None, [f"{key}={value}"])


def getattr_dotted(config, key: str):
    for part in key.split("."):
        config = getattr(config, part)
    return config


MAX_TRAIN_CONFIG_LEAVES = 72  # issue 33: TrainConfig had grown to 104 leaf fields, most of them switches of
# variants that never beat CPCL; it was cut back to 72. A research variant goes to a plug-in (a label strategy,
# a bench row), not into the core: raise this number only for a field a user would set.


def leaf_fields(cls: type) -> list[str]:
    """The dotted leaf fields of a (nested) config dataclass."""
    import dataclasses

    leaves = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            leaves += [f"{f.name}.{leaf}" for leaf in leaf_fields(type(default))]
        else:
            leaves.append(f.name)
    return leaves


def test_train_config_does_not_regrow():
    from cpcl.engine.config import TrainConfig

    leaves = leaf_fields(TrainConfig)
    assert len(leaves) <= MAX_TRAIN_CONFIG_LEAVES, f"TrainConfig has {len(leaves)} leaf fields: {leaves}"
    assert "cluster.knn_backend" in leaves and not any(".search." in leaf for leaf in leaves)


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_run_saved_before_the_trim_still_loads(tmp_path):
    """config_before_issue33_cpcl_plus.yaml: cpcl_plus resolved and saved by cpcl before issue 33 (every field,
    the retired ones at their unused values, the moved ones at their old keys): a resume or a report of such a
    run reads it as today's cpcl_plus."""
    from cpcl.configs import resolve_config_path
    from cpcl.engine.config import TrainConfig, load_run_config

    saved = FIXTURES / "config_before_issue33_cpcl_plus.yaml"
    assert load_run_config(saved) == load_config(TrainConfig, resolve_config_path("cpcl_plus"))
    text = saved.read_text()
    used = tmp_path / "refined.yaml"  # a run that used a retired switch cannot be resumed or rebuilt
    used.write_text(text.replace("refine: 'off'", "refine: both"))
    with pytest.raises(ConfigError, match="config field 'labels[.][a-z_]+' was retired .* docs/experiments.md"):
        load_run_config(used)
    flat = tmp_path / "flat.yaml"  # a kNN engine chosen in the old place moves to the new one
    head, _, cluster = text.partition("\ncluster:\n")
    flat.write_text(head + "\ncluster:\n" + cluster.replace("knn_backend: auto", "knn_backend: flat", 1))
    assert load_run_config(flat).cluster.knn_backend == "flat"
    assert load_run_config(flat).eval.rerank_options.k1 == 20
    with pytest.raises(ConfigError, match="unknown config field|was retired"):
        load_config(TrainConfig, saved)  # a config a user gives is read as it is written


def test_a_run_saved_before_auto_knn_still_loads(tmp_path):
    """config_before_issue31_flat_knn.yaml: a run's config.yaml as the observed benchmark saved it (CPCL, seed 0),
    when knn_backend defaulted to flat and re-ranking had its own search section: both sections hold an exact
    engine, whose other options change only speed, so it loads as the run trained; an approximate engine with
    other settings than today's defaults cannot be reproduced, and is refused in one line."""
    from cpcl.engine.config import load_run_config

    saved = FIXTURES / "config_before_issue31_flat_knn.yaml"
    cfg = load_run_config(saved)
    assert (cfg.cluster.knn_backend, cfg.cluster.k1, cfg.eval.rerank_options.k1) == ("flat", 10, 20)
    assert cfg.cluster.config().search.knn_block == 4096  # the rest: today's library defaults
    text = saved.read_text()
    head, _, cluster = text.partition("\ncluster:\n")
    hnsw = tmp_path / "hnsw.yaml"
    hnsw.write_text(head + "\ncluster:\n" + cluster.replace("knn_backend: flat", "knn_backend: hnsw", 1)
                    .replace("hnsw_m: 32", "hnsw_m: 8", 1))
    with pytest.raises(ConfigError, match="cluster.search"):
        load_run_config(hnsw)


def test_every_shipped_training_config_loads():
    """The config trim keeps each shipped config valid (issue 33): a retired key in one would fail here."""
    import cpcl.configs
    from cpcl.engine.config import TrainConfig
    from cpcl.engine.pseudo_labels.registry import LABEL_STRATEGIES

    shipped = sorted(Path(cpcl.configs.__file__).parent.glob("*.yaml"))
    assert {path.stem for path in shipped} >= {"paper", "synthpedes", "cpcl_plus", "cuhk_pedes"}
    for path in shipped:
        cfg = load_config(TrainConfig, path)
        assert cfg.labels.mode in LABEL_STRATEGIES, path
