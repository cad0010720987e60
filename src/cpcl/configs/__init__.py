"""Shipped run configs (YAML). `-c NAME` finds `NAME.yaml` here when NAME is not a file path."""

from __future__ import annotations

from pathlib import Path

from cpcl.utils.errors import ConfigError

CONFIG_DIR = Path(__file__).parent


def shipped_configs() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A path to an existing YAML file, or the name of a shipped config."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a shipped config; "
                      f"shipped: {', '.join(shipped_configs())}")
