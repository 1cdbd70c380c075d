"""Configuration files (YAML) shipped with realloop: robot specs, tasks, collection, training, evaluation,
node graphs; and :func:`compose`, which the hydra CLIs' ``compose_config`` helpers share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent  # the checkout's configs/, or realloop/configs/ when installed


def compose(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """A hydra config of this folder with ``key=value`` overrides, without running hydra's app (for scripts
    and tests); returns an omegaconf ``DictConfig``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
