"""Noise-space steering of a frozen diffusion policy: the env the learner acts in, and the policy it yields, on the
arm lift task with real physics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from lift_policy import ENV, KEYS, base_config

import realloop.sim  # noqa: F401  (registers the tasks)
from realloop.policies.agent import PolicyAgent
from realloop.policies.bc.mlp import MLPPolicy
from realloop.policies.checkpoint import load_policy, save_checkpoint
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.rl.steer import NoiseSteeredEnv, NoiseSteeredPolicy


def test_a_step_runs_the_frozen_policy_with_the_chosen_noise(base: DiffusionPolicy) -> None:
    """Stepping the wrapper with noise z is running the policy's DDIM chunk for z in the env, step by step."""
    steered = NoiseSteeredEnv(gym.make(ENV), base, bound=1.5)
    plain = gym.make(ENV)
    agent = PolicyAgent(base)
    obs_s, _ = steered.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    rng = np.random.default_rng(0)
    h, a = base.horizon, base.action_dim
    assert steered.action_space.shape == (h * a,) and float(steered.action_space.high[0]) == 1.5
    for _ in range(3):
        z = rng.uniform(-1.5, 1.5, size=h * a).astype(np.float32)
        obs_s, reward, terminated, truncated, info = steered.step(z)
        chunk = agent.action_chunk(obs_p, z.reshape(h, a))
        total = 0.0
        for act in chunk:
            obs_p, r, *_ = plain.step(act)
            total += float(r)
            agent.observe(obs_p)
        assert info["chunk_steps"] == base.n_action_steps == len(chunk)
        assert reward == pytest.approx(total)
        assert not (terminated or truncated)
        for k in KEYS:
            np.testing.assert_array_equal(obs_s[k], obs_p[k])
    # other noise, other actions: the learner's choice matters
    steered.reset(seed=3)
    first = steered.step(np.zeros(h * a, np.float32))[0]
    steered.reset(seed=3)
    other = steered.step(np.full(h * a, 1.5, np.float32))[0]
    assert not np.allclose(first["observation.state"], other["observation.state"])


def test_an_episode_ends_inside_a_chunk(base: DiffusionPolicy) -> None:
    steered = NoiseSteeredEnv(gym.make(ENV, max_episode_steps=5), base)
    steered.reset(seed=0)
    _, _, terminated, truncated, info = steered.step(np.zeros(steered.action_space.shape, np.float32))
    assert truncated and not terminated and info["chunk_steps"] == 5


def test_bad_noise_and_a_policy_without_noise_are_refused(base: DiffusionPolicy, features: dict) -> None:
    steered = NoiseSteeredEnv(gym.make(ENV), base)
    steered.reset(seed=0)
    with pytest.raises(ValueError, match="noise action has shape"):
        steered.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="finite values"):
        steered.step(np.full(steered.action_space.shape, np.nan, np.float32))
    bc = MLPPolicy(features, KEYS)
    with pytest.raises(TypeError, match="needs a diffusion policy"):
        NoiseSteeredEnv(gym.make(ENV), bc)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bound must be > 0"):
        NoiseSteeredEnv(gym.make(ENV), base, bound=0)


def test_the_steered_policy_acts_with_its_actors_noise_and_survives_a_checkpoint(
    base: DiffusionPolicy, features: dict, tmp_path
) -> None:
    actor = {"obs_keys": KEYS, "hidden_dims": [32, 32]}
    torch.manual_seed(1)
    policy = NoiseSteeredPolicy(features, KEYS, base=base_config(), actor=actor, bound=1.5)
    policy.base.load_state_dict(base.state_dict())
    policy.eval()
    obs = {k: torch.randn(2, base.n_obs_steps, features[k]["shape"][0]) * 0.3 for k in KEYS}
    noise = policy.noise(obs)
    assert noise.shape == (2, base.horizon, base.action_dim) and noise.abs().max() <= 1.5
    chunk = policy.predict_action_chunk(obs)
    np.testing.assert_allclose(chunk, base.predict_action_chunk(obs, noise=noise), atol=1e-6)
    assert chunk.shape == (2, base.n_action_steps, base.action_dim)

    config = {"policy": {"_target_": "realloop.policies.rl.steer.NoiseSteeredPolicy", "name": "noise",
                         "obs_keys": KEYS, "base": base_config(), "actor": actor, "bound": 1.5}}  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", policy, config, {})
    loaded = load_policy(tmp_path / "ckpt").policy
    np.testing.assert_allclose(loaded.predict_action_chunk(obs), chunk, atol=1e-6)
