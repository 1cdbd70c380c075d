"""The scripted-expert interface and the task -> expert table."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from realloop.registry import Registry
from realloop.sim.envs.base import RobotEnv

# task class name -> its Expert class, called as Expert(task)
EXPERTS = Registry("expert", {
    "ArmReachEnv": "realloop.sim.experts.arm:ReachExpert",
    "ArmLiftEnv": "realloop.sim.experts.arm:LiftExpert",
    "ArmPushTEnv": "realloop.sim.experts.arm:PushTExpert",
    "QuadWalkEnv": "realloop.sim.experts.gait:GaitExpert",
})  # fmt: skip


class Expert:
    """A scripted policy for one task. It may read the true sim state through `self.env` (it is privileged).

    `reset(rng)` after each `env.reset()`; `act(obs)` returns an action in the env's control mode. All its
    randomness comes from `rng`, so a seeded episode is reproducible.
    """

    def __init__(self, env: RobotEnv) -> None:
        self.env = env
        self.rng = np.random.default_rng()

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError


def make_expert(env: gym.Env) -> Expert:
    """The scripted expert for a realloop task (a gymnasium env, wrapped or not)."""
    task = env.unwrapped
    name = type(task).__name__
    if name not in EXPERTS:
        raise ValueError(f"no scripted expert for {name}; experts exist for {', '.join(EXPERTS)}")
    return EXPERTS.get(name)(task)
