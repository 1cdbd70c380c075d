"""What a realloop policy is, for everything that runs one (evaluation, the policy runner node).

A policy maps an observation dict keyed by dataset feature names (``observation.state``,
``observation.environment_state``, ``observation.images.<cam>``) to an action chunk: an array (T, action_dim)
of actions for the next T control steps, in its task's action space. A policy may also have ``refine(action)``,
the action to run at a step for the chunk's action there and the step's observation (a residual policy's
correction); whoever runs it calls that for every action it runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol, runtime_checkable

import numpy as np

from realloop.configs.schema import Schema
from realloop.registry import Registry


@runtime_checkable
class Policy(Protocol):
    def reset(self) -> None:
        """Forget history; called at the start of each episode."""

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        """Record the observation of this control step (policies with an observation history keep it)."""

    def action_chunk(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Actions (T, action_dim) for the next T control steps from now; ``obs`` is this step's observation
        (already given to ``observe``)."""


# the keys each built-in policy kind takes (null defaults take any value), checked like node parameters
EXPERT_KEYS = Schema({"kind": "expert", "seed": None})
CHECKPOINT_KEYS = Schema(
    {"kind": "checkpoint", "path": None, "device": None, "num_inference_steps": None, "n_action_steps": None,
     "seed": None},
    types={"num_inference_steps": ("int", "null"), "n_action_steps": ("int", "null")},
)  # fmt: skip


def set_inference(policy: Any, num_inference_steps: int | None = None, n_action_steps: int | None = None) -> None:
    """Override how a loaded checkpoint infers: denoising steps (diffusion policies) and actions executed per
    chunk (at most horizon - n_obs_steps + 1). ValueError names what does not fit."""
    from .diffusion.distill import DistilledDiffusionPolicy
    from .diffusion.policy import DiffusionPolicy

    if num_inference_steps is not None:
        if not isinstance(policy, DiffusionPolicy):
            raise ValueError(f"num_inference_steps applies to diffusion policies; {type(policy).__name__} has none")
        if isinstance(policy, DistilledDiffusionPolicy) and int(num_inference_steps) != 1:
            raise ValueError(
                f"num_inference_steps={num_inference_steps}: a distilled policy samples in one step; run its "
                f"teacher ({policy.teacher_path}) for more"
            )
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps} must be at least 1")
        policy.num_inference_steps = int(num_inference_steps)
    if n_action_steps is not None:
        n, most = int(n_action_steps), policy.horizon - policy.n_obs_steps + 1
        if not 1 <= n <= most:
            raise ValueError(f"n_action_steps={n} must be in [1, {most}] (horizon - n_obs_steps + 1 of the checkpoint)")
        policy.n_action_steps = n


def expert_policy(spec: dict[str, Any], env: Any, provided: Collection[str] = ()) -> Policy:
    """Policy kind ``expert``: the task's scripted expert acting on ``env`` (see :func:`make_policy`)."""
    from .expert import ExpertPolicy

    EXPERT_KEYS.check(spec, "the expert policy config", "key")
    if env is None:
        raise ValueError("the scripted expert acts on a task model: set the runner's task")
    return ExpertPolicy(env, seed=spec.get("seed"))


def checkpoint_policy(spec: dict[str, Any], env: Any, provided: Collection[str] = ()) -> Policy:
    """Policy kind ``checkpoint``: a trained policy, checked against what ``env`` observes and ``provided``
    adds and against ``env``'s action space (see :func:`make_policy`)."""
    from .agent import PolicyAgent
    from .checkpoint import load_policy

    CHECKPOINT_KEYS.check(spec, "the checkpoint policy config", "key")
    if not spec.get("path"):
        raise ValueError("policy kind checkpoint needs a path: policy.path=outputs/train/<run>")
    loaded = load_policy(spec["path"], device=spec.get("device") or "cpu")
    policy = loaded.policy
    set_inference(policy, spec.get("num_inference_steps"), spec.get("n_action_steps"))
    spaces = getattr(env.observation_space, "spaces", {}) if env is not None else {}
    missing = [k for k in policy.obs_keys if k not in spaces and k not in provided]
    if missing:
        raise ValueError(
            f"the checkpoint {loaded.path} sees {missing}, which neither this task model observes (it has "
            f"{sorted(spaces)}) nor the caller provides ({sorted(provided)}): map a camera topic to each "
            "image feature (cameras.<cam>=/topic) and a Float64MultiArray topic to each other numeric feature "
            "(topics.<name>=/topic for observation.<name>), or use a policy trained on features the robot has"
        )
    if env is not None and tuple(env.action_space.shape) != (policy.action_dim,):
        raise ValueError(
            f"the checkpoint {loaded.path} outputs {policy.action_dim} actions, the task's action space has "
            f"shape {env.action_space.shape}: the control_mode differs from the training data's"
        )
    return PolicyAgent(policy, seed=spec.get("seed"))


# policy kind -> factory, called as (spec, env, provided)
POLICIES = Registry("policy kind", {
    "expert": "realloop.policies.base:expert_policy",
    "checkpoint": "realloop.policies.base:checkpoint_policy",
})  # fmt: skip


def make_policy(spec: dict[str, Any], env: Any, provided: Collection[str] = ()) -> Policy:
    """A policy from a runner config; ``provided`` names observation features the caller adds to the env's own
    (the policy runner's camera topics); ``env`` is None on a robot without a task model, where the caller
    provides every feature and checks the actions against its own action mode.

    - ``{kind: expert, seed: 0}``: the task's scripted expert, acting on ``env`` (the unwrapped task model the
      runner keeps in sync with the robot);
    - ``{kind: checkpoint, path: RUN_OR_CHECKPOINT, device: cpu, num_inference_steps: null, n_action_steps: null,
      seed: 0}``: a trained policy (``realloop-train``), run by a :class:`realloop.policies.agent.PolicyAgent`;
      the two nulls keep the checkpoint's values (see :func:`set_inference`).

    Unknown keys are refused.
    """
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in POLICIES:
        raise ValueError(f"unknown policy kind {kind!r} in the policy config {spec}; available: {', '.join(POLICIES)}")
    return POLICIES.get(kind)(spec, env, provided)
