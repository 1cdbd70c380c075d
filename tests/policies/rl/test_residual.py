"""Residual RL on a frozen chunked policy: the env the learner acts in, and the policy it yields, on the arm lift
task with real physics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from lift_policy import ENV, KEYS, base_config

import realloop.sim  # noqa: F401  (registers the tasks)
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import load_policy, save_checkpoint
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.rl.residual import BASE_ACTION, ResidualEnv, ResidualPolicy, residual_action

RESIDUAL = "realloop.policies.rl.residual.ResidualPolicy"


def bounds() -> tuple[np.ndarray, np.ndarray]:
    space = gym.make(ENV).action_space
    return space.low, space.high


def test_a_zero_residual_is_the_frozen_policy_and_a_residual_moves_its_actions(base: DiffusionPolicy) -> None:
    """With zero residuals the wrapper runs the frozen policy step by step (its chunks sampled from the episode's
    seed), and shows the learner the action it is about to correct; a residual is added in half-range units."""
    env = ResidualEnv(gym.make(ENV), base, scale=0.2)
    plain = gym.make(ENV)
    agent = PolicyAgent(base, seed=3)  # the wrapper samples an episode's chunks from its reset seed
    obs_r, _ = env.reset(seed=3)
    obs_p, _ = plain.reset(seed=3)
    assert env.action_space.shape == (base.action_dim,) and float(env.action_space.high[0]) == 1.0
    assert BASE_ACTION in env.observation_space.spaces
    for _ in range(base.n_action_steps + 3):  # into the second chunk
        planned = agent.step({k: np.asarray(v)[None] for k, v in obs_p.items()})[0]
        np.testing.assert_array_equal(obs_r[BASE_ACTION], planned)
        obs_r, reward_r, *_ = env.step(np.zeros(base.action_dim, np.float32))
        obs_p, reward_p, *_ = plain.step(planned)
        assert reward_r == reward_p
        for k in KEYS:
            np.testing.assert_array_equal(obs_r[k], obs_p[k])

    low, high = env.low, env.high
    r = np.linspace(-1, 1, base.action_dim).astype(np.float32)
    ran = residual_action(obs_r[BASE_ACTION], r, 0.2, low, high)
    expected = np.clip(obs_r[BASE_ACTION] + 0.2 * 0.5 * (high - low) * r, low, high)
    np.testing.assert_allclose(ran, expected, rtol=1e-6)
    before = obs_p["observation.state"]
    obs_p, *_ = plain.step(ran)
    obs_r, *_ = env.step(r)
    np.testing.assert_array_equal(obs_r["observation.state"], obs_p["observation.state"])
    assert not np.allclose(obs_r["observation.state"], before)


def test_bad_residuals_and_misfit_envs_are_refused(base: DiffusionPolicy) -> None:
    env = ResidualEnv(gym.make(ENV), base)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="residual action has shape"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="finite values"):
        env.step(np.full(base.action_dim, np.nan, np.float32))
    with pytest.raises(ValueError, match="residual scale must be > 0"):
        ResidualEnv(gym.make(ENV), base, scale=0)
    with pytest.raises(ValueError, match="not the policy's"):
        ResidualEnv(gym.make("Pendulum-v1"), base)


def actor_config() -> dict:
    return {"obs_keys": [*KEYS, BASE_ACTION], "hidden_dims": [32, 32]}


def residual_policy(base: DiffusionPolicy, features: dict, scale: float = 0.5) -> ResidualPolicy:
    low, high = bounds()
    torch.manual_seed(1)
    policy = ResidualPolicy(features, KEYS, base_config(), actor_config(), scale, low.tolist(), high.tolist())
    policy.base.load_state_dict(base.state_dict())
    return policy.eval()


def test_the_residual_policy_runs_the_base_chunks_and_corrects_every_step(
    base: DiffusionPolicy, features: dict, tmp_path
) -> None:
    policy = residual_policy(base, features)
    obs = {k: torch.randn(2, base.n_obs_steps, features[k]["shape"][0]) * 0.3 for k in KEYS}
    g = torch.Generator().manual_seed(0)
    chunk = policy.predict_action_chunk(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(chunk, base.predict_action_chunk(obs, g))
    step = {k: v[:, -1] for k, v in obs.items()}
    action = chunk[:, 0]
    refined = policy.refine_action(step, action)
    residual = policy.actor.predict_action_chunk({**{k: v[:, None] for k, v in step.items()},
                                                  BASE_ACTION: action[:, None]})[:, 0]  # fmt: skip
    assert residual.abs().max() > 0
    low, high = policy.action_low, policy.action_high
    torch.testing.assert_close(refined, (action + 0.5 * 0.5 * (high - low) * residual).clamp(low, high))

    # PolicyAgent runs the correction for every action it hands out, vectorised and as the runner's Policy
    env_obs = {k: np.asarray(v[:, -1]) for k, v in obs.items()}
    batched = PolicyAgent(policy, num_envs=2, seed=0).step(env_obs)
    plain = PolicyAgent(base, num_envs=2, seed=0).step(env_obs)
    assert not np.allclose(batched, plain)
    one = PolicyAgent(policy, seed=0)
    single = {k: v[0] for k, v in env_obs.items()}
    one.observe(single)
    base_first = one.action_chunk(single)[0]
    np.testing.assert_allclose(
        one.refine(base_first), policy.refine_action({k: torch.as_tensor(v[:1]) for k, v in env_obs.items()},
                                                     torch.as_tensor(base_first)[None])[0].numpy(), rtol=1e-6,
    )  # fmt: skip

    config = {"policy": {"_target_": RESIDUAL, "name": "residual", "obs_keys": KEYS, "base": base_config(),
                         "actor": actor_config(), "scale": 0.5, "action_low": bounds()[0].tolist(),
                         "action_high": bounds()[1].tolist()}}  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", policy, config, {})
    loaded = load_policy(tmp_path / "ckpt").policy
    assert loaded.refines_actions
    torch.testing.assert_close(loaded.refine_action(step, action), refined)


def test_a_zero_initialised_actor_leaves_the_base_policy_exactly(base: DiffusionPolicy, features: dict) -> None:
    policy = residual_policy(base, features)
    with torch.no_grad():
        policy.actor.actor.mean.weight.zero_()
        policy.actor.actor.mean.bias.zero_()
    env_obs = {k: np.random.default_rng(0).normal(0, 0.3, (3, features[k]["shape"][0])) for k in KEYS}
    low, high = bounds()  # what runs is within the bounds, as every env and the runner clip it
    base_actions = PolicyAgent(base, num_envs=3, seed=0).step(env_obs)
    np.testing.assert_array_equal(PolicyAgent(policy, num_envs=3, seed=0).step(env_obs), base_actions.clip(low, high))


def test_a_residual_policy_without_the_base_action_is_refused(base: DiffusionPolicy, features: dict) -> None:
    low, high = bounds()
    with pytest.raises(ValueError, match=r"lack 'observation\.base_action'"):
        ResidualPolicy(features, KEYS, base_config(), {"obs_keys": KEYS}, 0.1, low.tolist(), high.tolist())
    with pytest.raises(ValueError, match="action bounds of length 2"):
        ResidualPolicy(features, KEYS, base_config(), actor_config(), 0.1, [0, 0], [1, 1])
