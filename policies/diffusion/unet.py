"""The 1-D temporal U-Net of the diffusion policy (Chi et al., 2023): denoises an action sequence (B, T, A),
conditioned on the diffusion step and a global observation vector through FiLM in every residual block."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (B,) tensor of (diffusion step) positions -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, got {dim}")
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -scale)
        args = x.float()[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM between them: Mish -> Linear(cond_dim, 2 * out_channels) gives a per-channel
    scale and bias applied to the first block's output; 1x1 conv residual when the channel counts differ.

    forward: x (B, in_channels, T), cond (B, cond_dim) -> (B, out_channels, T).
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int = 5, n_groups: int = 8):
        super().__init__()
        self.out_channels = out_channels
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups),
            ]
        )
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual_conv: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        out = self.blocks[0](x)
        scale, bias = self.cond_encoder(cond).unsqueeze(-1).chunk(2, dim=1)  # each (B, out_channels, 1)
        out = self.blocks[1](scale * out + bias)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """The diffusion_policy temporal U-Net.

    ``down_dims`` are the channel counts of the levels; each level but the last halves the sequence length, so T
    must be divisible by ``2 ** (len(down_dims) - 1)``. Every residual block is conditioned on
    concat(step embedding, global_cond).

    forward: sample (B, T, input_dim), timestep (B,) / scalar tensor / python number, global_cond
    (B, global_cond_dim) -> (B, T, input_dim).
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        diffusion_step_embed_dim: int = 128,
        down_dims: Sequence[int] = (128, 256, 512),
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        super().__init__()
        if not down_dims:
            raise ValueError("down_dims must name at least one level")
        self.input_dim = input_dim
        self.global_cond_dim = global_cond_dim
        self.down_dims = tuple(int(d) for d in down_dims)
        self.step_embed_dim = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(diffusion_step_embed_dim),
            nn.Linear(diffusion_step_embed_dim, diffusion_step_embed_dim * 4),
            nn.Mish(),
            nn.Linear(diffusion_step_embed_dim * 4, diffusion_step_embed_dim),
        )
        cond_dim = diffusion_step_embed_dim + global_cond_dim

        def block(c_in: int, c_out: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(c_in, c_out, cond_dim, kernel_size, n_groups)

        all_dims = [input_dim, *self.down_dims]
        in_out = list(itertools.pairwise(all_dims))
        self.down_modules = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(in_out):
            is_last = i == len(in_out) - 1
            downsample = nn.Identity() if is_last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down_modules.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), downsample]))
        mid = all_dims[-1]
        self.mid_modules = nn.ModuleList([block(mid, mid), block(mid, mid)])
        # One up level per downsampling: the deepest skip joins the mid output at the bottom resolution, each up
        # level then doubles the length back; the first level's skip is not used (as in diffusion_policy).
        self.up_modules = nn.ModuleList()
        for c_in, c_out in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList([block(c_out * 2, c_in), block(c_in, c_in), nn.ConvTranspose1d(c_in, c_in, 4, 2, 1)])
            )
        start = self.down_dims[0]
        self.final_conv = nn.Sequential(
            Conv1dBlock(start, start, kernel_size, n_groups), nn.Conv1d(start, input_dim, 1)
        )

    @property
    def horizon_multiple(self) -> int:
        """T must be a multiple of this."""
        return 2 ** (len(self.down_dims) - 1)

    def forward(self, sample: Tensor, timestep: Tensor | int | float, global_cond: Tensor | None = None) -> Tensor:
        if sample.ndim != 3 or sample.shape[-1] != self.input_dim:
            raise ValueError(f"sample must be (B, T, {self.input_dim}), got {tuple(sample.shape)}")
        b, t = sample.shape[:2]
        if t % self.horizon_multiple:
            fix = math.ceil(t / self.horizon_multiple) * self.horizon_multiple
            raise ValueError(
                f"sequence length {t} is not divisible by {self.horizon_multiple} = 2 ** (len(down_dims) - 1) for "
                f"down_dims={self.down_dims}; use a horizon that is a multiple of {self.horizon_multiple} "
                f"(e.g. {fix}) or fewer down_dims"
            )
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        if timesteps.shape != (b,):
            raise ValueError(f"timestep must be a scalar or have shape ({b},), got {tuple(timesteps.shape)}")
        cond = self.diffusion_step_encoder(timesteps).to(sample.dtype)
        if self.global_cond_dim:
            if global_cond is None or tuple(global_cond.shape) != (b, self.global_cond_dim):
                got = None if global_cond is None else tuple(global_cond.shape)
                raise ValueError(f"global_cond must be ({b}, {self.global_cond_dim}), got {got}")
            cond = torch.cat([cond, global_cond.to(sample.dtype)], dim=-1)
        elif global_cond is not None and global_cond.numel():
            raise ValueError("this U-Net was built with global_cond_dim=0 but got a global_cond")

        x = sample.transpose(1, 2)  # (B, input_dim, T): Conv1d runs over time
        skips = []
        for stage in self.down_modules:
            res1, res2, downsample = cast(nn.ModuleList, stage)  # each stage: [block, block, resampling]
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for res in self.mid_modules:
            x = res(x, cond)
        for stage in self.up_modules:
            res1, res2, upsample = cast(nn.ModuleList, stage)
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(res2(res1(x, cond), cond))
        return self.final_conv(x).transpose(1, 2)
