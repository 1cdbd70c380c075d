"""The normaliser: per-feature affine maps from the dataset's statistics, kept as buffers in the policy's state.

Because the maps are buffers of the policy module, they travel in every checkpoint's weights and a loaded
policy normalises exactly as it did in training, with no dataset at hand. Modes:

- ``min_max``: [min, max] -> [-1, 1] (diffusion_policy's choice for actions and low-dimensional observations:
  the diffusion model's samples are clipped to [-1, 1]);
- ``mean_std``: zero mean, unit variance (images, per channel);
- ``identity``: unchanged.

A constant entry (max - min or std below ``EPS``) keeps scale 1 and is only centred, so it maps to 0 instead
of blowing up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

MODES = ("min_max", "mean_std", "identity")
EPS = 1e-6


def buffer_name(key: str) -> str:
    """A feature name as a module name (module names cannot contain dots)."""
    return key.replace(".", "__")


class _Affine(nn.Module):
    """``normalised = (x - offset) * scale`` for one feature."""

    offset: torch.Tensor  # buffers
    scale: torch.Tensor

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(tuple(shape)))
        self.register_buffer("scale", torch.ones(tuple(shape)))


class Normalizer(nn.Module):
    """Normalises and unnormalises features by name.

    Args:
        shapes: feature name -> shape of the statistics (a sample's shape; ``(C, 1, 1)`` for images).
        modes: feature name -> one of :data:`MODES`.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], modes: Mapping[str, str]) -> None:
        super().__init__()
        bad = {k: m for k, m in modes.items() if m not in MODES}
        if bad:
            raise ValueError(f"unknown normalisation modes {bad}; use one of {MODES}")
        missing = sorted(set(shapes) - set(modes))
        if missing:
            raise ValueError(f"no normalisation mode for {missing}")
        self.modes = {k: modes[k] for k in shapes}
        self.maps = nn.ModuleDict({buffer_name(k): _Affine(s) for k, s in shapes.items()})

    def set_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """Fill the maps from dataset statistics (``realloop.data.stats.load_stats`` form)."""
        for key, mode in self.modes.items():
            if mode == "identity":
                continue
            if key not in stats:
                raise KeyError(
                    f"the dataset statistics have no entry for {key!r}; compute them with "
                    f"`realloop-dataset stats PATH --features {key}`"
                )
            s = {k: np.asarray(v, dtype=np.float64) for k, v in stats[key].items()}
            if mode == "min_max":
                lo, hi = s["min"], s["max"]
                span = hi - lo
                scale = np.where(span > EPS, 2.0 / np.maximum(span, EPS), 1.0)
                offset = (hi + lo) / 2.0
            else:
                scale = 1.0 / np.maximum(s["std"], EPS)
                offset = s["mean"]
            affine = self._affine(key)
            if np.shape(scale) != tuple(affine.scale.shape):
                raise ValueError(
                    f"statistics of {key!r} have shape {np.shape(scale)}, the policy expects "
                    f"{tuple(affine.scale.shape)}: the dataset does not match the policy's features"
                )
            affine.offset.copy_(torch.as_tensor(offset, dtype=torch.float32))
            affine.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def _affine(self, key: str) -> _Affine:
        return cast(_Affine, self.maps[buffer_name(key)])  # maps holds an _Affine per feature

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        m = self._affine(key)
        return (x - m.offset) * m.scale

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        m = self._affine(key)
        return x / m.scale + m.offset

    def describe(self) -> dict[str, dict[str, Any]]:
        """The maps as JSON (mode, offset, scale per feature): a readable copy for the checkpoint folder."""
        return {
            k: {
                "mode": mode,
                "offset": self._affine(k).offset.cpu().tolist(),
                "scale": self._affine(k).scale.cpu().tolist(),
            }
            for k, mode in self.modes.items()
        }
