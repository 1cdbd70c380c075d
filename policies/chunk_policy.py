"""ChunkPolicy: the base of realloop's learned policies (diffusion, MLP behaviour cloning).

A policy is an ``nn.Module`` built from the dataset's feature schema. It sees ``n_obs_steps`` of observation
history and models an action chunk of ``horizon`` steps that starts with the oldest observation
(diffusion_policy's convention, the windows of ``WindowDataset.for_policy``); at run time it executes
``n_action_steps`` of it, starting at the current step.

- ``compute_loss(batch)`` takes a training batch of raw (unnormalised) features and returns the loss;
- ``predict_action_chunk(obs)`` takes raw observation histories ``(B, n_obs_steps, ...)`` and returns raw
  actions ``(B, n_action_steps, action_dim)``.

Normalisation happens inside, with the :class:`Normalizer` held in the module's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from realloop.data.schema import Feature
from realloop.policies.normalize import Normalizer

DEFAULT_NORMALIZATION = {"action": "min_max", "state": "min_max", "image": "mean_std"}


class ChunkPolicy(nn.Module):
    """Shared by every learned policy: features, history and chunk sizes, the normaliser.

    Args:
        features: feature name -> schema dict (``Feature.to_dict()``) for ``obs_keys`` and ``action_key``.
        obs_keys: observation features the policy sees (numeric vectors and ``observation.images.<cam>``).
        n_obs_steps: observation history length.
        horizon: length of the modelled action chunk, starting at the oldest observation.
        n_action_steps: actions executed per prediction, starting at the current step.
        normalization: mode per kind (``action``, ``state`` for numeric observations, ``image``) or per
            feature name; see :mod:`realloop.policies.normalize`.
    """

    refines_actions = False  # True: refine_action corrects each step's action (see there)

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        n_action_steps: int = 8,
        normalization: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        missing = [k for k in [*obs_keys, action_key] if k not in features]
        if missing:
            raise KeyError(f"the policy needs features {missing}, the dataset has {sorted(features)}")
        if not obs_keys:
            raise ValueError("obs_keys is empty: name the observation features the policy sees")
        if n_obs_steps < 1 or horizon < 1:
            raise ValueError("n_obs_steps and horizon must be at least 1")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps={n_action_steps} must be in [1, horizon - n_obs_steps + 1 = "
                f"{horizon - n_obs_steps + 1}]: the chunk starts at the oldest observation"
            )
        self.features = {k: Feature.from_dict(k, features[k]) for k in [*obs_keys, action_key]}
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.n_obs_steps, self.horizon, self.n_action_steps = int(n_obs_steps), int(horizon), int(n_action_steps)
        action = self.features[action_key]
        if action.is_image or len(action.shape) != 1:
            raise ValueError(f"the action feature {action_key!r} must be a vector, it has shape {action.shape}")
        self.action_dim = int(action.shape[0])
        self.image_keys = [k for k in self.obs_keys if self.features[k].is_image]
        for k in self.obs_keys:
            f = self.features[k]
            if not f.is_image and len(f.shape) != 1:
                raise ValueError(f"observation {k!r} has shape {f.shape}; numeric observations must be vectors")

        norm = {**DEFAULT_NORMALIZATION, **(normalization or {})}
        modes, shapes = {}, {}
        for k, f in self.features.items():
            kind = "action" if k == action_key else "image" if f.is_image else "state"
            modes[k] = norm.get(k, norm[kind])
            shapes[k] = (f.shape[-1], 1, 1) if f.is_image else tuple(f.shape)
        self.normalizer = Normalizer(shapes, modes)

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-step input shapes of the observation encoder: ``(C, H, W)`` for images, ``(D,)`` otherwise."""
        out = {}
        for k in self.obs_keys:
            s = self.features[k].shape
            out[k] = (s[2], s[0], s[1]) if self.features[k].is_image else tuple(s)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.buffers()).device

    def normalize_obs(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k in self.obs_keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks {missing}; the policy sees {self.obs_keys}")
        out = {}
        for k in self.obs_keys:
            x = obs[k]
            expected = (self.n_obs_steps, *self.obs_shapes[k])
            if tuple(x.shape[1:]) != expected:
                dims = ", ".join(map(str, expected))
                raise ValueError(f"{k} has shape {tuple(x.shape)}, the policy expects (batch, {dims})")
            out[k] = self.normalizer.normalize(k, x)
        return out

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch of raw windows and a dict of scalar metrics to log."""
        raise NotImplementedError

    def sample_actions(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised action chunks ``(B, horizon, action_dim)`` for normalised observation histories."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_action_chunk(
        self,
        obs: Mapping[str, torch.Tensor],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw actions ``(B, n_action_steps, action_dim)`` from the current step on, for raw histories; ``noise``
        is a sampling policy's initial noise (a diffusion policy's ``(B, horizon, action_dim)``) instead of a draw."""
        normalized = self.normalize_obs(obs)
        if noise is None:
            chunk = self.sample_actions(normalized, generator)
        else:
            chunk = self.sample_actions(normalized, generator, noise=noise)  # type: ignore[call-arg]
        actions = self.normalizer.unnormalize(self.action_key, chunk.float())
        start = self.n_obs_steps - 1
        return actions[:, start : start + self.n_action_steps]

    def refine_action(self, obs: Mapping[str, torch.Tensor], action: torch.Tensor) -> torch.Tensor:
        """The action to run this step: ``action`` (B, action_dim) is the chunk's, ``obs`` this step's raw
        observation ``{key: (B, ...)}``. The chunk's action by default; a policy that sets ``refines_actions``
        corrects it every step (a residual policy), and everything that runs policies calls this then."""
        return action

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"obs_keys={self.obs_keys}, action_dim={self.action_dim}, n_obs_steps={self.n_obs_steps}, "
            f"horizon={self.horizon}, n_action_steps={self.n_action_steps}, "
            f"params={self.num_parameters() / 1e6:.2f}M"
        )
