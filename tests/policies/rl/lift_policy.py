"""A small random diffusion policy for the arm lift task, shared by the steering and residual tests: its config as
a checkpoint stores it, and statistics that map the task's values into the normalised range."""

from __future__ import annotations

import numpy as np

from realloop.configs.schema import to_plain
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.train import compose_config

ENV = "realloop/ArmLift-v0"
KEYS = ["observation.state", "observation.environment_state"]


def base_config() -> dict:
    """A small diffusion policy's config, as its checkpoint would store it."""
    cfg = compose_config(["policy=diffusion", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16"])
    return {**to_plain(cfg)["policy"], "num_inference_steps": 4}


def plausible(policy: DiffusionPolicy) -> DiffusionPolicy:
    """Weights are random; statistics that map the lift task's values into the normalised range."""
    stats = {}
    for key, f in policy.features.items():
        n = f.shape[0]
        stats[key] = {"min": -np.ones(n), "max": np.ones(n), "mean": np.zeros(n), "std": np.ones(n)}
    policy.normalizer.set_stats(stats)
    return policy.eval()
