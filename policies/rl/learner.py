"""The learner seam: what every actor-critic learner (SAC/RLPD, Cal-QL pretraining, ...) offers the loops that
drive it, the replay buffer that feeds it and the actor processes that act for it.

A learner acts (:meth:`Learner.act`), learns from a batch (:meth:`Learner.update`) and exposes its state by name
(:meth:`Learner.modules`, :meth:`Learner.optimizers`, :meth:`Learner.extra_state`), which is all
``realloop.policies.rl.state`` needs to save and restore it exactly. An actor process (on the robot, or a sim
worker) needs only :meth:`Learner.actor_weights`: the learner publishes them, the actor loads them with
:meth:`Learner.load_actor_weights` into a learner built with the same arguments.

The batch (:class:`Batch`) is one layout for every learner, produced by the replay buffer: observations as a dict
of ``(B, *shape)`` arrays (state float32, images ``(B, C, H, W)`` uint8), actions in env units, and the
``discount`` of each transition's bootstrap, ``gamma**n * (1 - terminated)`` for an n-step transition, so a
learner never needs gamma, n or episode ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

ArrayLike = np.ndarray | Tensor
Observation = Mapping[str, ArrayLike]


class _BatchFields(TypedDict):
    observation: dict[str, ArrayLike]  # key -> (B, *shape): state float32, images (B, C, H, W) uint8
    action: ArrayLike  # (B, A) float32, env units
    reward: ArrayLike  # (B,) float32
    discount: ArrayLike  # (B,) float32: gamma**n * (1 - terminated); 0 after a terminal step
    next_observation: dict[str, ArrayLike]  # as observation, n steps later
    online: ArrayLike  # (B,) bool: collected by the learning policy (False: demonstrations, offline data)


class Batch(_BatchFields, total=False):
    """A batch of B transitions (numpy arrays or tensors)."""

    succeeded: ArrayLike  # (B,) bool: the transition's episode reached success (the replay buffer gives it)


class Learner(ABC):
    """The interface every learner implements. See the module docstring for how the pieces are used."""

    @abstractmethod
    def act(self, obs: Observation, explore: bool) -> np.ndarray:
        """Actions for a batch of observations ``{key: (B, *shape)}``: (B, A) float32 in env units, or (B, H, A)
        for a learner over action chunks, sampled from the policy when ``explore``, else its deterministic action.
        No gradient, no change to the learner."""

    @abstractmethod
    def update(self, batch: Batch) -> dict[str, float]:
        """Learn from one batch (one gradient step, or as many as the learner's recipe takes per batch); returns
        the step's metrics (losses, Q-values, temperature...) as plain floats."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state is part of the learner's, by name (e.g. actor, critic, critic_target,
        encoder); buffers such as observation normalisers included."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser, by name."""

    @abstractmethod
    def actor_weights(self) -> dict[str, Tensor]:
        """What an actor process needs to act, as one flat state dict (CPU tensors, detached copies)."""

    @abstractmethod
    def load_actor_weights(self, weights: Mapping[str, Tensor]) -> None:
        """Load what :meth:`actor_weights` of a learner built with the same arguments returned."""

    def extra_state(self) -> dict[str, Any]:
        """Plain JSON state outside modules and optimisers (step counters...); empty by default."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 (optional override, no state)
        """Restore what :meth:`extra_state` returned."""
