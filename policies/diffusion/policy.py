"""The diffusion policy (Chi et al. 2023): DDPM training, DDIM inference of action chunks, conditioned by
FiLM on the encoded observation history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.diffusion.scheduler import NoiseScheduler
from realloop.policies.diffusion.unet import ConditionalUnet1D
from realloop.policies.encoders import ObservationEncoder


class DiffusionPolicy(ChunkPolicy):
    """Denoises a normalised action chunk ``(horizon, action_dim)`` with a 1-D temporal U-Net whose blocks are
    FiLM-conditioned on the diffusion step and the observation features (state vectors, and per-camera image
    encoders with random-crop augmentation: ResNet-18/GroupNorm, or a small conv net for CPUs).

    ``num_inference_steps`` DDIM steps at inference (10 by default; the model trains on
    ``num_train_timesteps`` DDPM steps). Other arguments: see :class:`ChunkPolicy`, ``ObservationEncoder``,
    ``ConditionalUnet1D`` and ``NoiseScheduler``.
    """

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
        down_dims: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        diffusion_step_embed_dim: int = 128,
        num_train_timesteps: int = 100,
        num_inference_steps: int = 10,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
    ) -> None:
        super().__init__(features, obs_keys, action_key, n_obs_steps, horizon, n_action_steps, normalization)
        self.encoder = ObservationEncoder(
            self.obs_shapes,
            tuple(crop) if crop else None,
            image_feature_dim,
            share_image_encoder,
            image_encoder,
            color_jitter,
        )
        self.unet = ConditionalUnet1D(
            self.action_dim,
            self.encoder.out_dim(self.n_obs_steps),
            diffusion_step_embed_dim=diffusion_step_embed_dim,
            down_dims=tuple(down_dims),
            kernel_size=kernel_size,
            n_groups=n_groups,
        )
        self.scheduler = NoiseScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
        )
        if not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}")
        self.num_inference_steps = int(num_inference_steps)

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cond = self.encoder(self.normalize_obs(batch))
        actions = self.normalizer.normalize(self.action_key, batch[self.action_key])
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (actions.shape[0],), device=actions.device)
        pred = self.unet(self.scheduler.add_noise(actions, noise, t), t, cond)
        loss = F.mse_loss(pred.float(), self.scheduler.target(actions, noise).float())
        return loss, {"loss": loss.detach()}

    def denoise_once(self, cond: torch.Tensor, x: torch.Tensor, timestep: int) -> torch.Tensor:
        """The normalised chunk the model estimates, in one U-Net pass, from ``x`` (B, horizon, A) taken as the
        sample at ``timestep``, for encoded observations ``cond`` (with gradients: a one-step sampler trains it)."""
        t = torch.full((x.shape[0],), timestep, dtype=torch.long, device=x.device)
        return self.scheduler.denoised(self.unet(x, t, cond), x, timestep)[0]

    def sample_actions(
        self,
        obs: Mapping[str, torch.Tensor],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised chunks for normalised observations; ``noise`` (B, horizon, A) is the sampler's initial
        noise instead of a draw from ``generator``."""
        cond = self.encoder(obs)
        shape = (cond.shape[0], self.horizon, self.action_dim)
        return self.scheduler.sample(
            lambda x, t: self.unet(x, t, cond),
            shape,
            self.num_inference_steps,
            generator=generator,
            device=cond.device,
            dtype=cond.dtype,
            noise=noise,
        )
