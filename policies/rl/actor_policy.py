"""A learner's actor as a :class:`~realloop.policies.chunk_policy.ChunkPolicy`, so ``realloop-eval``, the policy
runner and ``realloop-eval-graph`` run actor-critic policies exactly as they run imitation ones.

It holds what :meth:`SACLearner.actor_weights` hands an actor (``encoder.*``: the observation normaliser and the
image encoders; ``actor.*``: the tanh-Gaussian head) and acts with the deterministic action ``tanh(mean)`` mapped
to the env's action bounds: one observation step, a chunk of one action.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.rl.networks import FeatureEncoder, TanhGaussianActor

IDENTITY = {"action": "identity", "state": "identity", "image": "identity"}


class ActorPolicy(ChunkPolicy):
    """The deterministic policy of an actor-critic learner (see the module doc).

    Args:
        features: feature name -> schema dict for ``obs_keys`` and ``action_key``.
        obs_keys: the observations the learner sees.
        action_low, action_high: the env's action bounds, (A,).
        hidden_dims, image_encoder, image_feature_dim: the learner's (``SACConfig``), so the weights fit.
    """

    action_low: Tensor  # buffers
    action_high: Tensor

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
    ) -> None:
        # the encoder normalises (its own buffers, the learner's statistics); the base class's maps stay identity
        super().__init__(features, obs_keys, action_key, 1, 1, 1, IDENTITY)
        if len(action_low) != self.action_dim or len(action_high) != self.action_dim:
            raise ValueError(
                f"action bounds of length {len(action_low)} and {len(action_high)} for a {self.action_dim}-D action"
            )
        self.encoder = FeatureEncoder(self.obs_shapes, None, "identity", image_encoder, image_feature_dim)
        self.actor = TanhGaussianActor(self.encoder.out_dim, self.action_dim, tuple(hidden_dims))
        self.register_buffer("action_low", torch.tensor(list(action_low), dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(list(action_high), dtype=torch.float32))

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError("an ActorPolicy learns through its learner (realloop-finetune), not realloop-train")

    def sample_actions(self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """(B, 1, A): the deterministic action in env units for one observation step ``{key: (B, 1, ...)}``."""
        features = self.encoder({k: v[:, 0] for k, v in obs.items()})
        unit = self.actor.mode(features)
        return (self.action_low + (unit + 1.0) * 0.5 * (self.action_high - self.action_low))[:, None]
