"""Observation maps: where each observation feature of a policy comes from in an environment's observation.

realloop's tasks observe dicts keyed by the dataset's feature names, so their policies need no map. Any other
gymnasium environment needs one (``realloop-eval obs_map=...``): a mapping from policy feature name to a spec

    observation.state:            # a feature the policy sees
      source: agent_pos           # the dict observation's entry; null or omitted = the whole (array) observation
      index: [0, 2]               # optional: keep these entries of the flattened per-env value
    observation.environment_state:
      keys: [block_pos, block_yaw]  # instead of source: concatenate these dict entries (flattened, in order)

Shorthands: ``feature: agent_pos`` for ``{source: agent_pos}``, ``feature: null`` for the whole observation.
Features the map does not list are taken from the dict observation's entry of the same name. A map may also be
the name of a YAML file in configs/obs_map/ (``pendulum`` for configs/obs_map/pendulum.yaml) or a path to one.

Maps work on batched observations, as a vector env returns them: every array is ``(num_envs, ...)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from realloop.configs import ConfigNotFoundError, config_dir, config_file
from realloop.policies.chunk_policy import ChunkPolicy

OBS_MAP_DIR = config_dir("obs_map")  # realloop.configs: the checkout's configs/obs_map, or the installed copy
SPEC_FIELDS = ("source", "keys", "index")


class ObsMapError(ValueError):
    """An observation map is malformed, cannot be found, or does not fit the environment or the policy."""


@dataclass(frozen=True)
class ObsSource:
    """Where one feature comes from: a dict entry (``source``), several concatenated (``keys``) or the whole
    array observation (neither), optionally narrowed to some entries (``index``)."""

    source: str | None = None
    keys: tuple[str, ...] | None = None
    index: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, feature: str, spec: Any, where: str = "obs_map") -> ObsSource:
        if spec is None:
            return cls()
        if isinstance(spec, str):
            return cls(source=spec)
        if not isinstance(spec, Mapping):
            raise ObsMapError(
                f"{where}: {feature} must be a mapping like {{source: agent_pos, index: [0, 1]}}, a dict key or null, "
                f"not {spec!r}"
            )
        unknown = sorted(set(spec) - set(SPEC_FIELDS))
        if unknown:
            raise ObsMapError(f"{where}: {feature} has unknown fields {unknown}; the fields are {list(SPEC_FIELDS)}")
        source, keys, index = spec.get("source"), spec.get("keys"), spec.get("index")
        if source is not None and keys is not None:
            raise ObsMapError(f"{where}: {feature} gives both source and keys; use one of them")
        if keys is not None:
            if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
                raise ObsMapError(f"{where}: {feature}.keys must be a non-empty list of dict entries, not {keys!r}")
            keys = tuple(str(k) for k in keys)
        if index is not None:
            index = (index,) if isinstance(index, int) else index
            if not isinstance(index, Sequence) or not index or not all(isinstance(i, int) for i in index):
                raise ObsMapError(f"{where}: {feature}.index must be a non-empty list of integers, not {index!r}")
            index = tuple(int(i) for i in index)
        return cls(source=None if source is None else str(source), keys=keys, index=index)

    def describe(self) -> str:
        what = f"keys {list(self.keys)}" if self.keys else f"entry {self.source!r}" if self.source else "the whole obs"
        return what + (f", index {list(self.index)}" if self.index else "")


class ObsMap:
    """A parsed observation map (see the module doc); call it on a batched observation."""

    def __init__(self, sources: Mapping[str, ObsSource], name: str = "obs_map") -> None:
        self.sources = dict(sources)
        self.name = name

    @classmethod
    def parse(cls, spec: Mapping[str, Any], name: str = "obs_map") -> ObsMap:
        if not isinstance(spec, Mapping) or not spec:
            raise ObsMapError(f"{name} must be a non-empty mapping from policy feature to its source, not {spec!r}")
        return cls({str(k): ObsSource.parse(str(k), v, name) for k, v in spec.items()}, name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            k: {f: list(v) if isinstance(v, tuple) else v for f in SPEC_FIELDS if (v := getattr(s, f)) is not None}
            for k, s in self.sources.items()
        }

    def _entry(self, obs: Any, key: str | None, feature: str) -> np.ndarray:
        if key is None:
            if isinstance(obs, Mapping):
                raise ObsMapError(
                    f"{self.name}: {feature} takes the whole observation, but it is a dict with entries "
                    f"{sorted(obs)}; name one with source: <entry> (or several with keys: [...])"
                )
            return np.asarray(obs)
        if not isinstance(obs, Mapping):
            raise ObsMapError(
                f"{self.name}: {feature} takes entry {key!r}, but the observation is an array, not a dict; "
                "use source: null (and index: [...] to select entries)"
            )
        if key in obs:
            return np.asarray(obs[key])
        node: Any = obs
        for part in key.split("/"):  # nested dict observations: source: outer/inner
            if not isinstance(node, Mapping) or part not in node:
                raise ObsMapError(
                    f"{self.name}: {feature} takes entry {key!r}, which the observation lacks (it has {sorted(obs)})"
                )
            node = node[part]
        return np.asarray(node)

    def __call__(self, obs: Any) -> dict[str, np.ndarray]:
        """Policy features (each ``(num_envs, ...)``) from a batched observation."""
        out: dict[str, np.ndarray] = dict(obs) if isinstance(obs, Mapping) else {}
        for feature, src in self.sources.items():
            if src.keys:
                parts = [self._entry(obs, k, feature) for k in src.keys]
                x = np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)
            else:
                x = self._entry(obs, src.source, feature)
            if x.ndim == 0:
                raise ObsMapError(f"{self.name}: {feature} comes from a scalar; observations must be batched arrays")
            if src.index is not None:
                flat = x.reshape(len(x), -1)
                bad = [i for i in src.index if not -flat.shape[1] <= i < flat.shape[1]]
                if bad:
                    raise ObsMapError(
                        f"{self.name}: {feature}.index {list(src.index)} is out of range for {src.describe()} with "
                        f"{flat.shape[1]} entries per env"
                    )
                x = flat[:, list(src.index)]
            out[feature] = x
        return out


def load_obs_map(obs_map: Mapping[str, Any] | str | os.PathLike[str] | ObsMap | None) -> ObsMap | None:
    """An :class:`ObsMap` from a mapping, a YAML path or the name of a file in configs/obs_map/ (None: None)."""
    if obs_map is None or isinstance(obs_map, ObsMap):
        return obs_map
    if isinstance(obs_map, Mapping):
        return ObsMap.parse(obs_map)
    path = Path(obs_map)
    if not path.is_file():
        try:
            path = config_file("obs_map", path.name)
        except ConfigNotFoundError as e:
            raise ObsMapError(
                f"obs_map {str(obs_map)!r} is neither a YAML file nor one of configs/obs_map/: {e.known}; pass a "
                "path, a name from that folder or an inline mapping"
            ) from None
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ObsMapError(f"obs_map file {path} is not valid YAML: {e}") from e
    return ObsMap.parse(spec, name=f"obs_map {path.name}")


def default_obs_map(policy: ChunkPolicy, observation_space: gym.Space) -> ObsMap | None:
    """The map used without one: a dict observation as is, an array to the policy's only numeric feature."""
    if isinstance(observation_space, gym.spaces.Dict):
        return None
    numeric = [k for k in policy.obs_keys if not policy.features[k].is_image]
    if len(numeric) == 1 and len(policy.obs_keys) == 1:
        return ObsMap({numeric[0]: ObsSource()}, name="default obs map")
    raise ObsMapError(
        f"the environment observes one array of shape {observation_space.shape}, but the policy sees "
        f"{policy.obs_keys}; say where each comes from with obs_map (e.g. obs_map={{observation.state: "
        f"{{index: [0, 1]}}}} or a file in configs/obs_map/)"
    )


def check_mapped(mapped: Mapping[str, np.ndarray], policy: ChunkPolicy, num_envs: int, where: str) -> None:
    """Raise :class:`ObsMapError` unless ``mapped`` holds every feature of the policy with its per-step shape."""
    missing = [k for k in policy.obs_keys if k not in mapped]
    if missing:
        raise ObsMapError(
            f"{where} does not provide {missing} that the policy sees (it provides {sorted(mapped)}); map them "
            "with obs_map={feature: {source: <entry>}}"
        )
    for k in policy.obs_keys:
        x = np.asarray(mapped[k])
        f = policy.features[k]
        per_env = tuple(x.shape[1:])
        expected = tuple(f.shape)
        fits = per_env == expected or (f.is_image and per_env == expected[:2] and expected[2:] == (1,))
        if not f.is_image:
            fits = x.ndim >= 1 and int(np.prod(per_env)) == int(np.prod(expected)) and np.issubdtype(x.dtype, np.number)
        if x.shape[:1] != (num_envs,) or not fits:
            raise ObsMapError(
                f"{where} gives {k} shape {per_env} per env, the policy expects {expected}; fix the obs_map entry "
                f"for {k} (source, keys or index)"
            )
