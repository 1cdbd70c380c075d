"""Checkpoints: a folder of safetensors weights and JSON, never pickle, so loading one cannot run code.

    <run>/checkpoints/step_0005000/
        model.safetensors            the policy's inference weights (EMA when training used it), normaliser
                                     buffers included
        config.json                  the resolved training config (policy, dataset, optimiser, ...)
        policy.json                  feature schema of the policy's inputs and outputs, the normaliser in
                                     readable form, the dataset it came from (path, episodes, attributes)
        training_state.safetensors   the learner's state (realloop.policies.rl.state): raw weights of every
                                     module, optimiser moments, RNG states: what resume needs
        training_state.json          optimiser hyper-parameters, numpy's and Python's RNG states, the run's
                                     progress (step, history...) as ``meta``
    <run>/checkpoints/last -> step_0005000

A folder is written under a temporary name and renamed, so a crash never leaves a half-written checkpoint.
The policy class is named by the config's ``_target_``; it must lie inside ``realloop`` and is checked before
anything is imported (:func:`check_config`). Env ids and env kwargs read from a checkpoint or a dataset are
checked the same way before use (:func:`check_env_id`, :func:`check_env_kwargs`): only realloop's own tasks, with
plain-data kwargs the task's constructor takes.

realloop-train (an :class:`~realloop.policies.imitation_learner.ImitationLearner`) and realloop-finetune (the
actor-critic learners) write the same training state through the learner seam (:mod:`realloop.policies.rl.state`);
its pieces live here: :func:`atomic_folder`, :func:`optimizer_state` / :func:`restore_optimizer`, :func:`rng_state`
/ :func:`restore_rng_state` and :func:`load_training_state`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from realloop.policies.chunk_policy import ChunkPolicy

ALLOWED_PREFIX = "realloop."
WEIGHTS = "model.safetensors"
TRAINING_STATE = "training_state.safetensors"
TRAINING_JSON = "training_state.json"


class UnsafeConfigError(ValueError):
    """A config names code outside realloop (``_target_``) or carries an interpolation."""


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or does not match its policy."""


def check_config(cfg: Any, where: str = "config") -> None:
    """Refuse any ``_target_`` outside ``realloop.`` and any ``${...}`` interpolation, anywhere in ``cfg``.

    Interpolations are refused because resolvers can read the environment or, if a program registered one,
    run code; a resolved config has none.
    """
    if isinstance(cfg, Mapping):
        for k, v in cfg.items():
            if k == "_target_" and (not isinstance(v, str) or not v.startswith(ALLOWED_PREFIX) or ".." in v):
                raise UnsafeConfigError(
                    f"{where}._target_ = {v!r} is outside realloop; a checkpoint may only name classes of "
                    f"the realloop package ({ALLOWED_PREFIX}...). Refusing to load it"
                )
            check_config(v, f"{where}.{k}")
    elif isinstance(cfg, list | tuple):
        for i, v in enumerate(cfg):
            check_config(v, f"{where}[{i}]")
    elif isinstance(cfg, str) and "${" in cfg:
        raise UnsafeConfigError(f"{where} = {cfg!r} is an interpolation; configs must be resolved before saving")


def check_env_id(env_id: Any, where: str) -> str:
    """``env_id`` read from a file (``where``: a checkpoint's policy.json, a dataset's attributes), if it is one
    of realloop's registered tasks (``realloop/<Task>-v0``); :class:`UnsafeConfigError` otherwise.

    gymnasium imports ``module`` to make an id ``module:Env``, so an id taken from a file unchecked would let the
    file run code. An id typed on the command line is the user's own and does not come through here.
    """
    from realloop.sim.envs import TASKS

    if isinstance(env_id, str) and env_id in TASKS:
        return env_id
    raise UnsafeConfigError(
        f"{where}: env_id {env_id!r} is not one of realloop's tasks ({', '.join(TASKS)}); an env id read from a "
        "checkpoint or dataset may only name those (gymnasium imports the module of a 'module:Env' id). To use "
        "another env, name it on the command line: env=<gymnasium id>"
    )


_ROBOT_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a robot of configs/robot/, never a path to another spec file
_JSON_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """JSON data only: nothing a loader could turn into an object."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise UnsafeConfigError(f"{where} has a key {k!r} that is not a string; it must be plain JSON data")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _JSON_SCALARS):
        raise UnsafeConfigError(f"{where} = {value!r} is a {type(value).__name__}; it must be plain JSON data")


def check_env_kwargs(kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``gym.make`` kwargs for a realloop task read from a file (``where``), if each is a parameter of the task's
    constructor (or ``max_episode_steps``) holding plain JSON data, with no ``_target_`` or interpolation and
    ``robot`` a robot name, not a path; :class:`UnsafeConfigError` otherwise."""
    from realloop.sim.envs import RobotEnv

    allowed = {p for p in inspect.signature(RobotEnv.__init__).parameters if p != "self"} | {"max_episode_steps"}
    for key, value in kwargs.items():
        if key not in allowed:
            raise UnsafeConfigError(
                f"{where}: env kwarg {key!r} is not a parameter of realloop's tasks ({', '.join(sorted(allowed))}); "
                "remove it from the file, or pass env_kwargs={...} on the command line"
            )
        _check_plain(value, f"{where}.{key}")
        if key == "robot" and value is not None and not (isinstance(value, str) and _ROBOT_NAME.fullmatch(value)):
            raise UnsafeConfigError(
                f"{where}.robot = {value!r} is not the name of a robot in configs/robot/; a file may not point at "
                "another spec file. Pass env_kwargs={robot: <path>} on the command line for that"
            )
    check_config(dict(kwargs), where)
    return dict(kwargs)


def build_policy(policy_cfg: Mapping[str, Any], features: Mapping[str, Mapping[str, Any]]) -> ChunkPolicy:
    """The policy a ``policy`` config section describes (``_target_`` = its class, other keys = its
    arguments, ``name`` excluded), for the given feature schema."""
    check_config(policy_cfg, "policy")
    kwargs = dict(policy_cfg)
    target = kwargs.pop("_target_", None)
    kwargs.pop("name", None)
    if target is None:
        raise UnsafeConfigError(
            "the policy config has no _target_ naming its class, "
            "e.g. realloop.policies.diffusion.policy.DiffusionPolicy"
        )
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise UnsafeConfigError(f"policy _target_ {target!r} does not exist in realloop: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, ChunkPolicy)):
        raise UnsafeConfigError(f"policy _target_ {target!r} is not a realloop policy class (a ChunkPolicy)")
    return cls(features=features, **kwargs)


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary folder next to ``folder`` (``<name>.tmp``) to write into; when the block ends without an
    error it replaces ``folder``, so readers see the old folder or the complete new one, never a part. An error
    (a full disk) removes the temporary folder and leaves ``folder`` as it was."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # what a killed writer left
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """``tensors`` as one safetensors file (detached, contiguous, on the CPU)."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


# -- optimiser and RNG state as safetensors + JSON ---------------------------------------------------------------
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state: its tensors (moments, step counts) as ``optimizer.<param index>.<name>``, and JSON
    (hyper-parameters of each param group, non-tensor per-parameter values). :func:`restore_optimizer` undoes it."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{i}.{name}"] = v
            else:
                scalars[f"{i}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], js: Mapping[str, Any]) -> None:
    """Load what :func:`optimizer_state` returned into ``opt`` (built over the same parameters in the same order);
    keys of ``tensors`` that do not start with ``optimizer.`` are ignored."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    for key, v in js["scalars"].items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's global random states: torch's (and each CUDA device's) as tensors ``rng.torch``,
    ``rng.cuda.<i>``; numpy's legacy global generator and Python's ``random`` as JSON. :func:`restore_rng_state`
    undoes it."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state(legacy=False)
    assert isinstance(np_state, dict)  # legacy=False: the dict form
    version, words, gauss = random.getstate()
    js = {
        "numpy": {**np_state, "state": {**np_state["state"], "key": np_state["state"]["key"].tolist()}},
        "python": [version, list(words), gauss],
    }
    return tensors, js


def restore_rng_state(tensors: Mapping[str, torch.Tensor], js: Mapping[str, Any]) -> None:
    """Set the global random states :func:`rng_state` returned (CUDA's only where it was saved and is here)."""
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"rng.cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{i}"], i)
    np_state = js["numpy"]
    key = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**np_state, "state": {**np_state["state"], "key": key}})
    version, words, gauss = js["python"]
    random.setstate((version, tuple(words), gauss))


def save_checkpoint(
    folder: str | os.PathLike[str],
    policy: ChunkPolicy,
    config: Mapping[str, Any],
    meta: Mapping[str, Any],
    training_tensors: Mapping[str, torch.Tensor] | None = None,
    training_json: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (temporary name, then rename) and return its path."""
    folder = Path(folder)
    check_config(dict(config))
    with atomic_folder(folder) as tmp:
        save_tensors(policy.state_dict(), tmp / WEIGHTS)
        write_json(tmp / "config.json", dict(config))
        schema = {k: f.to_dict() for k, f in policy.features.items()}
        write_json(tmp / "policy.json", {"features": schema, "normalizer": policy.normalizer.describe(), **meta})
        if training_tensors is not None:
            save_tensors(training_tensors, tmp / TRAINING_STATE)
            write_json(tmp / TRAINING_JSON, dict(training_json or {}))
    return folder


def link_last(folder: Path) -> None:
    """Point ``<checkpoints>/last`` at ``folder`` (atomically)."""
    link = folder.parent / "last"
    tmp = folder.parent / "last.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(folder.name)
    os.replace(tmp, link)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a path to one, to a ``checkpoints`` folder or to a training run (its last)."""
    p = Path(path)
    for candidate in (p, p / "last", p / "checkpoints" / "last"):
        if (candidate / WEIGHTS).is_file():
            return candidate.resolve()
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: the path does not exist")
    raise CheckpointError(
        f"no checkpoint at {p}: expected {WEIGHTS} there, in {p}/last or in {p}/checkpoints/last "
        "(a run folder of realloop-train)"
    )


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object at ``path``; :class:`CheckpointError` naming the file when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"the checkpoint lacks {path.name} ({path.parent})") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is corrupted") from e


@dataclass
class LoadedCheckpoint:
    """A policy rebuilt from a checkpoint, in eval mode, with what the checkpoint says about it."""

    policy: ChunkPolicy
    config: dict[str, Any]
    meta: dict[str, Any]
    path: Path


def load_policy(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the policy of a checkpoint (see :func:`resolve_checkpoint` for ``path``), in eval mode."""
    folder = resolve_checkpoint(path)
    config = read_json(folder / "config.json")
    meta = read_json(folder / "policy.json")
    check_config(config)  # before anything is imported or built
    if "policy" not in config or "features" not in meta:
        raise CheckpointError(f"{folder} lacks the policy config or the feature schema")
    policy = build_policy(config["policy"], meta["features"])
    try:
        weights = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for truncated or garbage files
        raise CheckpointError(f"{folder / WEIGHTS} cannot be read ({e}); the checkpoint is corrupted") from e
    try:
        policy.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {folder} do not match the policy its config describes: {e}") from e
    policy.to(device).eval()
    return LoadedCheckpoint(policy, config, meta, folder)


def load_training_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON that resume needs, from a checkpoint folder; :class:`CheckpointError` when they are
    missing or unreadable."""
    if not (folder / TRAINING_STATE).is_file():
        raise CheckpointError(f"{folder} has no {TRAINING_STATE}: it cannot be resumed from")
    js = read_json(folder / TRAINING_JSON)
    try:
        tensors = load_file(str(folder / TRAINING_STATE))
    except Exception as e:  # safetensors raises its own error types for truncated or garbage files
        raise CheckpointError(f"{folder / TRAINING_STATE} cannot be read ({e}); the training state is corrupted") from e
    return tensors, js
