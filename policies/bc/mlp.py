"""MLP behaviour cloning with action chunks: the baseline the diffusion policy is measured against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.encoders import ObservationEncoder


class MLPPolicy(ChunkPolicy):
    """Regresses the whole normalised action chunk from the encoded observation history with an MLP (the
    same encoder as the diffusion policy), trained with an L1 or MSE loss. Deterministic, one forward pass."""

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        action_key: str = "action",
        n_obs_steps: int = 2,
        horizon: int = 16,
        n_action_steps: int = 8,
        normalization: Mapping[str, str] | None = None,
        crop: Sequence[int] | None = None,
        image_feature_dim: int = 64,
        share_image_encoder: bool = False,
        image_encoder: str = "resnet18",
        color_jitter: float = 0.0,
        hidden_dims: Sequence[int] = (512, 512, 512),
        dropout: float = 0.1,
        loss: str = "l1",
    ) -> None:
        super().__init__(features, obs_keys, action_key, n_obs_steps, horizon, n_action_steps, normalization)
        if loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
        self.loss = loss
        self.encoder = ObservationEncoder(
            self.obs_shapes,
            tuple(crop) if crop else None,
            image_feature_dim,
            share_image_encoder,
            image_encoder,
            color_jitter,
        )
        layers: list[nn.Module] = []
        width = self.encoder.out_dim(self.n_obs_steps)
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.Mish(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, self.horizon * self.action_dim))
        self.mlp = nn.Sequential(*layers)

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred = self.sample_actions(self.normalize_obs(batch))
        target = self.normalizer.normalize(self.action_key, batch[self.action_key])
        loss = (F.l1_loss if self.loss == "l1" else F.mse_loss)(pred.float(), target.float())
        return loss, {"loss": loss.detach()}

    def sample_actions(self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.mlp(self.encoder(obs))
        return out.reshape(out.shape[0], self.horizon, self.action_dim)
