"""Config machinery: YAML bases, dotted overrides, typed validation, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
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
