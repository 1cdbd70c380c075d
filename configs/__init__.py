"""Configuration files (YAML) shipped with realloop: robot specs, tasks, collection, training, evaluation,
node graphs; :func:`compose`, which the hydra CLIs' ``compose_config`` helpers share; and :func:`config_file`,
through which every other piece of code finds a config file (one way to find configs/, in a checkout or installed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent  # the checkout's configs/, or realloop/configs/ when installed


class ConfigNotFoundError(FileNotFoundError):
    """A named config is not in its group's folder; the message lists the names that are (also ``.known``)."""

    def __init__(self, group: str, name: str, path: Path, known: list[str]) -> None:
        self.group, self.name, self.path, self.known = group, name, path, known
        super().__init__(f"no {group} config {name!r}: {path} does not exist; known: {', '.join(known) or 'none'}")


def config_dir(group: str) -> Path:
    """The folder of a config group: ``config_dir("graph")`` is ``CONFIG_DIR / "graph"`` (it may not exist)."""
    return CONFIG_DIR / group


def config_names(group: str) -> list[str]:
    """The names of a group's YAML files (``graph`` -> ``["real_arm_policy", ...]``), sorted; partials whose
    name starts with ``_`` (``task/_arm.yaml``, a base other files extend) are left out; [] without the folder."""
    return sorted(p.stem for p in config_dir(group).glob("*.yaml") if not p.stem.startswith("_"))


def config_file(group: str, name: str) -> Path:
    """The path of ``configs/<group>/<name>.yaml`` (``name`` with or without ``.yaml``); raises
    :class:`ConfigNotFoundError` (a ``FileNotFoundError``) naming the group's known configs when it is missing."""
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    path = config_dir(group) / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigNotFoundError(group, name, path, config_names(group))
    return path


def compose(config_name: str, overrides: Sequence[str] = ()) -> Any:
    """A hydra config of this folder with ``key=value`` overrides, without running hydra's app (for scripts
    and tests); returns an omegaconf ``DictConfig``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
