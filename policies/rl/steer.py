"""Fine-tuning a frozen diffusion policy by steering its sampler (DSRL, Wagenmaker et al. 2025): an actor-critic
learner chooses the initial noise of the diffusion policy's DDIM sampler, which stays a deterministic function of
that noise, so every action the robot runs is one the pretrained policy can make, and the learner only picks among
them.

- :class:`NoiseSteeredEnv`: the env seen by the learner. Its action is the noise of one chunk, ``horizon x
  action_dim`` values in [-bound, bound] (flat); a step runs the frozen policy with that noise on the observation
  history and executes the chunk's ``n_action_steps`` actions, returning the sum of their rewards (the chunk is one
  decision: the learner discounts once per chunk) and the last step's observation, termination and info. The
  episode ends inside a chunk when the env ends it.
- :class:`NoiseSteeredPolicy`: the fine-tuned policy as a checkpoint, the frozen policy plus the learner's
  deterministic actor, acting in the env's own action space like any :class:`ChunkPolicy`, so realloop-eval, the
  policy runner and realloop-eval-graph run it.

With a standard normal draw instead of the actor's noise both are the frozen policy itself; the actor's noise is
bounded, as DSRL bounds it (1.5 by default), so the sampler never sees noise far outside what it was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from realloop.policies.agent import PolicyAgent
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.rl.frozen_base import FrozenBasePolicy


def noise_shape(policy: DiffusionPolicy) -> tuple[int, int]:
    """(horizon, action_dim): the shape of the noise of one chunk."""
    return policy.horizon, policy.action_dim


class NoiseSteeredEnv(gym.Wrapper):
    """An env whose actions are a frozen diffusion policy's sampling noise (see the module doc).

    Args:
        env: the env the policy acts in (observations as the policy's features, its action space).
        policy: the frozen diffusion policy (eval mode; its weights are not changed).
        bound: the noise's bound: actions lie in [-bound, bound].
    """

    def __init__(self, env: gym.Env, policy: DiffusionPolicy, bound: float = 1.5) -> None:
        super().__init__(env)
        if not isinstance(policy, DiffusionPolicy):
            raise TypeError(f"noise steering needs a diffusion policy; got a {type(policy).__name__}")
        if bound <= 0:
            raise ValueError(f"the noise bound must be > 0, got {bound}")
        self.policy = policy.eval().requires_grad_(False)
        self.agent = PolicyAgent(self.policy)
        self.shape = noise_shape(policy)
        self.bound = float(bound)
        self.action_space = gym.spaces.Box(-bound, bound, (self.shape[0] * self.shape[1],), np.float32)
        self._obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.agent.reset()
        self._obs = obs
        return obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        noise = np.asarray(action, dtype=np.float32)
        if noise.shape != self.action_space.shape or not np.all(np.isfinite(noise)):
            raise ValueError(
                f"the noise action has shape {noise.shape} (finite values of shape {self.action_space.shape} expected)"
            )
        bound = self.bound
        noise = np.clip(noise, -bound, bound).reshape(self.shape)
        chunk = self.agent.action_chunk(self._obs, noise)
        total, steps = 0.0, 0
        obs, terminated, truncated = self._obs, False, False
        info: dict[str, Any] = {}
        for a in chunk:
            obs, reward, terminated, truncated, info = self.env.step(a)
            total += float(reward)
            steps += 1
            if terminated or truncated:
                break
            self.agent.observe(obs)  # the history the next chunk is sampled from
        self._obs = obs
        return obs, total, terminated, truncated, {**info, "chunk_steps": steps}


class NoiseSteeredPolicy(FrozenBasePolicy):
    """A frozen diffusion policy and the actor that chooses its noise, as one checkpointable policy.

    Args:
        features: feature name -> schema dict, for ``obs_keys`` and ``action_key``.
        obs_keys: every observation either part sees (the base's and the actor's).
        base: the frozen policy's ``policy`` config (``_target_`` and its keys, as its checkpoint stores it).
        actor: the :class:`ActorPolicy` keys of the learner's actor (``obs_keys``, ``hidden_dims``, ...), whose
            action is the noise; its bounds are ``[-bound, bound]``.
        bound: the noise bound of :class:`NoiseSteeredEnv`.
    """

    base: DiffusionPolicy

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        base: Mapping[str, Any],
        actor: Mapping[str, Any],
        bound: float = 1.5,
        action_key: str = "action",
    ) -> None:
        super().__init__(features, obs_keys, base, action_key)
        if not isinstance(self.base, DiffusionPolicy):
            raise TypeError(f"the steered policy must be a diffusion policy; its config builds a {type(self.base)}")
        h, a = noise_shape(self.base)
        self.actor = self.build_actor(actor, features, h * a, bound)

    def noise(self, obs: Mapping[str, Tensor]) -> Tensor:
        """The actor's noise ``(B, horizon, action_dim)`` for raw observation histories (it sees the last step)."""
        last = {k: obs[k][:, -1:] for k in self.actor.obs_keys}
        return self.actor.predict_action_chunk(last)[:, 0].reshape(-1, *noise_shape(self.base))

    @torch.no_grad()
    def predict_action_chunk(
        self,
        obs: Mapping[str, Tensor],
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """The frozen policy's chunk for the actor's noise (or for ``noise``, when given)."""
        return super().predict_action_chunk(obs, generator, self.noise(obs) if noise is None else noise)
