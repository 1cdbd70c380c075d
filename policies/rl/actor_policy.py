"""A learner's actor as a :class:`~realloop.policies.chunk_policy.ChunkPolicy`, so ``realloop-eval``, the policy
runner and ``realloop-eval-graph`` run actor-critic policies exactly as they run imitation ones.

It holds what :meth:`SACLearner.actor_weights` hands an actor (``encoder.*``: the observation normaliser and the
image encoders; ``actor.*``: the tanh-Gaussian head) and acts with the deterministic action ``tanh(mean)`` mapped
to the env's action bounds: one observation step, a chunk of one action (or of ``action_chunk`` actions, for a
learner over action chunks), all of which the runner executes. Action dims the learner did not act on
(realloop-finetune's ``hold_actions``) are filled with their held values; a gripper the learner chose with a grasp
critic (``grasp_critic.*``) takes the state that critic rates best.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.rl.networks import FeatureEncoder, TanhGaussianActor, grasp_critic

IDENTITY = {"action": "identity", "state": "identity", "image": "identity"}


class ActorPolicy(ChunkPolicy):
    """The deterministic policy of an actor-critic learner (see the module doc).

    Args:
        features: feature name -> schema dict for ``obs_keys`` and ``action_key``.
        obs_keys: the observations the learner sees.
        action_low, action_high: the env's action bounds, (A,).
        hidden_dims, image_encoder, image_feature_dim: the learner's (``SACConfig``), so the weights fit.
        held_dims, held_values: action dims the actor does not output and their values (env units); the actor
            outputs the other dims, in order.
        action_chunk: H, actions per chunk (the actor's output is H actions' free dims, flat).
        grasp_dim: the action dim (an index into the whole action) a grasp critic chooses, at its lower or upper
            bound; the actor outputs the other free dims. ``critic_layer_norm`` is the learner's, so its weights fit.
    """

    action_low: Tensor  # buffers: the bounds of the dims the actor outputs, and the full action with held values
    action_high: Tensor
    held_action: Tensor

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        action_low: Sequence[float],
        action_high: Sequence[float],
        action_key: str = "action",
        hidden_dims: Sequence[int] = (256, 256),
        image_encoder: str = "small",
        image_feature_dim: int = 64,
        held_dims: Sequence[int] = (),
        held_values: Sequence[float] = (),
        action_chunk: int = 1,
        grasp_dim: int | None = None,
        critic_layer_norm: bool = True,
    ) -> None:
        # the encoder normalises (its own buffers, the learner's statistics); the base class's maps stay identity
        super().__init__(features, obs_keys, action_key, 1, action_chunk, action_chunk, IDENTITY)
        if len(action_low) != self.action_dim or len(action_high) != self.action_dim:
            raise ValueError(
                f"action bounds of length {len(action_low)} and {len(action_high)} for a {self.action_dim}-D action"
            )
        held = [int(i) for i in held_dims]
        a = self.action_dim
        if len(held) != len(held_values) or len(set(held)) != len(held) or not all(0 <= i < a for i in held):
            raise ValueError(f"held_dims {held} must be distinct dims of the {a}-D action, one value each")
        self.free_dims = [i for i in range(self.action_dim) if i not in held]
        self.grasp: int | None = None  # the grasp dim's position among the free dims
        if grasp_dim is not None:
            if grasp_dim not in self.free_dims or action_chunk != 1:
                raise ValueError(f"grasp_dim {grasp_dim} must be a dim the learner acts on (not held), with chunk 1")
            self.grasp = self.free_dims.index(grasp_dim)
        self.actor_dims = [i for i in range(len(self.free_dims)) if i != self.grasp]  # positions among the free
        self.encoder = FeatureEncoder(self.obs_shapes, None, "identity", image_encoder, image_feature_dim)
        width = self.encoder.out_dim
        self.actor = TanhGaussianActor(width, action_chunk * len(self.actor_dims), tuple(hidden_dims))
        if self.grasp is not None:
            self.grasp_critic = grasp_critic(width, tuple(hidden_dims), critic_layer_norm)
        low = torch.tensor(list(action_low), dtype=torch.float32)
        high = torch.tensor(list(action_high), dtype=torch.float32)
        held_action = torch.zeros(self.action_dim)
        held_action[held] = torch.tensor(list(held_values), dtype=torch.float32)
        self.register_buffer("action_low", low[self.free_dims])
        self.register_buffer("action_high", high[self.free_dims])
        self.register_buffer("held_action", held_action)

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError("an ActorPolicy learns through its learner (realloop-finetune), not realloop-train")

    def sample_actions(self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """(B, H, A): the deterministic actions in env units for one observation step ``{key: (B, 1, ...)}``."""
        features = self.encoder({k: v[:, 0] for k, v in obs.items()})
        b = features.shape[0]
        unit = features.new_empty(b, self.horizon, len(self.free_dims))  # the free dims in [-1, 1]
        unit[..., self.actor_dims] = self.actor.mode(features).unflatten(-1, (self.horizon, len(self.actor_dims)))
        if self.grasp is not None:
            state = self.grasp_critic(features).mean(dim=0).argmax(dim=-1)  # (B,): 0 lower bound, 1 upper
            unit[..., self.grasp] = (state.float() * 2.0 - 1.0)[:, None]
        action = self.held_action.expand(b, self.horizon, -1).clone()
        action[..., self.free_dims] = self.action_low + (unit + 1.0) * 0.5 * (self.action_high - self.action_low)
        return action
