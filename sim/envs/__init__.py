"""Gymnasium tasks of the sim mirror, registered as ``realloop/<Task>-v0`` when realloop.sim is imported.

import gymnasium as gym
import realloop.sim  # registers the ids
env = gym.make("realloop/ArmLift-v0", control_mode="ee_delta", cameras=["front"])
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from realloop.registry import Registry
from realloop.sim.envs.arm import ArmLiftEnv, ArmPushTEnv, ArmReachEnv
from realloop.sim.envs.base import ENV_STATE, IMAGES, STATE, RobotEnv
from realloop.sim.envs.quadruped import QuadWalkEnv

# id -> (task class, episode length in control steps)
_TASK_TABLE = {
    "realloop/ArmReach-v0": ("realloop.sim.envs.arm:ArmReachEnv", 50),  # 5 s at 10 Hz
    "realloop/ArmLift-v0": ("realloop.sim.envs.arm:ArmLiftEnv", 100),  # 10 s
    "realloop/ArmPushT-v0": ("realloop.sim.envs.arm:ArmPushTEnv", 300),  # 30 s
    "realloop/QuadWalk-v0": ("realloop.sim.envs.quadruped:QuadWalkEnv", 500),  # 10 s at 50 Hz
}
TASKS = Registry("task", {task_id: entry for task_id, (entry, _) in _TASK_TABLE.items()})  # id -> task class

for _id, (_entry, _steps) in _TASK_TABLE.items():  # gymnasium's own registry: gym.make("realloop/<Task>-v0")
    if _id not in registry:
        register(id=_id, entry_point=_entry, max_episode_steps=_steps)

__all__ = [
    "ENV_STATE", "IMAGES", "STATE", "TASKS", "ArmLiftEnv", "ArmPushTEnv", "ArmReachEnv", "QuadWalkEnv", "RobotEnv",
]  # fmt: skip
