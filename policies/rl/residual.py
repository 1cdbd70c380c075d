"""Residual RL on a frozen chunked policy (ResiP, Ankile et al. 2024; Policy Decorator, Yuan et al. 2024): the
pretrained policy runs its action chunks as it always does, and a small actor adds a bounded correction to every
action, seeing the step's observation and the base policy's action there.

- :class:`ResidualEnv`: the env seen by the learner. Its observation is the env's plus ``observation.base_action``
  (the frozen policy's action for this step: its chunks executed open loop, a new one every ``n_action_steps``);
  its action is the residual in [-1, 1] per action dim, run as :func:`residual_action`.
- :class:`ResidualPolicy`: the fine-tuned policy as a checkpoint, the frozen policy plus the learner's
  deterministic actor. Its chunks are the frozen policy's and its ``refine_action`` adds the actor's correction at
  every step, so realloop-eval, the policy runner and realloop-eval-graph run it like any other policy.

A zero residual is the frozen policy itself: realloop-finetune zero-initialises the actor's mean, so the policy of
step 0 is exactly the pretrained one, and grows the correction's scale from 0 over ``residual_warmup`` env steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from realloop.policies.agent import PolicyAgent
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.rl.frozen_base import FrozenBasePolicy

BASE_ACTION = "observation.base_action"
Array = TypeVar("Array", np.ndarray, Tensor)


def residual_action(base: Array, residual: Array, scale: float, low: Array, high: Array) -> Array:
    """The action run: ``base + scale * residual`` per dim in units of half the action range, within the bounds.
    numpy arrays or tensors (``low``, ``high`` of the same kind)."""
    return (base + scale * 0.5 * (high - low) * residual).clip(low, high)


class ResidualEnv(gym.Wrapper):
    """An env whose actions are corrections of a frozen policy's actions (see the module doc).

    Args:
        env: the env the policy acts in (observations as the policy's features, a Dict space; a Box action space).
        policy: the frozen policy (eval mode; its weights are not changed). A stochastic one samples each episode's
            chunks from the episode's reset seed.
        scale: the largest correction, as a fraction of half the action range.
    """

    def __init__(self, env: gym.Env, policy: ChunkPolicy, scale: float = 0.1) -> None:
        super().__init__(env)
        if scale <= 0:
            raise ValueError(f"the residual scale must be > 0, got {scale}")
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or space.shape != (policy.action_dim,):
            raise ValueError(f"the env's action space {space} is not the policy's ({policy.action_dim} values)")
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise ValueError(f"the env's observation space is {env.observation_space}; a residual needs a Dict")
        self.policy = policy.eval().requires_grad_(False)
        self.agent = PolicyAgent(self.policy, seed=0)
        self.scale = float(scale)
        self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)
        base = gym.spaces.Box(self.low, self.high, dtype=np.float32)
        self.observation_space = gym.spaces.Dict({**env.observation_space.spaces, BASE_ACTION: base})
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self._base = np.zeros(space.shape, np.float32)

    def _observe(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The observation with the frozen policy's action for this step (which advances its chunk)."""
        self._base = self.agent.step({k: np.asarray(v)[None] for k, v in obs.items()})[0].astype(np.float32)
        return {**obs, BASE_ACTION: self._base}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.agent.reset()
        if seed is not None:
            assert self.agent.generator is not None  # made with a seed
            self.agent.generator.manual_seed(int(seed))
        return self._observe(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        residual = np.asarray(action, dtype=np.float32)
        if residual.shape != self.action_space.shape or not np.all(np.isfinite(residual)):
            raise ValueError(
                f"the residual action has shape {residual.shape} (finite values of shape {self.action_space.shape} "
                "expected)"
            )
        run = residual_action(self._base, np.clip(residual, -1.0, 1.0), self.scale, self.low, self.high)
        obs, reward, terminated, truncated, info = self.env.step(run)
        # also at an episode's end: a truncated episode's last value needs the base action of its last state
        return self._observe(obs), float(reward), terminated, truncated, info


class ResidualPolicy(FrozenBasePolicy):
    """A frozen chunked policy and the actor that corrects its actions, as one checkpointable policy.

    Args:
        features: feature name -> schema dict, for ``obs_keys`` and ``action_key``.
        obs_keys: every observation either part sees (the base's and the actor's, without the base action).
        base: the frozen policy's ``policy`` config (``_target_`` and its keys, as its checkpoint stores it).
        actor: the :class:`ActorPolicy` keys of the learner's actor (``obs_keys`` with ``observation.base_action``,
            ``hidden_dims``, ...), whose action is the residual in [-1, 1].
        scale: the correction's scale (see :func:`residual_action`).
        action_low, action_high: the env's action bounds.
    """

    refines_actions = True
    action_low: Tensor
    action_high: Tensor

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        base: Mapping[str, Any],
        actor: Mapping[str, Any],
        scale: float,
        action_low: Sequence[float],
        action_high: Sequence[float],
        action_key: str = "action",
    ) -> None:
        super().__init__(features, obs_keys, base, action_key)
        a = self.action_dim
        if len(action_low) != a or len(action_high) != a:
            raise ValueError(f"action bounds of length {len(action_low)} and {len(action_high)} for a {a}-D action")
        self.actor_keys = list(actor["obs_keys"])
        if BASE_ACTION not in self.actor_keys:
            raise ValueError(f"the residual actor's obs_keys {self.actor_keys} lack {BASE_ACTION!r}")
        base_action = {BASE_ACTION: {"dtype": "float32", "shape": [a]}}
        self.actor = self.build_actor(actor, {**features, **base_action}, a, 1.0)
        self.scale = float(scale)
        self.register_buffer("action_low", torch.tensor(list(action_low), dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(list(action_high), dtype=torch.float32))

    @torch.no_grad()
    def refine_action(self, obs: Mapping[str, Tensor], action: Tensor) -> Tensor:
        """The frozen policy's ``action`` (B, A) plus the actor's correction for this step's observation."""
        seen = {k: obs[k][:, None] for k in self.actor_keys if k != BASE_ACTION}
        residual = self.actor.predict_action_chunk({**seen, BASE_ACTION: action[:, None]})[:, 0]
        return residual_action(action, residual, self.scale, self.action_low, self.action_high)
