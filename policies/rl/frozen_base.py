"""What the policies of fine-tuning around a frozen realloop-train policy share: the frozen policy (``base``), built
from the config its checkpoint stores, and the learner's actor (``actor``) beside it, as one checkpointable
:class:`~realloop.policies.chunk_policy.ChunkPolicy` with the frozen policy's history and chunk sizes.
:class:`~realloop.policies.rl.steer.NoiseSteeredPolicy` and :class:`~realloop.policies.rl.residual.ResidualPolicy`
are its two kinds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from realloop.policies.checkpoint import build_policy
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.rl.actor_policy import IDENTITY, ActorPolicy


class FrozenBasePolicy(ChunkPolicy):
    """A frozen policy and a learner's actor (see the module doc).

    Args:
        features: feature name -> schema dict, for ``obs_keys`` and ``action_key``.
        obs_keys: every observation either part sees.
        base: the frozen policy's ``policy`` config (``_target_`` and its keys, as its checkpoint stores it).
    """

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        base: Mapping[str, Any],
        action_key: str = "action",
    ) -> None:
        base_policy = build_policy(base, features)
        super().__init__(
            features, obs_keys, action_key, base_policy.n_obs_steps, base_policy.horizon, base_policy.n_action_steps,
            IDENTITY,
        )  # fmt: skip
        self.base = base_policy.requires_grad_(False)

    @staticmethod
    def build_actor(
        actor: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]], width: int, bound: float
    ) -> ActorPolicy:
        """The learner's actor from its :class:`ActorPolicy` keys (``obs_keys``, ``hidden_dims``, ...), seeing
        ``features`` of its ``obs_keys`` and acting in ``[-bound, bound]^width``."""
        keys = list(actor["obs_keys"])
        own = {**{k: features[k] for k in keys}, "action": {"dtype": "float32", "shape": [width]}}
        kwargs = {k: v for k, v in actor.items() if k not in ("obs_keys", "action_low", "action_high")}
        return ActorPolicy(own, keys, [-bound] * width, [bound] * width, **kwargs)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        obs: Mapping[str, Tensor],
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """The frozen policy's chunk for the observations it sees (``noise``: a diffusion policy's initial noise)."""
        return self.base.predict_action_chunk({k: obs[k] for k in self.base.obs_keys}, generator, noise=noise)

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(f"a {type(self).__name__} learns through realloop-finetune, not realloop-train")
