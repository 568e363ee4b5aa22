"""Where the package's data lives: config files, launch files and shipped models.

In a source checkout (or a venv install from it) they sit next to the package directory; after
``colcon build`` they are installed under ``share/dream_vla_ros`` and found through the ament index.
"""

from __future__ import annotations

import functools
from pathlib import Path

PACKAGE = "dream_vla_ros"


@functools.cache
def share_dir() -> Path:
    """The directory holding ``config/``, ``launch/`` and ``models/``."""
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "config").is_dir() and (source_root / "package.xml").is_file():
        return source_root
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - ament index absent or package not installed: fall back to source
        return source_root


def config_dir() -> Path:
    return share_dir() / "config"


def models_dir() -> Path:
    return share_dir() / "models"


def resolve_config(name_or_path: str | Path) -> Path:
    """A config given by name (``sim_arm``) or by path (``./my.yaml``) -> its path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return config_dir() / f"{name_or_path}.yaml"


def resolve_model(name_or_path: str | Path) -> Path:
    """A shipped model given by name (``metaworld_mt10``) or a model directory path -> its path."""
    candidate = Path(name_or_path)
    if candidate.exists() or candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate
    return models_dir() / candidate


def find_models(root: Path | None = None) -> list[Path]:
    """Model directories (holding ``config.json``) directly under ``root`` (default: shipped models)."""
    root = root or models_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file())
