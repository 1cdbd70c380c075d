"""The diffusion noise schedule: forward noising for training and DDIM / DDPM sampling for inference.

Sampling timesteps use "leading" spacing (as diffusers' default): with T train steps and n inference steps the
model is queried at t = k * (T // n) for k = n-1, ..., 0, e.g. 90, 80, ..., 0 for T=100, n=10. The step after
t=0 uses alpha_cumprod = 1 (diffusers' ``set_alpha_to_one``), so the last step returns the predicted clean sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample")
SAMPLING_METHODS = ("ddim", "ddpm")


def _cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> Tensor:
    # Nichol & Dhariwal (2021): alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), betas from its ratios.
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


class NoiseScheduler:
    """Variance-preserving diffusion over ``num_train_timesteps`` steps.

    ``alphas_cumprod`` (float64 tensor, CPU) is abar_t; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.
    The model predicts the noise (``prediction_type="epsilon"``) or the clean sample (``"sample"``).
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "squaredcos_cap_v2",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = float(clip_sample_range)
        if beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, self.num_train_timesteps, dtype=torch.float64)
        else:
            self.betas = _cosine_betas(self.num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    # -- training ---------------------------------------------------------------------------------------------

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t for clean samples ``x0`` (B, ...), ``noise`` like x0, integer ``timesteps`` (B,); dtype of x0."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
        if timesteps.ndim != 1 or timesteps.shape[0] != x0.shape[0] or timesteps.is_floating_point():
            got = f"{timesteps.dtype} {tuple(timesteps.shape)}"
            raise ValueError(f"timesteps must be an integer tensor of shape ({x0.shape[0]},), got {got}")
        lo, hi = int(timesteps.min()), int(timesteps.max())
        if lo < 0 or hi >= self.num_train_timesteps:
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}], got [{lo}, {hi}]")
        abar = self.alphas_cumprod.to(x0.device)[timesteps.long()]
        shape = (-1,) + (1,) * (x0.ndim - 1)
        # Coefficients in float64, then cast: keeps sqrt(1 - abar) accurate near t=0 even for half-precision x0.
        signal = abar.sqrt().to(x0.dtype).reshape(shape)
        sigma = (1.0 - abar).sqrt().to(x0.dtype).reshape(shape)
        return signal * x0 + sigma * noise.to(x0.dtype)

    def target(self, x0: Tensor, noise: Tensor) -> Tensor:
        """What the model is trained to predict: the noise ("epsilon") or the clean sample ("sample")."""
        return noise if self.prediction_type == "epsilon" else x0

    # -- inference --------------------------------------------------------------------------------------------

    def inference_timesteps(self, num_inference_steps: int) -> list[int]:
        """The descending timesteps sampling visits: k * (T // n) for k = n-1, ..., 0 ("leading" spacing)."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must lie in [1, {self.num_train_timesteps}] (num_train_timesteps), "
                f"got {num_inference_steps}"
            )
        step = self.num_train_timesteps // num_inference_steps
        return [k * step for k in reversed(range(num_inference_steps))]

    def _abar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    @staticmethod
    def initial_noise(
        shape: tuple[int, ...],
        noise: Tensor | None,
        generator: torch.Generator | None,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> Tensor:
        """The sample sampling starts from: ``noise`` when given (checked against ``shape``), else a standard normal
        draw from ``generator`` (on its own device) or the global generator; on ``device``, as ``dtype``."""
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"noise has shape {tuple(noise.shape)}, the sample has shape {tuple(shape)}")
            return noise.to(device=device, dtype=dtype)
        source = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)

    def denoised(self, out: Tensor, x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """The model's estimate of the clean sample and of the noise, from its output ``out`` for ``x`` at
        timestep ``t``; the clean estimate clamped to +-clip_sample_range with ``clip_sample`` (the noise estimate
        is kept as predicted, as diffusers' DDIM does)."""
        abar_t = self._abar(t)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
        else:
            x0 = out
            eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0, eps

    @torch.no_grad()
    def sample(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        shape: tuple[int, ...],
        num_inference_steps: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        method: str = "ddim",
        noise: Tensor | None = None,
    ) -> Tensor:
        """Denoise Gaussian noise of ``shape`` (batch first) with ``model(x_t, t)``, t a (B,) long tensor.

        "ddim": deterministic DDIM (eta = 0). "ddpm": ancestral DDPM sampling (fixed-small posterior variance);
        with ``num_inference_steps == num_train_timesteps`` that is the classic sampler over every train step,
        fewer steps stride over the schedule the same way as DDIM (as diffusers' DDPMScheduler does).
        With ``clip_sample`` the predicted clean sample is clamped to +-clip_sample_range at each step.
        Runs under ``torch.no_grad``; noise is drawn from ``generator`` (on its own device) when given.
        ``noise`` (of ``shape``) is the initial sample instead of a draw: DDIM is then a deterministic function of it.
        """
        if method not in SAMPLING_METHODS:
            raise ValueError(f"unknown sampling method {method!r}; valid: {', '.join(SAMPLING_METHODS)}")
        timesteps = self.inference_timesteps(num_inference_steps)
        stride = self.num_train_timesteps // num_inference_steps
        device = torch.device(device) if device is not None else torch.device("cpu")

        def randn() -> Tensor:
            return self.initial_noise(shape, None, generator, device, dtype)

        x = self.initial_noise(shape, noise, generator, device, dtype)
        for t in timesteps:
            t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
            x0, eps = self.denoised(model(x, t_batch).to(dtype), x, t)
            abar_t, abar_prev = self._abar(t), self._abar(t - stride)
            if method == "ddim":
                x = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
            else:
                alpha = abar_t / abar_prev  # the product of alphas between the two visited timesteps
                beta = 1 - alpha
                x = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * x0 + (
                    math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
                ) * x
                if t > 0:
                    variance = max((1 - abar_prev) / (1 - abar_t) * beta, 1e-20)
                    x = x + math.sqrt(variance) * randn()
        return x
