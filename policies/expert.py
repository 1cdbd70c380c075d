"""A sim task's scripted expert as a policy (one-step chunks): what drives the graph before a learned one."""

from __future__ import annotations

from typing import Any

import numpy as np


class ExpertPolicy:
    """Wraps ``realloop.sim.experts.make_expert``. The expert reads privileged state from ``env`` (object poses),
    so ``env`` must be kept in sync with the robot and the scene (``sync_robot``, ``set_task_state``)."""

    def __init__(self, env: Any, seed: int | None = None):
        from realloop.sim.experts import make_expert

        self.env, self.seed = env, seed
        self.expert = make_expert(env)
        self.episodes = 0
        self.reset()

    def reset(self) -> None:
        seed = None if self.seed is None else int(self.seed) + self.episodes
        self.expert.reset(np.random.default_rng(seed))
        self.episodes += 1

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        """The expert acts on the current state only."""

    def action_chunk(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.expert.act(obs), dtype=np.float32)[None]
