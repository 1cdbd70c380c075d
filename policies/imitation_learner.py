"""Imitation behind the learner seam: a chunk policy (diffusion, BC) trained by supervised steps on demonstration
windows, with AdamW, gradient clipping and an optional EMA copy that is the policy it acts and exports with.

realloop-train drives it (:class:`~realloop.policies.train.Trainer`: data order, schedule, DDP, checkpoints), and
its training state is saved and restored by :mod:`realloop.policies.rl.state` exactly as an actor-critic
learner's, so a checkpoint of either holds one kind of learner state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.rl.learner import Learner, Observation

LossFn = Callable[[Mapping[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


def ema_decay(step: int, max_decay: float, power: float) -> float:
    """diffusion_policy's warm-up: the decay grows as 1 - (1 + step)^-power, capped at ``max_decay``."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


def make_ema(policy: ChunkPolicy, max_decay: float, power: float) -> AveragedModel:
    """An EMA copy of ``policy`` (buffers included) whose decay follows :func:`ema_decay`."""

    def avg(averaged: Tensor, current: Tensor, n: Tensor | int) -> Tensor:
        return averaged.lerp(current, 1.0 - ema_decay(int(n), max_decay, power))

    return AveragedModel(policy, avg_fn=avg, use_buffers=True)


class ImitationLearner(Learner):
    """A chunk policy and its optimiser as a :class:`~realloop.policies.rl.learner.Learner`.

    ``update`` takes a batch of raw windows (as :class:`~realloop.data.training.WindowDataset` yields them), takes
    one AdamW step on the policy's loss and updates the EMA. ``loss_fn`` (default: the policy's ``compute_loss``)
    may be replaced by a wrapper of it (DistributedDataParallel, ``torch.compile``); ``autocast`` gives the
    context each forward runs in (bf16 on CUDA). A caller that must act between the forward and the step (DDP
    ranks agreeing on the loss) uses :meth:`loss` and :meth:`step` instead of :meth:`update`."""

    def __init__(
        self,
        policy: ChunkPolicy,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        grad_clip: float = float("inf"),
        ema: tuple[float, float] | None = None,
        autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ) -> None:
        self.policy = policy
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.ema = make_ema(policy, *ema) if ema is not None else None
        self.loss_fn: LossFn = policy.compute_loss
        self.autocast = autocast

    def inference_model(self) -> ChunkPolicy:
        """What acts, is evaluated and is exported: the EMA copy when EMA is on, else the policy."""
        return cast(ChunkPolicy, self.ema.module) if self.ema is not None else self.policy

    def loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch (on the policy's device) and its metrics; no step taken."""
        with self.autocast():
            return self.loss_fn(batch)

    def step(self, loss: Tensor) -> None:
        """Backpropagate ``loss``, clip the gradient norm, take the optimiser step, update the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.policy)

    def update(self, batch: Mapping[str, Tensor]) -> dict[str, float]:  # type: ignore[override]
        loss, metrics = self.loss(batch)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"the training loss is {float(loss)}; lower the learning rate or check the data")
        self.step(loss)
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def act(self, obs: Observation, explore: bool) -> np.ndarray:
        """Action chunks ``(B, n_action_steps, A)`` for raw observation histories ``{key: (B, n_obs_steps, ...)}``
        (a diffusion policy samples whether or not ``explore``)."""
        model = self.inference_model()
        training = model.training
        model.eval()  # no dropout when acting; training goes on in the mode it was in
        try:
            tensors = {k: torch.as_tensor(v, device=model.device) for k, v in obs.items()}
            return model.predict_action_chunk(tensors).float().cpu().numpy()
        finally:
            model.train(training)

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, **({"ema": self.ema} if self.ema is not None else {})}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.optimizer}

    def actor_weights(self) -> dict[str, Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.inference_model().state_dict().items()}

    def load_actor_weights(self, weights: Mapping[str, Tensor]) -> None:
        self.inference_model().load_state_dict(dict(weights))
