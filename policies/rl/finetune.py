"""``realloop-finetune``: actor-critic learning in a gymnasium env, from demonstrations and online practice.

    realloop-finetune env=realloop/ArmLift-v0 demos=[outputs/lift_demos.zarr] algo=rlpd reward=success

With ``algo=noise`` the learner steers the frozen diffusion policy ``init=`` names through its sampling noise
(:mod:`realloop.policies.rl.steer`): each env is wrapped so that a step is one chunk of that policy. With
``algo=residual`` it corrects every action of the frozen policy (:mod:`realloop.policies.rl.residual`): each env
is wrapped so that its observation holds that policy's action and the learner's action is the correction.

One loop: ``num_envs`` envs act as one batch (the learner's exploring policy; uniform random actions for the
first ``random_steps``; or, started from a realloop-train checkpoint, that imitation policy for the first
``imitation.steps``, after which the actor is distilled from what it did); every step goes into the
:class:`~realloop.policies.rl.buffer.ReplayBuffer` (offline: the ``demos`` datasets; online: a ring whose ended
episodes are committed to ``<out>/online.zarr``); after
``learning_starts`` each env step is followed by one learner update (``utd`` critic steps) on a batch the buffer
samples (RLPD's half offline, half online). Every ``eval.every`` env steps the actor is evaluated by realloop-eval's
rollouts on held-out seeds.

Outputs in ``out``: ``metrics.csv`` and TensorBoard events (``tb/``), ``checkpoints/step_<env steps>`` (the
checkpoint format of realloop-train: ``model.safetensors`` is the actor as a ChunkPolicy, which ``realloop-eval``,
the policy runner and ``realloop-eval-graph`` run; ``training_state.*`` the whole learner, the loop and the buffer
position), ``online.zarr``, ``curves.png`` and ``finetune_summary.json``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import random
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from realloop.configs import CONFIG_DIR
from realloop.configs.schema import compose_checked, exit_on_config_error, to_plain
from realloop.data.dataset import Dataset
from realloop.data.stats import ensure_stats
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import (
    CheckpointError,
    link_last,
    load_policy,
    load_training_state,
    read_json,
    resolve_checkpoint,
    save_checkpoint,
)
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.diffusion.policy import DiffusionPolicy
from realloop.policies.evaluate import EvalError, env_kwargs_from_checkpoint, evaluate, make_vector_env
from realloop.policies.obs_map import ObsMap, load_obs_map
from realloop.policies.rl.actor_policy import ActorPolicy
from realloop.policies.rl.buffer import ReplayBuffer
from realloop.policies.rl.learner import Batch
from realloop.policies.rl.residual import BASE_ACTION, ResidualEnv, ResidualPolicy
from realloop.policies.rl.sac import SACConfig, SACLearner
from realloop.policies.rl.state import learner_state, restore_learner_state
from realloop.policies.rl.steer import NoiseSteeredEnv, NoiseSteeredPolicy
from realloop.policies.stop_signals import StopSignals

IMAGES = "observation.images."
ACTOR_POLICY = "realloop.policies.rl.actor_policy.ActorPolicy"
# algo.steer -> the checkpointed policy of the frozen policy and the learner's actor
FROZEN_BASE_POLICIES: dict[str, type[NoiseSteeredPolicy] | type[ResidualPolicy]] = {
    "noise": NoiseSteeredPolicy, "residual": ResidualPolicy,
}  # fmt: skip

# what configs/finetune.yaml's defaults cannot say about its keys (realloop.configs.schema)
CONFIG_OPEN = ("env_kwargs", "obs_map", "hold_actions")
CONFIG_TYPES = {
    "obs_keys": "list|null", "init": "str|null", "out": "str|null", "grasp_action": "str|int|null",
    "image_size": "list|null", "progress": "bool|str", "algo.target_entropy": "number|null", "algo.steer": "str|null",
}  # fmt: skip
CONFIG_BOUNDS = {
    "steps": (1, None), "num_envs": (1, None), "batch_size": (1, None), "random_steps": (0, None),
    "learning_starts": (0, None), "capacity": (2, None), "online_ratio": (0, 1), "gamma": (0, 1), "n_step": (1, None),
    "seed": (0, None), "eval.every": (0, None), "eval.episodes": (1, None), "eval.seed": (0, None),
    "eval.num_envs": (1, None), "checkpoint_every": (1, None), "log_every": (1, None), "time_limit_min": (0, None),
    "algo.num_critics": (1, None), "algo.num_min_critics": (1, None), "algo.utd": (1, None), "algo.tau": (0, 1),
    "algo.bc_weight": (0, None), "algo.augment_pad": (0, None), "algo.obs_std_floor": (0, None),
    "algo.bc_decay_updates": (0, None), "algo.action_penalty": (0, None),
    "algo.action_chunk": (1, None), "algo.cql_weight": (0, None), "algo.cql_actions": (1, None),
    "algo.grasp_epsilon": (0, 1), "algo.grasp_margin": (0, None),
    "offline_updates": (0, None), "imitation.steps": (1, None), "imitation.updates": (0, None),
    "algo.noise_bound": (1e-6, None), "algo.residual_scale": (1e-6, None), "algo.residual_warmup": (0, None),
}  # fmt: skip
CONFIG_CHOICES = {
    "reward": ("env", "success"),
    "device": ("auto", "cpu", "cuda"),
    "progress": ("auto", True, False),
    "algo.actor_q": ("mean", "min"),
    "algo.obs_normalization": ("mean_std", "min_max", "identity"),
    "algo.image_encoder": ("small", "resnet18"),
    "algo.steer": (None, "noise", "residual"),
}
# algo settings of realloop-finetune's own, not the learner's (SACConfig), and their defaults
STEER_DEFAULTS = {"steer": None, "noise_bound": 1.5, "residual_scale": 0.1, "residual_warmup": 0}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The finetune config with hydra-style overrides, without running hydra's app (for scripts and tests); a key
    it does not have or a bad value raises :class:`~realloop.configs.schema.ConfigError` (one line)."""
    return compose_checked(
        "finetune", overrides, open=CONFIG_OPEN, types=CONFIG_TYPES, bounds=CONFIG_BOUNDS, choices=CONFIG_CHOICES
    )


class FinetuneError(ValueError):
    """The run cannot start as configured (env, demonstrations, checkpoint); the message says what to change."""


@dataclass
class FinetuneSummary:
    """What one realloop-finetune run did."""

    env: str
    algo: str
    out: str
    env_steps: int
    start_env_steps: int
    episodes: int
    updates: int
    seconds: float
    train_success_rate: float | None  # over the last 20 training episodes
    eval: dict[str, Any] | None
    checkpoint: str | None
    interrupted: bool = False
    evals: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    command: str | None = None  # the command line, when started from one
    imitation: dict[str, Any] | None = None  # the warm start from an imitation policy, when the run had one
    actions_executed: int | None = None  # steering (algo=noise): env actions run, where env_steps counts chunks

    def line(self) -> str:
        ev = "no evaluation"
        if self.eval:
            rate, n = self.eval["success_rate"], self.eval["episodes"]
            returns = f"return {self.eval['return_mean']:.2f} over {n} episodes"
            success = "" if rate is None else f"{self.eval['successes']}/{n} successful ({rate:.0%}), "
            ev = f"eval {success}{returns}"
        train = f"{self.train_success_rate:.0%}" if self.train_success_rate is not None else "-"
        steps = self.env_steps - self.start_env_steps
        warm = ""
        if self.imitation:
            im = self.imitation
            done = "" if im["success_rate"] is None else f", {im['successes']}/{im['episodes']} episodes successful"
            warm = f"; imitation policy for {im['env_steps']} steps{done}, distilled in {im['updates']} updates"
        taken = f"{steps} env steps (to {self.env_steps})"
        if self.actions_executed is not None:
            taken = f"{steps} chunks (to {self.env_steps}; {self.actions_executed} env steps in all)"
        return (
            f"{self.algo} on {self.env}: {taken}, {self.episodes} episodes, "
            f"{self.updates} updates in {self.seconds:.0f} s{warm}; training success {train}; {ev} -> "
            f"{self.checkpoint}"
        )


# -- the spaces ------------------------------------------------------------------------------------------------
def _features(obs: Mapping[str, np.ndarray], keys: Sequence[str], action_space: gym.spaces.Box) -> dict[str, Any]:
    """Feature schema of the learner's observations (from one env's observation) and of the action."""
    features: dict[str, Any] = {}
    for k in keys:
        v = np.asarray(obs[k])
        if k.startswith(IMAGES):
            if v.ndim != 3 or v.dtype != np.uint8:
                raise FinetuneError(f"observation {k!r} has shape {v.shape} {v.dtype}; cameras must be H x W x 3 uint8")
            features[k] = {"dtype": "uint8", "shape": list(v.shape)}
        else:
            if v.ndim != 1:
                raise FinetuneError(f"observation {k!r} has shape {v.shape}; give the learner vectors (an obs_map)")
            features[k] = {"dtype": "float32", "shape": list(v.shape)}
    features["action"] = {"dtype": "float32", "shape": list(action_space.shape)}
    return features


def _check_demos(
    paths: Sequence[str],
    features: Mapping[str, Any],
    reward: str,
    held: Mapping[int, float] | None = None,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> None:
    """Refuse demonstrations that do not fit the env, before anything is loaded or learnt; with ``held`` action
    dims, demonstrations that move them by more than 5% of their range (the learner could not act as they did)."""
    for path in paths:
        if not Path(path).exists():
            raise FinetuneError(f"demos: {path} does not exist; fix the path, or record them (realloop-collect)")
        try:
            ds = Dataset.open(path)
        except (ValueError, FileNotFoundError) as e:
            raise FinetuneError(f"demos: {e}") from None
        with ds:
            have = ds.features
            for key, f in features.items():
                if key not in have:
                    raise FinetuneError(
                        f"demos {path} have no feature {key!r} that the env gives (it has {sorted(have)}); "
                        "record them in this env, or choose obs_keys the dataset has"
                    )
                want = tuple(f["shape"])
                got = have[key].shape
                if not key.startswith(IMAGES) and got != want:
                    raise FinetuneError(
                        f"demos {path}: {key!r} has shape {got}, the env's has {want}: the demonstrations come from "
                        "another env or control mode"
                    )
            needed = "next.success" if reward == "success" else "next.reward"
            if needed not in have:
                fix = "reward=success (rewards from next.success)" if needed == "next.reward" else "re-record them"
                raise FinetuneError(f"demos {path} have no {needed!r} (reward={reward}); use {fix}")
            if held and low is not None and high is not None:
                stats = ensure_stats(ds)["action"]
                for i, v in held.items():
                    off = max(abs(float(stats["min"][i]) - v), abs(float(stats["max"][i]) - v))
                    if off > 0.05 * float(high[i] - low[i]):
                        raise FinetuneError(
                            f"demos {path} move held action dim {i} up to {off:.3g} away from {v} (hold_actions); "
                            "drop it from hold_actions, or use demonstrations that hold it"
                        )


def _action_names(env: gym.Env) -> list[str]:
    """The names of the action's dims: a realloop task's control mode names them; otherwise none."""
    mode = getattr(env.unwrapped, "action_mode", None)
    return [str(n) for n in getattr(mode, "names", None) or []]


def _action_dim(key: Any, names: Sequence[str], size: int, setting: str) -> int:
    """The index of the action dim named (or numbered) ``key``; ``setting`` names the parameter in the error."""
    if str(key) in names:
        return names.index(str(key))
    if str(key).isdigit() and int(key) < size:
        return int(key)
    known = f"names {names} or " if names else ""
    raise FinetuneError(f"{setting}: {key!r} is no action dim; use {known}an index below {size}")


def _held_actions(hold: Mapping[Any, Any], names: Sequence[str], low: np.ndarray, high: np.ndarray) -> dict[int, float]:
    """``hold_actions`` as {dim index: value}, each name or index checked against the action."""
    held: dict[int, float] = {}
    for key, value in hold.items():
        i = _action_dim(key, names, len(low), "hold_actions")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise FinetuneError(f"hold_actions: {key}={value!r} is not a number") from None
        if not low[i] <= v <= high[i]:
            raise FinetuneError(f"hold_actions: {key}={v} is outside the action bounds [{low[i]}, {high[i]}]")
        held[i] = v
    if len(held) == len(low):
        raise FinetuneError("hold_actions holds every action dim; leave the learner at least one")
    return held


def _obs_stats(paths: Sequence[str], keys: Sequence[str]) -> dict[str, Any] | None:
    """Statistics of the state observations from the first demonstration dataset, computed and stored there when
    missing or stale (as realloop-train does); None without demonstrations."""
    state = [k for k in keys if not k.startswith(IMAGES)]
    if not paths or not state:
        return None
    stats = ensure_stats(paths[0])
    return {k: {n: np.asarray(v, dtype=np.float64) for n, v in stats[k].items()} for k in state}


# -- the run ---------------------------------------------------------------------------------------------------
class Finetuner:
    """One realloop-finetune run (see the module doc); :meth:`run` does it."""

    def __init__(self, cfg: Mapping[str, Any], progress: bool = True, command: str | None = None) -> None:
        from realloop.policies.train import pick_device

        self.c = c = dict(cfg)
        self.progress = progress
        self.command = command
        self.algo = dict(c["algo"])
        self.env_id = str(c["env"])
        self.env_kwargs = dict(c.get("env_kwargs") or {})
        self.out = Path(c["out"] or f"outputs/finetune/{self.env_id.replace('/', '_')}_{self.algo['name']}")
        self.device = pick_device(str(c["device"]))
        self.num_envs = int(c["num_envs"])
        if c["resume"] and c.get("init"):
            raise FinetuneError("resume=true continues this run; init= starts a new one from a checkpoint: pick one")
        last = self.out / "checkpoints" / "last"
        if c["resume"] and not last.exists():
            raise FinetuneError(f"resume=true but {self.out} has no checkpoint; run without resume to start")
        if not c["resume"] and last.exists():
            raise FinetuneError(f"{self.out} holds a run already; resume=true continues it, or choose another out=")

        self.obs_map: ObsMap | None = load_obs_map(c.get("obs_map"))
        # algo=noise | residual: the frozen policy the learner steers or corrects, inside each env (its wrapper)
        self.steer = steer = self.algo.get("steer")
        self.base: ChunkPolicy | None = None
        self.base_config: dict[str, Any] = {}
        self.base_meta: dict[str, Any] = {}
        wrap: Callable[[gym.Env], gym.Env] | None = None
        if steer:
            base = self._load_base(last)
            if isinstance(base, DiffusionPolicy) and steer == "noise":
                wrap = functools.partial(NoiseSteeredEnv, policy=base, bound=float(self.algo["noise_bound"]))
            else:
                wrap = functools.partial(ResidualEnv, policy=base, scale=float(self.algo["residual_scale"]))
            if c.get("env_kwargs") is None:  # the env the frozen policy's data came from (randomisation included)
                with contextlib.suppress(EvalError):  # its data does not record the env: the task's defaults
                    self.env_kwargs = env_kwargs_from_checkpoint(self.base_meta, "init")[1]
        try:
            self.envs = make_vector_env(self.env_id, self.env_kwargs, self.num_envs, wrap=wrap)
        except EvalError as e:
            raise FinetuneError(str(e)) from None
        space = self.envs.single_action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise FinetuneError(f"{self.env_id} has action space {space}; actor-critic learning needs a 1-D Box")
        self.low, self.high = space.low.astype(np.float32), space.high.astype(np.float32)
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise FinetuneError(f"{self.env_id}'s action space {space} is unbounded; the actor needs finite bounds")
        hold = dict(c.get("hold_actions") or {})
        if steer and (hold or c.get("grasp_action") is not None or int(self.algo["action_chunk"]) > 1):
            raise FinetuneError(
                f"algo={self.algo['name']} works on the frozen policy's chunks: drop hold_actions, grasp_action and "
                "algo.action_chunk"
            )
        names = _action_names(self.envs.envs[0])
        self.held = _held_actions(hold, names, self.low, self.high)
        self.free = [i for i in range(len(self.low)) if i not in self.held]
        self.grasp: int | None = None  # the gripper dim the grasp critic chooses, an index into the env's action
        if c.get("grasp_action") is not None:
            self.grasp = _action_dim(c["grasp_action"], names, len(self.low), "grasp_action")
            if self.grasp in self.held:
                raise FinetuneError(f"grasp_action: {c['grasp_action']} is held (hold_actions); hold it or choose it")
            if int(self.algo["action_chunk"]) > 1:
                raise FinetuneError("grasp_action chooses one step's gripper state: use algo.action_chunk=1")
        self.held_action = np.zeros(len(self.low), dtype=np.float32)
        self.held_action[list(self.held)] = list(self.held.values())
        self.chunk = int(self.algo["action_chunk"])
        # the chunk each env is running (Q-chunking: the actor's H actions, executed open loop) and its next step
        self.queue = np.tile(self.held_action, (self.num_envs, self.chunk, 1))
        self.queue_pos = np.full(self.num_envs, self.chunk)
        self.dt = _control_dt(self.envs.envs[0])
        if self.base is not None and steer == "noise":  # one learner step is one chunk of the steered policy
            self.dt *= self.base.n_action_steps
        self.episode = 0  # training episodes started (their seeds)
        self.current_seeds = [self._seed() for _ in range(self.num_envs)]  # of the episodes in progress
        first = self._map(self.envs.reset(seed=self.current_seeds)[0])
        keys = list(c.get("obs_keys") or sorted(first))
        if steer == "residual" and BASE_ACTION not in keys:  # the correction depends on the action it corrects
            keys.append(BASE_ACTION)
        missing = [k for k in keys if k not in first]
        if missing:
            raise FinetuneError(f"obs_keys {missing} are not in the env's observation (it has {sorted(first)})")
        self.keys = keys
        self.obs = first
        self.features = _features({k: v[0] for k, v in first.items()}, keys, space)
        demos = [str(p) for p in c.get("demos") or []]
        if int(c["offline_updates"]) > 0 and not demos:
            raise FinetuneError("offline_updates pretrains on demonstrations: give demos=[...], or offline_updates=0")
        if steer and demos:
            raise FinetuneError(
                f"algo={self.algo['name']} learns from what it does to the frozen policy: demonstrations hold actions, "
                "not noise or corrections; drop demos="
            )
        _check_demos(demos, self.features, str(c["reward"]), self.held, self.low, self.high)
        self.demos = demos

        torch.manual_seed(int(c["seed"]))
        np.random.seed(int(c["seed"]))
        random.seed(int(c["seed"]))
        self.rng = np.random.default_rng(int(c["seed"]))
        learner_cfg = SACConfig(**{k: v for k, v in self.algo.items() if k not in ("name", *STEER_DEFAULTS)})
        learner_cfg = dataclasses.replace(
            learner_cfg,
            hidden_dims=tuple(learner_cfg.hidden_dims),
            grasp_dim=None if self.grasp is None else self.free.index(self.grasp),
        )
        stats = _obs_stats(demos, keys) if learner_cfg.obs_normalization != "identity" else None
        shapes = {k: _learner_shape(self.features[k]) for k in keys}
        self.learner = SACLearner(shapes, self.low[self.free], self.high[self.free], learner_cfg, stats, self.device)
        if steer == "residual":  # a zero correction: the policy of step 0 is exactly the frozen one
            with torch.no_grad():
                self.learner.actor.mean.weight.zero_()
                self.learner.actor.mean.bias.zero_()
        image_size = c.get("image_size")
        self.buffer = ReplayBuffer(
            keys, demos, capacity=int(c["capacity"]), online_path=self.out / "online.zarr",
            online_ratio=float(c["online_ratio"]), gamma=float(c["gamma"]), n_step=int(c["n_step"]),
            action_chunk=self.chunk,
            rewards="success" if c["reward"] == "success" else "recorded", image_size=image_size,
            step_dt=self.dt, task=self.env_id, seed=int(c["seed"]),
            progress=progress,
        )  # fmt: skip
        self.env_steps = self.updates = self.episodes_done = self.actions_executed = 0
        self.start_env_steps = 0
        self.recent: deque[tuple[float, bool, int]] = deque(maxlen=20)  # return, success, length
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=int)
        self.evals: list[dict[str, Any]] = []
        self.metrics: dict[str, float] = {}
        self.has_success = False  # whether the env reports success_key (else success is no figure of the run)
        # started from an imitation policy: it acts until imitation.steps, then the actor is distilled from it
        self.imitation: PolicyAgent | None = None
        self.imitation_from: str | None = None
        self.imitation_episodes: list[bool] = []  # the success of each episode it finished
        self.distilled: dict[str, Any] | None = None  # what the distillation did, once done
        if self.base is not None and not c["resume"]:
            self._check_init_policy(resolve_checkpoint(str(c["init"])), self.base, self.base_meta)
        elif c.get("init"):
            self._init_from(resolve_checkpoint(str(c["init"])))
        if c["resume"]:
            self._load(resolve_checkpoint(last), resume=True)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _seed(self) -> int:
        seed = int(self.c["seed"]) * 1_000_000 + self.episode
        self.episode += 1
        return seed

    def _map(self, obs: Any) -> dict[str, np.ndarray]:
        return self.obs_map(obs) if self.obs_map is not None else {k: np.asarray(v) for k, v in dict(obs).items()}

    def residual_fraction(self) -> float:
        """algo=residual: the fraction of ``residual_scale`` the correction has now, growing linearly from 0 to 1
        over the first ``residual_warmup`` env steps (1 without a warm-up)."""
        warmup = int(self.algo["residual_warmup"])
        return min(1.0, self.env_steps / warmup) if warmup > 0 else 1.0

    def policy_config(self) -> dict[str, Any]:
        """The ``policy`` section of the checkpoint's config: builds the :class:`ActorPolicy` (or, steering or
        correcting a frozen policy, the :class:`NoiseSteeredPolicy` or :class:`ResidualPolicy` of it and that actor)."""
        a = self.algo
        actor = {
            "_target_": ACTOR_POLICY, "name": a["name"], "obs_keys": self.keys, "action_key": "action",
            "action_low": self.low.tolist(), "action_high": self.high.tolist(), "hidden_dims": list(a["hidden_dims"]),
            "image_encoder": a["image_encoder"], "image_feature_dim": int(a["image_feature_dim"]),
            "held_dims": list(self.held), "held_values": [float(v) for v in self.held.values()],
            "action_chunk": self.chunk, "grasp_dim": self.grasp, "critic_layer_norm": bool(a["critic_layer_norm"]),
        }  # fmt: skip
        if self.base is None:
            return actor
        bounds = ("_target_", "name", "action_key", "action_low", "action_high")  # the wrapping policy sets them
        own = {k: v for k, v in actor.items() if k not in bounds}
        seen = sorted({*self.base.obs_keys, *self.keys} - {BASE_ACTION})
        common = {"name": a["name"], "obs_keys": seen, "base": self.base_config, "actor": own}
        cls = FROZEN_BASE_POLICIES[str(self.steer)]
        common = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **common}
        if self.steer == "noise":
            return {**common, "bound": float(a["noise_bound"])}
        wrapper = self.envs.envs[0]
        return {
            **common, "scale": float(a["residual_scale"]) * self.residual_fraction(),
            "action_low": wrapper.low.tolist(), "action_high": wrapper.high.tolist(),
        }  # fmt: skip

    def actor_policy(self) -> ChunkPolicy:
        """The learner's current actor as a ChunkPolicy (CPU, eval mode); steering, the frozen policy with it."""
        features = dict(self.features)
        if self.c.get("image_size"):
            h, w = (int(v) for v in self.c["image_size"])
            features = {k: {**f, "shape": [h, w, 3]} if k.startswith(IMAGES) else f for k, f in features.items()}
        cfg = {k: v for k, v in self.policy_config().items() if k not in ("_target_", "name")}
        actor = self.learner.actor_weights()
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: the run's RNG stays as it was
            if self.base is None:
                policy: ChunkPolicy = ActorPolicy(features, **cfg)
            else:  # the env's action and the frozen policy's own features, with the actor's observations
                base_features = {k: f.to_dict() for k, f in self.base.features.items()}
                policy = FROZEN_BASE_POLICIES[str(self.steer)]({**features, **base_features}, **cfg)
                base = {f"base.{k}": v.detach().cpu() for k, v in self.base.state_dict().items()}
                actor = {**base, **{f"actor.{k}": v for k, v in actor.items()}}
        policy.load_state_dict({**policy.state_dict(), **actor}, strict=True)
        return policy.eval()

    def _load_base(self, last: Path) -> ChunkPolicy:
        """algo=noise | residual: the frozen policy, from ``init=`` (a realloop-train checkpoint) or, resuming, from
        the run's checkpoint, which holds it."""
        c, name = self.c, self.algo["name"]
        if c.get("obs_map"):
            raise FinetuneError(f"algo={name} works on a realloop-train policy in the task it learnt: drop obs_map")
        if not c["resume"] and not c.get("init"):
            raise FinetuneError(
                f"algo={name} works on a pretrained policy: give init=<its realloop-train run or checkpoint>"
            )
        folder = resolve_checkpoint(last if c["resume"] else str(c["init"]))
        with torch.random.fork_rng(devices=[]):  # building it draws initial weights: the run's RNG stays as it was
            loaded = load_policy(folder, self.device)
        policy, config = loaded.policy, loaded.config.get("policy") or {}
        wrapping = FROZEN_BASE_POLICIES[str(self.steer)]
        if c["resume"]:
            if not isinstance(policy, wrapping):
                raise FinetuneError(f"resume: {folder} holds no {wrapping.__name__}; resume the run with its own algo")
            policy, config = policy.base, config["base"]
        elif "algo" in loaded.config:
            raise FinetuneError(
                f"init={folder} is a realloop-finetune checkpoint; algo={name} works on a realloop-train policy "
                "(resume=true continues a run)"
            )
        if self.steer == "noise" and not isinstance(policy, DiffusionPolicy):
            raise FinetuneError(
                f"init={folder} holds a {type(policy).__name__}; algo=noise steers the noise of a diffusion policy "
                "(realloop-train policy=diffusion, diffusion_image*, diffusion_distill)"
            )
        self.base, self.base_config, self.base_meta = policy.eval().requires_grad_(False), config, loaded.meta
        return self.base

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save(self) -> Path:
        meta = {
            "env_steps": self.env_steps, "updates": self.updates, "episode": self.episode,
            "episodes_done": self.episodes_done, "current_seeds": self.current_seeds,
            "rng": self.rng.bit_generator.state, "buffer": self.buffer.state_dict(), "evals": self.evals,
            "imitation_from": self.imitation_from, "imitation_episodes": self.imitation_episodes,
            "distilled": self.distilled, "actions_executed": self.actions_executed,
        }  # fmt: skip
        tensors, state = learner_state(self.learner, meta)
        policy = self.actor_policy()
        config = {**self.c, "policy": self.policy_config()}
        info = {
            "step": self.env_steps, "policy_name": self.algo["name"], "demos": self.demos,
            "env": {"id": self.env_id, "kwargs": self.env_kwargs}, "online_dataset": str(self.out / "online.zarr"),
        }  # fmt: skip
        folder = save_checkpoint(
            self.out / "checkpoints" / f"step_{self.env_steps:08d}", policy, config, info, tensors, state
        )
        link_last(folder)
        return folder

    def _init_from(self, folder: Path) -> None:
        """``init=``: a realloop-finetune checkpoint's learner, or a realloop-train checkpoint's imitation policy."""
        config = read_json(folder / "config.json")
        if "algo" in config:
            self._load(folder, resume=False)
        elif "dataset" in config:
            self._start_imitation(folder)
        else:
            raise FinetuneError(
                f"{folder} is neither a realloop-finetune nor a realloop-train checkpoint; init= takes one of those"
            )

    def _start_imitation(self, folder: Path) -> None:
        """Load the imitation policy of a realloop-train checkpoint to act for the first ``imitation.steps`` env
        steps; refused in one line when it cannot act in this env."""
        with torch.random.fork_rng(devices=[]):  # building it draws initial weights: the run's RNG stays as it was
            loaded = load_policy(folder, self.device)
        policy = loaded.policy
        self._check_init_policy(folder, policy, loaded.meta)
        if not self.c["resume"] and int(self.c["imitation"]["steps"]) >= int(self.c["steps"]):
            raise FinetuneError(
                f"imitation.steps={self.c['imitation']['steps']} is not below steps={self.c['steps']}: the run would "
                "end before its actor learnt from the imitation policy; lower imitation.steps or raise steps"
            )
        self.imitation = PolicyAgent(policy, num_envs=self.num_envs, seed=int(self.c["seed"]))
        self.imitation_from = str(folder)

    def _check_init_policy(self, folder: Path, policy: ChunkPolicy, meta: Mapping[str, Any]) -> None:
        """Refuse (one line) a realloop-train policy that cannot act in this env: another task or control mode,
        another action size, observations the env does not give."""
        try:
            trained_in, kwargs = env_kwargs_from_checkpoint(meta, str(folder / "policy.json"))
        except EvalError:  # its dataset does not record the env (a recorder's, a converted one): nothing to compare
            trained_in, kwargs = self.env_id, {}
        mode = getattr(getattr(self.envs.envs[0].unwrapped, "action_mode", None), "name", None)
        if trained_in != self.env_id or (mode and kwargs.get("control_mode", mode) != mode):
            raise FinetuneError(
                f"init={folder}: its policy learnt from {trained_in} data ({kwargs.get('control_mode')} control); "
                f"this run acts in {self.env_id} ({mode} control): train it on data of this env, or set env="
            )
        env_action = self.envs.envs[0].unwrapped.action_space.shape[0]
        if policy.action_dim != env_action:
            raise FinetuneError(
                f"init={folder}: its policy outputs {policy.action_dim} action dims; {self.env_id} takes {env_action}"
            )
        missing = [k for k in policy.obs_keys if k not in self.obs]
        if missing:
            raise FinetuneError(
                f"init={folder}: its policy sees {missing}, which {self.env_id} does not give (it gives "
                f"{sorted(self.obs)}); render the cameras it needs with env_kwargs, or map them (obs_map)"
            )

    def distil(self, tb: Any = None) -> None:
        """The end of the imitation phase: ``imitation.updates`` actor steps cloning the imitation policy's actions
        on the states it visited (the online transitions so far, all of them its own), then an evaluation (a row of
        ``evals`` at this env step). The imitation policy stops acting."""
        n, batch_size = int(self.c["imitation"]["updates"]), int(self.c["batch_size"])
        losses: list[float] = []
        for i in tqdm(range(n), desc="distil", unit="update", disable=not self.progress):
            batch = cast(Batch, self.buffer.sample(batch_size, self.rng, online_ratio=1.0))
            if self.held:
                batch["action"] = batch["action"][..., self.free]
            losses.append(self.learner.clone(batch)["clone_loss"])
            if tb is not None and (i + 1) % int(self.c["log_every"]) == 0:
                tb.add_scalar("distil/clone_loss", losses[-1], i + 1)
        done = self.imitation_episodes
        self.distilled = {
            "checkpoint": self.imitation_from, "env_steps": self.env_steps, "episodes": len(done),
            "successes": int(sum(done)), "success_rate": float(np.mean(done)) if done and self.has_success else None,
            "updates": n, "clone_loss_first": losses[0] if losses else None,
            "clone_loss_last": losses[-1] if losses else None,
        }  # fmt: skip
        self.imitation = None
        self.evaluate(tb)

    def _load(self, folder: Path, resume: bool) -> None:
        config = read_json(folder / "config.json")
        if "algo" not in config:
            raise FinetuneError(f"{folder} is not a realloop-finetune checkpoint; resume needs one")
        tensors, state = load_training_state(folder)
        if resume:
            saved = {**config, "algo": _with_defaults(config.get("algo") or {})}
            for key in ("env", "obs_keys", "algo", "reward", "grasp_action"):
                if saved.get(key) != self.c.get(key) and not (key == "obs_keys" and saved.get(key) is None):
                    raise FinetuneError(
                        f"resume: {key}={self.c.get(key)!r} differs from the run's {saved.get(key)!r}; resume with "
                        "the run's settings, or start a new run (another out=)"
                    )
        meta = restore_learner_state(self.learner, tensors, state, str(folder), restore_rng=resume)
        if resume:
            self.env_steps = self.start_env_steps = int(meta["env_steps"])
            self.updates, self.episode = int(meta["updates"]), int(meta["episode"])
            self.episodes_done = int(meta["episodes_done"])
            self.rng.bit_generator.state = meta["rng"]
            self.buffer.load_state_dict(meta["buffer"])
            self.evals = list(meta.get("evals") or [])
            self.imitation_episodes = [bool(v) for v in meta.get("imitation_episodes") or []]
            self.distilled = meta.get("distilled")
            self.actions_executed = int(meta.get("actions_executed", self.env_steps))
            self.imitation_from = meta.get("imitation_from")
            if self.imitation_from and self.distilled is None:
                # saved inside the imitation phase: the imitation policy acts on (a stochastic one with new noise)
                self._start_imitation(resolve_checkpoint(str(meta["imitation_from"])))
            # the episodes in progress when the checkpoint was written start again from their first step (their
            # steps were not committed); one that had just begun, as a checkpoint at an episode end has, goes on
            # exactly as it would have
            self.current_seeds = [int(v) for v in meta["current_seeds"]]
            self.obs = self._map(self.envs.reset(seed=self.current_seeds)[0])
            self.returns[:] = 0
            self.lengths[:] = 0
            self.queue_pos[:] = self.chunk

    # -- the loop --------------------------------------------------------------------------------------------
    def _act(self) -> np.ndarray:
        """The envs' actions: full env actions, the held dims at their values; with action chunks, the next action
        of each env's chunk, a new chunk from the learner when one is used up (or its episode ended). The grasp
        dim, with a grasp critic, is at its lower or upper bound whoever acts (the nearer one)."""
        if self.imitation is not None:
            actions = np.clip(self.imitation.step(self.obs), self.low, self.high).astype(np.float32)
            actions[:, list(self.held)] = self.held_action[list(self.held)]
            return self._snap_grasp(actions)
        if self.env_steps < int(self.c["random_steps"]):
            actions = np.tile(self.held_action, (self.num_envs, 1))
            low, high = self.low[self.free], self.high[self.free]
            actions[:, self.free] = self.rng.uniform(low, high, size=(self.num_envs, len(self.free)))
            return self._snap_grasp(actions)
        done = self.queue_pos >= self.chunk
        if done.any():
            chunk = self.learner.act(self.buffer.batch_observation(self.obs), explore=True)
            chunk = chunk.reshape(self.num_envs, self.chunk, len(self.free))
            self.queue[np.ix_(done, np.arange(self.chunk), np.asarray(self.free))] = chunk[done]
            self.queue_pos[done] = 0
        actions = self.queue[np.arange(self.num_envs), self.queue_pos].copy()
        self.queue_pos += 1
        return actions

    def _snap_grasp(self, actions: np.ndarray) -> np.ndarray:
        if self.grasp is not None:
            g = self.grasp
            upper = actions[:, g] > 0.5 * (self.low[g] + self.high[g])
            actions[:, g] = np.where(upper, self.high[g], self.low[g])
        return actions

    def _step(self) -> list[int]:
        """One step of every env; returns the envs whose episode ended."""
        actions = self._act()
        if self.steer == "residual":  # the correction's scale grows over the warm-up (the buffer keeps what ran)
            actions = (actions * self.residual_fraction()).astype(np.float32)
        next_raw, reward, terminated, truncated, info = self.envs.step(actions)
        next_obs = self._map(next_raw)
        self.actions_executed += int(np.sum(info["chunk_steps"])) if "chunk_steps" in info else self.num_envs
        key = str(self.c["success_key"])
        self.has_success = self.has_success or key in info
        success = np.asarray(info.get(key, np.zeros(self.num_envs, bool)), dtype=bool)
        if self.c["reward"] == "success":
            reward = success.astype(np.float32)
        ended = []
        for i in range(self.num_envs):
            self.buffer.add(
                {k: self.obs[k][i] for k in self.keys}, actions[i], float(reward[i]), bool(terminated[i]),
                bool(truncated[i]), {k: next_obs[k][i] for k in self.keys}, env=i, success=bool(success[i]),
            )  # fmt: skip
            self.returns[i] += float(reward[i])
            self.lengths[i] += 1
            if terminated[i] or truncated[i]:
                self.recent.append((float(self.returns[i]), bool(success[i]), int(self.lengths[i])))
                if self.imitation is not None:
                    self.imitation_episodes.append(bool(success[i]))
                self.returns[i], self.lengths[i] = 0.0, 0
                self.queue_pos[i] = self.chunk  # the next episode starts with a new chunk
                self.episodes_done += 1
                ended.append(i)
        if ended:
            if self.imitation is not None:
                self.imitation.reset(ended)
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[ended] = True
            seeds: list[int | None] = [None] * self.num_envs
            for i in ended:
                seeds[i] = self.current_seeds[i] = self._seed()
            reset = self._map(self.envs.reset(seed=seeds, options={"reset_mask": mask})[0])
            for k in next_obs:
                next_obs[k][mask] = reset[k][mask]
        self.obs = next_obs
        self.env_steps += self.num_envs
        return ended

    def _learn(self) -> None:
        """One learner update on a batch of ``batch_size`` x ``utd`` transitions."""
        batch = cast(Batch, self.buffer.sample(int(self.c["batch_size"]) * int(self.algo["utd"]), self.rng))
        if self.held:  # the buffer keeps full env actions; the learner acts on the free dims
            batch["action"] = batch["action"][..., self.free]
        self.metrics = self.learner.update(batch)
        self.updates += 1

    def _update(self) -> None:
        if self.env_steps < int(self.c["learning_starts"]) or len(self.buffer) < int(self.c["batch_size"]):
            return
        for _ in range(self.num_envs):  # one update per env step
            self._learn()

    def pretrain_offline(self, tb: Any) -> None:
        """``offline_updates`` learner updates on the demonstrations alone, then an evaluation (at env step 0: the
        offline result) and a checkpoint. A run that has taken env steps (or resumes after its offline phase)
        skips it."""
        todo = int(self.c["offline_updates"]) - self.updates
        if todo <= 0 or self.env_steps > 0:
            return
        log_every = int(self.c["log_every"])
        for _ in tqdm(range(todo), desc="offline", unit="update", disable=not self.progress):
            self._learn()
            if self.updates % log_every == 0:
                for k, v in self.metrics.items():
                    tb.add_scalar(f"offline/{k}", v, self.updates)
        self.evaluate(tb)
        self.save()

    def evaluate(self, tb: Any = None) -> dict[str, Any]:
        """realloop-eval's rollouts of the current actor on the held-out seeds; the row is kept in ``evals`` and, with
        a TensorBoard writer ``tb``, logged there (no success rate for an env without a success signal)."""
        e = self.c["eval"]
        with torch.random.fork_rng(devices=[]):  # evaluating leaves the training run's random stream alone
            result = evaluate(
                self.actor_policy(), self.env_id, self.env_kwargs, episodes=int(e["episodes"]),
                num_envs=int(e["num_envs"]), seed=int(e["seed"]), obs_map=self.c.get("obs_map"),
                success_key=str(self.c["success_key"]), progress=False,
            )  # fmt: skip
        row = {
            "env_steps": self.env_steps, "successes": result.successes, "episodes": result.episodes,
            "success_rate": result.success_rate, "return_mean": result.mean_return,
        }  # fmt: skip
        self.evals.append(row)
        for name in ("success_rate", "return_mean"):
            if tb is not None and row[name] is not None:
                tb.add_scalar(f"eval/{name}", row[name], self.env_steps)
        return row

    def _row(self, started: float, steps0: int) -> dict[str, Any]:
        rets = [r for r, _, _ in self.recent]
        return {
            "env_steps": self.env_steps, "episodes": self.episodes_done, "updates": self.updates,
            "return": float(np.mean(rets)) if rets else float("nan"),
            "success": float(np.mean([s for _, s, _ in self.recent])) if rets and self.has_success else float("nan"),
            "env_steps_per_s": (self.env_steps - steps0) / max(time.perf_counter() - started, 1e-9),
            **{k: self.metrics.get(k, float("nan")) for k in self._metric_columns()},
        }  # fmt: skip

    def _metric_columns(self) -> list[str]:
        """The learner metrics metrics.csv keeps: the same columns for the whole run, from the first row on."""
        columns = ["critic_loss", "actor_loss", "q", "temperature"]
        if float(self.algo.get("bc_weight") or 0) > 0:
            columns += ["bc_loss", "bc_cloned", "bc_rows", "bc_weight"]
        if float(self.algo.get("cql_weight") or 0) > 0:
            columns += ["cql_penalty"]
        if float(self.algo.get("action_penalty") or 0) > 0:
            columns += ["action_size"]
        if self.grasp is not None:
            columns += ["grasp_loss", "grasp_q"] + (["grasp_margin"] if "bc_loss" in columns else [])
        return columns

    def run(self) -> FinetuneSummary:
        from torch.utils.tensorboard import SummaryWriter

        c = self.c
        self.out.mkdir(parents=True, exist_ok=True)
        csv_path = self.out / "metrics.csv"
        if c["resume"] and csv_path.exists():
            _truncate_rows(csv_path, self.env_steps)
        f = csv_path.open("a", newline="")
        writer: csv.DictWriter | None = None
        tb = SummaryWriter(str(self.out / "tb"))
        steps, started, steps0 = int(c["steps"]), time.perf_counter(), self.env_steps
        limit = float(c["time_limit_min"]) * 60
        next_ckpt = (self.env_steps // int(c["checkpoint_every"]) + 1) * int(c["checkpoint_every"])
        every = int(c["eval"]["every"])
        next_eval = (self.env_steps // every + 1) * every if every else None
        next_log = (self.env_steps // int(c["log_every"]) + 1) * int(c["log_every"])
        checkpoint: Path | None = None
        interrupted = False
        stops = StopSignals()  # Ctrl-C or SIGTERM: finish this step, checkpoint it, stop
        bar = tqdm(total=steps, initial=self.env_steps, desc=f"finetune {self.algo['name']}", unit="step",
                   disable=not self.progress)  # fmt: skip
        try:
            self.pretrain_offline(tb)
            stops.install()  # after the offline phase, which Ctrl-C ends at once
            while self.env_steps < steps:
                ended = self._step()
                self._update()
                if self.imitation is not None and self.env_steps >= int(c["imitation"]["steps"]):
                    self.distil(tb)
                bar.update(self.num_envs)
                if self.env_steps >= next_log:
                    row = self._row(started, steps0)
                    if writer is None:
                        writer = csv.DictWriter(f, fieldnames=list(row))
                        if f.tell() == 0:
                            writer.writeheader()
                    writer.writerow(row)
                    f.flush()
                    for k, v in row.items():
                        if k != "env_steps" and np.isfinite(v):
                            tb.add_scalar(f"train/{k}", v, self.env_steps)
                    bar.set_postfix(ret=f"{row['return']:.2f}", success=f"{row['success']:.0%}")
                    next_log += int(c["log_every"])
                if next_eval is not None and self.env_steps >= next_eval:
                    self.evaluate(tb)
                    next_eval += every
                stop = stops.requested or (limit > 0 and time.perf_counter() - started > limit)
                # at an episode end (of env 0), so a resumed run starts where this one would have gone on
                if (self.env_steps >= next_ckpt and 0 in ended) or stop:
                    checkpoint = self.save()
                    next_ckpt = (self.env_steps // int(c["checkpoint_every"]) + 1) * int(c["checkpoint_every"])
                if stop:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            stops.restore()
            bar.close()
            f.close()
            tb.close()
        final_eval = None
        if not interrupted:
            final_eval = self.evaluate() if not self.evals or self.evals[-1]["env_steps"] != self.env_steps else None
            final_eval = final_eval or self.evals[-1]
            checkpoint = self.save()
        elif checkpoint is None:
            last = self.out / "checkpoints" / "last"
            checkpoint = last.resolve() if last.exists() else None
        self.buffer.close()
        self.envs.close()
        train_success = float(np.mean([s for _, s, _ in self.recent])) if self.recent and self.has_success else None
        summary = FinetuneSummary(
            self.env_id, self.algo["name"], str(self.out), self.env_steps, self.start_env_steps, self.episodes_done,
            self.updates, round(time.perf_counter() - started, 1), train_success, final_eval,
            str(checkpoint) if checkpoint else None, interrupted, self.evals, int(self.c["seed"]), self.command,
            self.distilled, self.actions_executed if self.steer == "noise" else None,
        )  # fmt: skip
        (self.out / "finetune_summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
        plot_curves(csv_path, self.evals, self.out / "curves.png", f"{self.algo['name']} on {self.env_id}")
        return summary


def _with_defaults(algo: Mapping[str, Any]) -> dict[str, Any]:
    """A saved run's algo settings, with the defaults of settings added since it was written (so they match)."""
    defaults = {f.name: f.default for f in dataclasses.fields(SACConfig)}
    # grasp_dim is no algo setting: realloop-finetune derives it from grasp_action
    own = {k: v for k, v in defaults.items() if k not in algo and k not in ("hidden_dims", "grasp_dim")}
    own.update({k: v for k, v in STEER_DEFAULTS.items() if k not in algo})
    return {**own, **algo}


def _control_dt(env: gym.Env) -> float:
    """Seconds per env step: a realloop task's control period, a MuJoCo env's ``dt``, else 1."""
    u = env.unwrapped
    robot = getattr(u, "robot", None)
    dt = getattr(robot, "control_dt", None) or getattr(u, "dt", None)
    return float(dt) if dt else 1.0


def _learner_shape(feature: Mapping[str, Any]) -> tuple[int, ...]:
    s = [int(v) for v in feature["shape"]]
    return (s[2], s[0], s[1]) if feature.get("dtype") == "uint8" and len(s) == 3 else tuple(s)


def _truncate_rows(path: Path, env_steps: int) -> None:
    """Drop the rows an interrupted run logged after its checkpoint."""
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    step = [ln.split(",", 1)[0] for ln in lines]
    kept = [lines[0]] + [ln for ln, s in zip(lines[1:], step[1:], strict=True) if s.isdigit() and int(s) <= env_steps]
    path.write_text("".join(kept))


def plot_curves(csv_path: Path, evals: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Training return and success (last 20 episodes) and evaluation success against env steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    if rows:
        x = [int(r["env_steps"]) for r in rows]
        a.plot(x, [float(r["return"]) for r in rows], label="training return (last 20)")
        b.plot(x, [float(r["success"]) for r in rows], label="training success (last 20)")
    if evals:
        x = [e["env_steps"] for e in evals]
        a.plot(x, [e["return_mean"] for e in evals], "o-", label="evaluation return")
        if all(e["success_rate"] is not None for e in evals):
            b.plot(x, [e["success_rate"] for e in evals], "o-", label="evaluation success")
    for ax in (a, b):
        ax.set_xlabel("env steps")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finetune(cfg: DictConfig | Mapping[str, Any], progress: bool = True, command: str | None = None) -> FinetuneSummary:
    """Run a finetune config (hydra DictConfig or a resolved dict); see the module doc. ``command``: the command
    line that asked for it, kept in the summary JSON."""
    plain: dict[str, Any] = to_plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    return Finetuner(plain, progress, command).run()


USER_ERRORS = (ValueError, KeyError, FileNotFoundError, CheckpointError)


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="finetune")
def _app(cfg: DictConfig) -> None:
    progress = cfg.progress
    try:
        command = shlex.join(["realloop-finetune", *sys.argv[1:]])
        summary = finetune(cfg, sys.stderr.isatty() if progress == "auto" else bool(progress), command)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"realloop-finetune: error: {msg}", file=sys.stderr)
        sys.exit(2)
    print(summary.line())
    print(f"summary: {Path(summary.out) / 'finetune_summary.json'}, curves: {Path(summary.out) / 'curves.png'}")
    if summary.interrupted:
        sys.exit(130)


def main() -> None:
    """Console entry point (hydra parses ``key=value`` overrides from sys.argv, checked first)."""
    exit_on_config_error("realloop-finetune", compose_config)
    _app()


if __name__ == "__main__":
    main()
