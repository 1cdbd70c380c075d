"""A learner's whole training state as a folder of safetensors and JSON, never pickle:

    <folder>/
        training_state.safetensors  every module's state dict (``module.<name>.<key>``), every optimiser's
                                    tensors (``optimizer.<name>/optimizer.<i>.<moment>``), torch's RNG states
        training_state.json         optimiser hyper-parameters, the learner's extra state (counters), numpy's
                                    and Python's RNG states, and the caller's ``meta``

These are the training-state files of every checkpoint (:mod:`realloop.policies.checkpoint`), realloop-train's
and realloop-finetune's alike.

Saving and loading go through the learner seam (:class:`~realloop.policies.rl.learner.Learner`: ``modules``,
``optimizers``, ``extra_state``), so this works for every learner. After :func:`load_learner_state` into a learner
built with the same arguments, the same batches give bit-identical parameters (on one device) to a learner that
never stopped. The folder is written under a temporary name and renamed (:func:`~realloop.policies.checkpoint.
atomic_folder`): a crash leaves the previous state, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from realloop.policies.checkpoint import (
    TRAINING_JSON,
    TRAINING_STATE,
    CheckpointError,
    atomic_folder,
    load_training_state,
    optimizer_state,
    restore_optimizer,
    restore_rng_state,
    rng_state,
    save_tensors,
    write_json,
)
from realloop.policies.rl.learner import Learner

FORMAT = "realloop-learner-state/1"


def learner_state(learner: Learner, meta: Mapping[str, Any] | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``learner``'s modules, optimisers, extra state and the global RNG states (torch, CUDA, numpy, Python), as
    tensors and JSON, with ``meta`` (plain JSON: config, step...); :func:`restore_learner_state` undoes it."""
    tensors = {}
    for name, module in learner.modules().items():
        tensors.update({f"module.{name}.{k}": v for k, v in module.state_dict().items()})
    optimizers = {}
    for name, opt in learner.optimizers().items():
        opt_tensors, optimizers[name] = optimizer_state(opt)
        tensors.update({f"optimizer.{name}/{k}": v for k, v in opt_tensors.items()})
    rng_tensors, rng_json = rng_state()
    tensors.update(rng_tensors)
    state = {
        "format": FORMAT,
        "modules": sorted(learner.modules()),
        "optimizers": optimizers,
        "extra_state": learner.extra_state(),
        "rng": rng_json,
        "meta": dict(meta or {}),
    }
    return tensors, state


def save_learner_state(folder: str | os.PathLike[str], learner: Learner, meta: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`learner_state` to ``folder`` (replaced atomically). Returns the path."""
    tensors, state = learner_state(learner, meta)
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        save_tensors(tensors, tmp / TRAINING_STATE)
        write_json(tmp / TRAINING_JSON, state)
    return folder


def load_learner_state(folder: str | os.PathLike[str], learner: Learner, restore_rng: bool = True) -> dict[str, Any]:
    """Load what :func:`save_learner_state` wrote into ``learner`` (see :func:`restore_learner_state`). Returns the
    ``meta``."""
    tensors, state = load_training_state(Path(folder))
    return restore_learner_state(learner, tensors, state, str(folder), restore_rng)


def restore_learner_state(
    learner: Learner,
    tensors: Mapping[str, Tensor],
    state: Mapping[str, Any],
    where: str = "learner state",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what :func:`learner_state` returned into ``learner`` (built with the same arguments): modules
    (strictly), optimisers, extra state and, with ``restore_rng``, the global RNG states. Returns the ``meta``.
    A state that is not a learner's, or one of another learner, raises :class:`CheckpointError` (``where`` names
    it)."""
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a realloop learner state (format {state.get('format')!r})")
    modules, optimizers = learner.modules(), learner.optimizers()
    if sorted(modules) != state["modules"] or sorted(optimizers) != sorted(state["optimizers"]):
        raise CheckpointError(
            f"{where} holds modules {state['modules']} and optimisers {sorted(state['optimizers'])}, this learner "
            f"has {sorted(modules)} and {sorted(optimizers)}: it was saved by another kind of learner"
        )
    for name, module in modules.items():
        prefix = f"module.{name}."
        try:
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as e:
            lines = str(e).strip().splitlines()
            raise CheckpointError(
                f"{where}: the saved {name!r} does not fit this learner's ({lines[-1].strip() if lines else e}); "
                "build the learner with the arguments it was saved with"
            ) from None
    for name, opt in optimizers.items():
        prefix = f"optimizer.{name}/"
        restore_optimizer(
            opt, {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}, state["optimizers"][name]
        )
    learner.load_extra_state(state["extra_state"])
    if restore_rng:
        restore_rng_state(tensors, state["rng"])
    return dict(state["meta"])
