"""Fixtures of the steering and residual tests: the lift task's features and a small random diffusion policy."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from lift_policy import ENV, KEYS, base_config, plausible

import realloop.sim  # noqa: F401  (registers the tasks)
from realloop.policies.checkpoint import build_policy
from realloop.policies.diffusion.policy import DiffusionPolicy


@pytest.fixture(scope="module")
def features() -> dict:
    env = gym.make(ENV)
    try:
        return {k: v for k, v in env.unwrapped.dataset_features().items() if k in [*KEYS, "action"]}
    finally:
        env.close()


@pytest.fixture(scope="module")
def base(features: dict) -> DiffusionPolicy:
    torch.manual_seed(0)
    return plausible(build_policy(base_config(), features))
