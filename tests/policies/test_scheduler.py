"""The diffusion noise scheduler: schedules, forward noising, and DDIM / DDPM sampling against oracle models
whose exact answer is known (a point-mass data distribution, and a Gaussian one)."""

from __future__ import annotations

import math

import pytest
import torch

from realloop.policies.diffusion.scheduler import NoiseScheduler


def test_cosine_schedule():
    s = NoiseScheduler(100)
    abar = s.alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (100,)
    assert (abar[1:] < abar[:-1]).all()
    assert abar[0] > 0.999 and abar[-1] < 1e-3
    assert s.betas.max() <= 0.999
    # Away from the cap, abar follows the closed form cos^2((t/T + s) / (1 + s) * pi / 2) / f(0).
    f = [math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(101)]
    for t in (0, 10, 50, 90):
        assert abar[t].item() == pytest.approx(f[t + 1] / f[0], rel=1e-9)


def test_linear_schedule():
    s = NoiseScheduler(50, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_cumprod[-1].item() == pytest.approx(math.prod(1 - b for b in s.betas.tolist()), rel=1e-12)


def test_add_noise_closed_form_and_dtype():
    s = NoiseScheduler(100)
    torch.manual_seed(0)
    x0, noise = torch.randn(4, 16, 2), torch.randn(4, 16, 2)
    t = torch.tensor([0, 10, 57, 99])
    xt = s.add_noise(x0, noise, t)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    for i, ti in enumerate(t.tolist()):
        abar = s.alphas_cumprod[ti].item()
        torch.testing.assert_close(xt[i], math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i])
    assert s.add_noise(x0.half(), noise.half(), t).dtype == torch.float16
    assert s.add_noise(x0.double(), noise, t).dtype == torch.float64
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        s.add_noise(x0, noise, torch.tensor([0, 1, 2, 100]))
    with pytest.raises(ValueError, match="integer"):
        s.add_noise(x0, noise, t.float())
    with pytest.raises(ValueError, match="shape"):
        s.add_noise(x0, noise, t[:3])


def test_target():
    x0, noise = torch.zeros(2, 3), torch.ones(2, 3)
    assert NoiseScheduler(prediction_type="epsilon").target(x0, noise) is noise
    assert NoiseScheduler(prediction_type="sample").target(x0, noise) is x0


def test_inference_timesteps_leading_spacing():
    s = NoiseScheduler(100)
    assert s.inference_timesteps(10) == list(range(90, -1, -10))
    assert s.inference_timesteps(100) == list(range(99, -1, -1))
    assert s.inference_timesteps(1) == [0]
    ts = s.inference_timesteps(30)
    assert ts == list(range(87, -1, -3))  # 30 steps of 100 // 30 = 3, ending at 0


class PointMassOracle:
    """The exact denoiser when the data is always ``x0``; records what it was called with."""

    def __init__(self, scheduler: NoiseScheduler, x0: torch.Tensor) -> None:
        self.s, self.x0 = scheduler, x0
        self.timesteps: list[torch.Tensor] = []
        self.eps: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(t)
        abar = self.s.alphas_cumprod[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        eps = (x - abar.sqrt() * self.x0) / (1 - abar).sqrt()
        self.eps.append(eps)
        return eps if self.s.prediction_type == "epsilon" else self.x0.expand_as(x)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
@pytest.mark.parametrize("steps", [10, 100])
def test_ddim_with_oracle_returns_x0(prediction_type, steps):
    s = NoiseScheduler(100, prediction_type=prediction_type)
    x0 = torch.linspace(-0.9, 0.9, 16 * 2).reshape(16, 2)
    oracle = PointMassOracle(s, x0)
    out = s.sample(oracle, (3, 16, 2), steps, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(out, x0.double().expand(3, 16, 2), atol=1e-4, rtol=0)
    assert [t.tolist() for t in oracle.timesteps] == [[t] * 3 for t in s.inference_timesteps(steps)]
    assert all(t.dtype == torch.long and t.shape == (3,) for t in oracle.timesteps)
    # Deterministic DDIM with an exact denoiser stays on one ODE path: the implied noise never changes.
    for eps in oracle.eps[1:]:
        torch.testing.assert_close(eps, oracle.eps[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_ddpm_with_oracle_returns_x0(prediction_type):
    s = NoiseScheduler(100, prediction_type=prediction_type)
    x0 = torch.linspace(-0.9, 0.9, 8 * 3).reshape(8, 3)
    oracle = PointMassOracle(s, x0)
    out = s.sample(oracle, (4, 8, 3), 100, generator=torch.Generator().manual_seed(1), method="ddpm")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x0.expand(4, 8, 3), atol=1e-4, rtol=0)
    assert [t[0].item() for t in oracle.timesteps] == list(range(99, -1, -1))
    # Ancestral sampling is stochastic: the intermediate states differ from deterministic DDIM's.
    ddim = PointMassOracle(s, x0)
    s.sample(ddim, (4, 8, 3), 100, generator=torch.Generator().manual_seed(1), method="ddim")
    assert not torch.allclose(oracle.eps[50], ddim.eps[50], atol=1e-3)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_sampling_recovers_a_gaussian_data_distribution(method):
    # Data x0 ~ N(mu, sd^2): E[x0 | x_t] is linear in x_t, so the exact denoiser is known. Over 1000 steps both
    # samplers must reproduce the data distribution.
    mu, sd = 0.5, 0.3
    s = NoiseScheduler(1000, prediction_type="epsilon", clip_sample=False)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = s.alphas_cumprod[t].float().reshape(-1, 1)
        x0 = mu + abar.sqrt() * sd**2 / (abar * sd**2 + 1 - abar) * (x - abar.sqrt() * mu)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    out = s.sample(model, (20_000, 1), 1000, generator=torch.Generator().manual_seed(0), method=method)
    assert out.mean().item() == pytest.approx(mu, abs=0.01)  # standard error 0.002
    assert out.std().item() == pytest.approx(sd, abs=0.01)


def test_clip_sample_and_reproducibility():
    clipped = NoiseScheduler(100, prediction_type="sample", clip_sample=True, clip_sample_range=0.5)

    def far(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 3.0)

    out = clipped.sample(far, (2, 4), 10)
    torch.testing.assert_close(out, torch.full((2, 4), 0.5))
    unclipped = NoiseScheduler(100, prediction_type="sample", clip_sample=False)
    torch.testing.assert_close(unclipped.sample(far, (2, 4), 10), torch.full((2, 4), 3.0))

    s = NoiseScheduler(100)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x

    for method in ("ddim", "ddpm"):
        a = s.sample(model, (2, 4), 100, generator=torch.Generator().manual_seed(3), method=method)
        b = s.sample(model, (2, 4), 100, generator=torch.Generator().manual_seed(3), method=method)
        c = s.sample(model, (2, 4), 100, generator=torch.Generator().manual_seed(4), method=method)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.allclose(a, c)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="linear, squaredcos_cap_v2"):
        NoiseScheduler(beta_schedule="cosine")
    with pytest.raises(ValueError, match="epsilon, sample"):
        NoiseScheduler(prediction_type="v_prediction")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        NoiseScheduler(0)
    s = NoiseScheduler(100)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x

    for steps in (0, 101):
        with pytest.raises(ValueError, match=r"\[1, 100\]"):
            s.sample(model, (1, 2), steps)
    with pytest.raises(ValueError, match="ddim, ddpm"):
        s.sample(model, (1, 2), 10, method="euler")
