"""realloop-train: train a policy on a realloop dataset.

    realloop-train policy=diffusion dataset.path=outputs/arm_lift.zarr steps=5000 device=auto

Hydra config: configs/train.yaml with a policy from configs/policy/. The run folder (``out``) gets:

- ``checkpoints/step_<N>/`` and ``checkpoints/last`` (see :mod:`realloop.policies.checkpoint`);
- ``metrics.csv`` and TensorBoard event files in ``tb/`` (train loss, learning rate, samples/s, validation
  loss, rollout success);
- ``loss.png`` (the loss curves) and ``train_summary.json`` at the end, with the one-line summary printed.

``resume=true`` continues from ``checkpoints/last`` with the same optimiser, EMA, data order and RNG state
(on CPU the resumed run is bit-identical to an uninterrupted one); it refuses a dataset other than the one the
checkpoint was trained on (:func:`dataset_fingerprint`) and an ``out`` without a checkpoint. Ctrl-C checkpoints
the current step and exits (:class:`TrainingInterrupted`). On CUDA, bf16 autocast and
``torch.compile`` are on by default (``precision``, ``compile``).

Several GPUs (or CPU processes): ``torchrun --nproc_per_node=N -m realloop.policies.train ...`` trains with
DistributedDataParallel (NCCL on CUDA, one GPU per process by ``LOCAL_RANK``; gloo on CPU), detected from
torchrun's ``WORLD_SIZE``. ``batch_size`` stays the global batch: every rank draws the same global batch and
trains on its slice (:func:`shard_batches`), so the loss curve is the one process's. Rank 0 alone writes the run
folder; the ranks agree on stopping (Ctrl-C, ``time_limit_min``) at the same step. See :class:`Distributed`.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from realloop.configs import CONFIG_DIR
from realloop.configs.schema import compose_checked, exit_on_config_error, to_plain
from realloop.data import Dataset, DatasetLockedError, NotADatasetError
from realloop.data.stats import MissingStatsError, ensure_stats, load_stats
from realloop.data.training import WindowDataset, resized_feature, split_episodes
from realloop.policies.checkpoint import (
    CheckpointError,
    build_policy,
    link_last,
    load_training_state,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.diffusion.distill import student_config
from realloop.policies.imitation_learner import ImitationLearner, LossFn
from realloop.policies.rl.state import FORMAT as LEARNER_STATE_FORMAT
from realloop.policies.rl.state import learner_state, restore_learner_state
from realloop.policies.stop_signals import StopSignals

CSV_FIELDS = ("step", "epoch", "train_loss", "val_loss", "lr", "samples_per_s", "success_rate", "mean_return")


# what configs/train.yaml's defaults cannot say about its keys (realloop.configs.schema)
CONFIG_OPEN = ("eval.env_kwargs", "eval.obs_map")
CONFIG_TYPES = {
    "compile": "bool|str",
    "dataset.path": "str|null",
    "dataset.rate": "number|null",
    "dataset.image_size": "list|null",
    "stop_at": "int|null",
    "time_limit_min": "number|null",
    "eval.env": "str|null",
}
CONFIG_BOUNDS = {
    "steps": (1, None), "batch_size": (1, None), "seed": (0, None), "log_every": (1, None), "val_every": (0, None),
    "val_batches": (1, None), "checkpoint_every": (1, None), "keep_checkpoints": (1, None), "stop_at": (1, None),
    "time_limit_min": (0, None), "dataset.val_fraction": (0, 1), "dataset.num_workers": (0, None),
    "optim.lr": (0, None), "optim.warmup_steps": (0, None), "optim.grad_clip": (0, None), "ema.decay": (0, 1),
    "eval.every": (0, None), "policy.color_jitter": (0, 0.99), "eval.episodes": (0, None), "eval.num_envs": (1, None),
    "policy.teacher_steps": (1, None),
}  # fmt: skip
CONFIG_CHOICES = {
    "precision": ("auto", "fp32", "bf16"),
    "compile": ("auto", True, False),
    "policy.image_encoder": ("resnet18", "small"),
}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The train config with hydra-style overrides, without running hydra's app (for scripts and tests); a key
    it does not have or a bad value raises :class:`~realloop.configs.schema.ConfigError` (one line)."""
    return compose_checked(
        "train", overrides, open=CONFIG_OPEN, types=CONFIG_TYPES, bounds=CONFIG_BOUNDS, choices=CONFIG_CHOICES
    )


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` is CUDA when available, else CPU. With ``local_rank`` (one of several processes on a machine, see
    :class:`Distributed`) a CUDA device is that process's own GPU, whatever index ``name`` gives."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    if local_rank is not None and device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this machine has {count} GPUs: start at most {count} processes per "
                "machine (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
    return device


# -- several processes (torchrun) -------------------------------------------------------------------------------
# Rank 0 alone runs rollouts (and writes checkpoints) while the other ranks wait in their next collective: longer
# than NCCL's default 10 minutes for a large eval.episodes.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Distributed:
    """This process's place among torchrun's processes; one process alone is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; one process when they are not set (or
        ``WORLD_SIZE`` is 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start_process_group(dist: Distributed, device: torch.device) -> bool:
    """Join torchrun's process group (NCCL for CUDA, gloo for CPU) unless there is one process or a group exists;
    whether this call started it (the caller then destroys it)."""
    if not dist.enabled or torch.distributed.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", device_id=device, timeout=PROCESS_GROUP_TIMEOUT)
    else:
        torch.distributed.init_process_group("gloo", timeout=PROCESS_GROUP_TIMEOUT)
    return True


def shard_batches(batches: Iterator[list[int]], rank: int, world_size: int) -> Iterator[list[int]]:
    """Rank ``rank``'s contiguous slice of each global batch: together the ranks train on exactly the batches one
    process would (the global batch size must divide by ``world_size``)."""
    for batch in batches:
        per_rank = len(batch) // world_size
        yield batch[rank * per_rank : (rank + 1) * per_rank]


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s own random stream (dropout, diffusion noise, crops): independent of the other
    ranks', so the ranks do not draw the same noise for their slices."""
    digest = hashlib.sha256(f"realloop-train:{seed}:{rank}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers under torchrun ignore Ctrl-C: the rank stops them itself at the step all ranks agree on
    (a worker ended by the signal would fail one rank's next batch and leave the others waiting)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _LossModule(torch.nn.Module):
    """The policy's training loss as ``forward``: what DistributedDataParallel wraps, as it synchronises the
    gradients of its forward's outputs. The checkpoint saves the policy itself (no ``module.`` prefix)."""

    def __init__(self, policy: ChunkPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.policy.compute_loss(batch)


@dataclass
class TrainSummary:
    """What one realloop-train run did."""

    policy: str
    dataset: str
    out: str
    device: str
    steps: int
    start_step: int
    seconds: float
    samples_per_s: float
    train_loss: float
    val_loss: float | None
    checkpoint: str
    parameters: int
    eval: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        val = f", val loss {self.val_loss:.4f}" if self.val_loss is not None else ""
        ev = f", rollout success {self.eval['success_rate']:.0%}" if self.eval else ""
        return (
            f"trained {self.policy} ({self.parameters / 1e6:.2f}M params) for {self.steps - self.start_step} steps "
            f"(to step {self.steps}) on {self.device} in {self.seconds:.0f} s ({self.samples_per_s:.0f} samples/s): "
            f"train loss {self.train_loss:.4f}{val}{ev} -> {self.checkpoint}"
        )


# -- data order ------------------------------------------------------------------------------------------------
def batch_indices(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[list[int]]:
    """Index batches (drop last) of seeded per-epoch permutations, from global step ``start_step`` on: the data
    order depends only on (seed, step), so a resumed run sees the batches an uninterrupted one would."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training samples; lower batch_size")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        for b in range(skip, per_epoch):
            yield perm[b * batch_size : (b + 1) * batch_size]
        epoch, skip = epoch + 1, 0


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# -- the run ------------------------------------------------------------------------------------------------------
class Trainer:
    """One training run of a resolved config (a plain dict; see configs/train.yaml).

    ``dist`` is this process's place among torchrun's (default: from the environment, :meth:`Distributed.from_env`);
    with several, the process group is joined here if it is not yet (:func:`start_process_group`)."""

    def __init__(self, cfg: Mapping[str, Any], progress: bool = True, dist: Distributed | None = None) -> None:
        self.cfg = dict(cfg)
        if "teacher" in self.cfg["policy"]:  # a distilled policy: its architecture and data view are the teacher's
            if not self.cfg["policy"]["teacher"]:
                raise ValueError("policy.teacher is not set: name the diffusion run to distil, policy.teacher=<run>")
            self.cfg = student_config(self.cfg)
        self.dist = dist if dist is not None else Distributed.from_env()
        self.progress = progress and self.dist.main
        self.out = Path(self.cfg["out"])
        self.device = pick_device(str(self.cfg["device"]), self.dist.local_rank if self.dist.enabled else None)
        batch_size, world = int(self.cfg["batch_size"]), self.dist.world_size
        if batch_size % world:
            raise ValueError(
                f"batch_size={batch_size} does not divide among the {world} processes: it is the global batch, "
                f"split evenly across them; choose a multiple of {world}"
            )
        self.rank_batch_size = batch_size // world
        self.started_process_group = start_process_group(self.dist, self.device)
        seed = int(self.cfg["seed"])
        torch.manual_seed(seed)  # every rank: the same initial weights
        np.random.seed(seed)

        dcfg = self.cfg["dataset"]
        if not dcfg.get("path"):
            raise ValueError("dataset.path is not set: give the dataset to train on, e.g. dataset.path=outputs/x.zarr")
        self.dataset_path = Path(dcfg["path"])
        if not self.dist.main:
            self._barrier()  # rank 0 computes and stores missing statistics; the others then find them
        ensure_stats(self.dataset_path, progress=self.progress)
        if self.dist.main:
            self._barrier()
        with Dataset.open(self.dataset_path) as ds:
            pcfg = self.cfg["policy"]
            keys = [*pcfg["obs_keys"], pcfg.get("action_key", "action")]
            missing = [k for k in keys if k not in ds.features]
            if missing:
                raise KeyError(
                    f"{self.dataset_path} has no features {missing} that policy {pcfg['name']} needs (it has "
                    f"{sorted(ds.features)}); choose the policy's inputs with policy.obs_keys=[...]"
                )
            size = dcfg.get("image_size")
            # the policy sees camera frames at image_size (fitted by WindowDataset, and by the runner at run time)
            features = {k: (resized_feature(ds.features[k], size) if size else ds.features[k]).to_dict() for k in keys}
            self.features: dict[str, Any] = json.loads(json.dumps(features))  # as policy.json stores them
            self.dataset_info = {
                "path": str(self.dataset_path.resolve()),
                "attributes": ds.info.get("attributes", {}),
                "fingerprint": dataset_fingerprint(ds),
            }
            self.train_eps, self.val_eps = split_episodes(ds.episode_indices, float(dcfg["val_fraction"]), seed)
        self.policy = build_policy(pcfg, features)
        self.policy.normalizer.set_stats(load_stats(self.dataset_path))
        self.policy.to(self.device)
        window = dict(
            obs_keys=pcfg["obs_keys"],
            action_key=pcfg.get("action_key", "action"),
            n_obs_steps=pcfg["n_obs_steps"],
            horizon=pcfg["horizon"],
            rate=dcfg.get("rate"),
            image_size=dcfg.get("image_size"),
            cache_images=bool(dcfg.get("cache_images", False)),
            progress=self.progress and bool(dcfg.get("cache_images", False)),  # decoding takes a while
        )
        self.train_data = WindowDataset.for_policy(self.dataset_path, episodes=self.train_eps, **window)
        self.val_data = (
            WindowDataset.for_policy(self.dataset_path, episodes=self.val_eps, **window) if self.val_eps else None
        )

        ocfg, ecfg = self.cfg["optim"], self.cfg["ema"]
        cuda = self.device.type == "cuda"
        precision = self.cfg["precision"]
        self.autocast_dtype = torch.bfloat16 if (precision == "bf16" or (precision == "auto" and cuda)) else None
        self.learner = ImitationLearner(
            self.policy,
            lr=float(ocfg["lr"]),
            betas=tuple(ocfg["betas"]),
            weight_decay=float(ocfg["weight_decay"]),
            grad_clip=float(ocfg["grad_clip"]),
            ema=(float(ecfg["decay"]), float(ecfg["power"])) if ecfg["enabled"] else None,
            autocast=self._autocast,
        )
        self.step = 0
        self.saved_step: int | None = None  # the step of the newest checkpoint in out, if any
        self.history: list[dict[str, Any]] = []
        compile_on = self.cfg["compile"] is True or (self.cfg["compile"] == "auto" and cuda)
        if self.dist.rank > 0:  # after the shared initial weights: this rank's own dropout, noise and crops
            torch.manual_seed(rank_seed(seed, self.dist.rank))
        self._resume_or_refuse()
        loss_fn: LossFn = self.policy.compute_loss
        if self.dist.enabled:  # after resume: DDP broadcasts rank 0's weights, which all ranks have loaded anyway
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.type == "cuda" else None
            loss_fn = DistributedDataParallel(_LossModule(self.policy), device_ids=ids)
        self.learner.loss_fn = torch.compile(loss_fn) if compile_on else loss_fn

    # -- resume -------------------------------------------------------------------------------------------------
    def _resume_or_refuse(self) -> None:
        ckpts = self.out / "checkpoints"
        if not (ckpts / "last").exists():
            if self.cfg["resume"]:
                raise FileNotFoundError(
                    f"resume=true but {self.out} has no checkpoint to resume from ({ckpts / 'last'} does not exist); "
                    "pass the out= of the run to continue, or drop resume=true to start a new run there"
                )
            return
        if not self.cfg["resume"]:
            raise FileExistsError(
                f"{self.out} already has checkpoints; pass resume=true to continue that run, or choose another out="
            )
        folder = resolve_checkpoint(ckpts)
        saved = json.loads((folder / "config.json").read_text())
        if saved["policy"] != self.cfg["policy"]:
            raise CheckpointError(
                f"cannot resume {folder}: its policy config differs from this run's ({saved['policy']} vs "
                f"{self.cfg['policy']})"
            )
        self._check_same_dataset(folder)
        tensors, js = load_training_state(folder)
        if js.get("format") != LEARNER_STATE_FORMAT:
            raise CheckpointError(
                f"cannot resume {folder}: its training state was written by an older realloop-train (no learner "
                "state); the checkpoint still runs in realloop-eval, but training cannot continue from it: choose a "
                "new out="
            )
        try:
            meta = restore_learner_state(self.learner, tensors, js, str(folder), restore_rng=False)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume {e}; choose a new out=") from None
        self.step = int(meta["step"])
        # each rank's own random stream as it was (rank 0's is the one process's, in the learner state); a rank
        # the checkpoint has no state of (more processes than saved it) starts a new stream of its own
        if not self.dist.rank:
            restore_rng_state(tensors, js["rng"])
        else:
            suffix = f".rank{self.dist.rank}"
            if f"rng.torch{suffix}" in tensors:
                torch.set_rng_state(tensors[f"rng.torch{suffix}"])
            else:
                torch.manual_seed(rank_seed(int(self.cfg["seed"]), self.dist.rank, self.step))
            if self.device.type == "cuda" and f"rng.cuda{suffix}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], self.device)
        self.saved_step = self.step
        self.history = [r for r in meta.get("history", []) if int(r.get("step", 0)) <= self.step]
        if self.dist.main:
            print(f"resuming {folder} at step {self.step}", file=sys.stderr)

    def _check_same_dataset(self, folder: Path) -> None:
        """Refuse to resume a checkpoint on data other than it was trained on: other features (the weights would
        not fit), or the same features from another dataset or a changed one (other episodes or statistics)."""
        meta = json.loads((folder / "policy.json").read_text())
        trained = meta.get("dataset") or {}
        was = trained.get("path", "?")
        fix = f"pass dataset.path={was} to resume on the data it was trained on, or choose a new out= for this dataset"
        if meta.get("features") != self.features:
            raise CheckpointError(
                f"cannot resume {folder}: it was trained on features {_feature_list(meta.get('features') or {})} "
                f"of {was}, but {self.dataset_path} has {_feature_list(self.features)}; {fix}"
            )
        fingerprint = trained.get("fingerprint")
        if fingerprint is not None and fingerprint != self.dataset_info["fingerprint"]:
            same_path = was == self.dataset_info["path"]
            now = f"fingerprint {self.dataset_info['fingerprint']}: other episodes or statistics"
            what = (
                f"{was} has changed since ({now})"
                if same_path
                else f"dataset.path={self.dataset_path} is another dataset ({now})"
            )
            raise CheckpointError(
                f"cannot resume {folder}: it was trained on {was} (fingerprint {fingerprint}), but {what}; {fix}"
            )

    def save(self) -> Path:
        """Checkpoint the current step; every rank calls it (their RNG states go to rank 0, which writes)."""
        folder = self.out / "checkpoints" / f"step_{self.step:07d}"
        rng = self._other_rank_rng_states()
        if self.dist.main:
            model = self.learner.inference_model()
            progress: dict[str, Any] = {"step": self.step, "history": self.history}
            if self.dist.enabled:
                progress["world_size"] = self.dist.world_size
            tensors, state = learner_state(self.learner, progress)  # with this process's (rank 0's) RNG states
            tensors.update(rng)
            meta = {
                "policy_name": self.cfg["policy"]["name"],
                "step": self.step,
                "dataset": {**self.dataset_info, "train_episodes": self.train_eps, "val_episodes": self.val_eps},
            }
            folder = save_checkpoint(folder, model, self.cfg, meta, tensors, state)
            link_last(folder)
            self._prune(folder)
        self._barrier()  # the other ranks go on (and may read the checkpoint) once it is complete
        self.saved_step = self.step
        return folder

    def _other_rank_rng_states(self) -> dict[str, torch.Tensor]:
        """Under torchrun, the other ranks' RNG states gathered on every rank: rank r's as ``rng.torch.rank<r>``
        (and ``rng.cuda.rank<r>``), r > 0, so that a resumed run continues every rank's stream (rank 0's are the
        learner state's own); empty for one process."""
        if not self.dist.enabled:
            return {}
        states = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = {}
        for key, state in states.items():
            local = state.to(self._comm_device)
            parts = [torch.empty_like(local) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(parts, local)
            gathered.update({f"{key}.rank{r}": parts[r].cpu() for r in range(1, self.dist.world_size)})
        return gathered

    @property
    def _comm_device(self) -> torch.device:
        """Where tensors for collectives live: the GPU for NCCL, the CPU for gloo."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _barrier(self) -> None:
        if self.dist.enabled:
            torch.distributed.barrier()

    def _prune(self, keep: Path) -> None:
        folders = sorted(p for p in (self.out / "checkpoints").glob("step_*") if p.is_dir() and p.suffix != ".tmp")
        for p in folders[: max(0, len(folders) - int(self.cfg["keep_checkpoints"]))]:
            if p != keep:
                shutil.rmtree(p)

    # -- the loop -------------------------------------------------------------------------------------------------
    def _interrupted(self) -> TrainingInterrupted:
        """After Ctrl-C between steps: checkpoint the current step (unless it is saved already) and say where."""
        if self.saved_step != self.step and self.step > 0:
            self.save()
        if self.saved_step is None:
            return TrainingInterrupted(
                f"interrupted before the first training step; no checkpoint was saved in {self.out} (nothing to "
                "resume: run again without resume=true)"
            )
        folder = resolve_checkpoint(self.out / "checkpoints")
        return TrainingInterrupted(
            f"interrupted at step {self.step}; checkpoint saved: {folder}; continue with resume=true "
            f"(and the same out={self.out})"
        )

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loader(self, data: WindowDataset, batches: Iterator[list[int]]) -> torch.utils.data.DataLoader:
        workers = int(self.cfg["dataset"]["num_workers"])
        return torch.utils.data.DataLoader(
            data,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
            # its own generator: creating an iterator must not draw from the global RNG (exact resume)
            generator=torch.Generator().manual_seed(int(self.cfg["seed"])),
            worker_init_fn=_ignore_sigint if self.dist.enabled else None,
        )

    def _to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss of the inference model over up to ``val_batches`` validation batches, with fixed noise.

        Under torchrun every rank takes part: each evaluates its slice of every (global) batch and the per-batch
        sums are all-reduced, so each batch's mean is the one process's (exactly so for a deterministic loss)."""
        if self.val_data is None or len(self.val_data) == 0:
            return None
        model = self.learner.inference_model()
        model.eval()
        n = len(self.val_data)
        bs = min(int(self.cfg["batch_size"]), n)
        order = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)][: int(self.cfg["val_batches"])]
        rank, world = self.dist.rank, self.dist.world_size
        mine = [b[rank * -(-len(b) // world) : (rank + 1) * -(-len(b) // world)] for b in order]
        todo = [j for j, b in enumerate(mine) if b]
        # per batch: loss sum and sample count, in float64: for one process (loss * count) / count is the loss
        totals = torch.zeros(len(order), 2, dtype=torch.float64)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.cfg["seed"]))
            for j, batch in zip(todo, self._loader(self.val_data, iter([mine[j] for j in todo])), strict=True):
                with self._autocast():
                    loss, _ = model.compute_loss(self._to_device(batch))
                totals[j, 0], totals[j, 1] = float(loss) * len(mine[j]), len(mine[j])
        if self.dist.enabled:
            shared = totals.to(self._comm_device)
            torch.distributed.all_reduce(shared)
            totals = shared.cpu()
        model.train()
        return float(np.mean((totals[:, 0] / totals[:, 1]).numpy()))

    def rollouts(self) -> dict[str, Any] | None:
        ecfg = self.cfg.get("eval") or {}
        if not ecfg.get("env") or int(ecfg.get("episodes", 0)) <= 0:
            return None
        from realloop.policies.evaluate import evaluate

        model = self.learner.inference_model()
        model.eval()
        result = evaluate(
            model,
            ecfg["env"],
            env_kwargs=ecfg.get("env_kwargs") or {},
            episodes=int(ecfg["episodes"]),
            num_envs=int(ecfg.get("num_envs", 1)),
            seed=int(ecfg.get("seed", 100_000)),
            obs_map=ecfg.get("obs_map"),
            device=self.device,
            progress=False,
        )
        model.train()
        return result.to_dict()

    def _log(self, row: dict[str, Any], tb: Any, writer: csv.DictWriter | None, f: Any) -> None:
        self.history.append(row)
        if writer is None:  # not rank 0: it alone writes metrics.csv and TensorBoard
            return
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        f.flush()
        for k, v in row.items():
            if k not in ("step", "epoch") and v is not None:
                tb.add_scalar(k, v, row["step"])

    def run(self) -> TrainSummary:
        from torch.utils.tensorboard import SummaryWriter

        main, world = self.dist.main, self.dist.world_size
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        steps = int(self.cfg["steps"])
        bs = int(self.cfg["batch_size"])
        start_step = self.step
        batches = batch_indices(len(self.train_data), bs, int(self.cfg["seed"]), start_step)
        if self.dist.enabled:  # the global batch as one process draws it; this rank trains on its slice
            batches = shard_batches(batches, self.dist.rank, world)
        loader = iter(self._loader(self.train_data, batches))
        per_epoch = len(self.train_data) // bs
        warmup = int(self.cfg["optim"]["warmup_steps"])
        base_lr = float(self.cfg["optim"]["lr"])  # not the param groups': a resumed optimiser holds a scaled lr
        log_every, val_every = int(self.cfg["log_every"]), int(self.cfg["val_every"])
        ckpt_every, eval_every = int(self.cfg["checkpoint_every"]), int((self.cfg.get("eval") or {}).get("every", 0))
        f: Any = None
        writer: csv.DictWriter | None = None
        tb: Any = None
        if main:  # rank 0 alone writes the run folder
            csv_path = self.out / "metrics.csv"
            new_csv = not csv_path.exists() or start_step == 0
            if not new_csv:
                _truncate_metrics(csv_path, start_step)  # rows an interrupted run logged past its checkpoint
            f = csv_path.open("w" if new_csv else "a", newline="")
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            if new_csv:
                writer.writeheader()
            tb = SummaryWriter(str(self.out / "tb"), purge_step=start_step or None)
        self.policy.train()
        t0 = time.perf_counter()
        window_t, window_n, running = time.perf_counter(), 0, []
        last_val, last_eval, folder = None, None, None
        bar = tqdm(
            total=steps,
            initial=start_step,
            desc=f"train {self.cfg['policy']['name']}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        stop_at = min(steps, int(self.cfg.get("stop_at") or steps))
        deadline = t0 + 60.0 * float(self.cfg["time_limit_min"]) if self.cfg.get("time_limit_min") else math.inf
        stops = StopSignals()  # Ctrl-C or SIGTERM: finish this step, checkpoint it, stop
        interrupted = False  # under torchrun: all ranks agreed to stop after this step (alone: stops.requested)
        stops.install()
        try:
            while self.step < stop_at and not (interrupted or (stops.requested and not self.dist.enabled)):
                for g in self.learner.optimizer.param_groups:
                    g["lr"] = base_lr * lr_factor(self.step, warmup, steps)
                try:
                    batch = self._to_device(next(loader))
                except Exception:
                    if stops.requested and not self.dist.enabled:  # e.g. a DataLoader worker ended by the same
                        break  # Ctrl-C: nothing trained yet
                    raise
                loss, metrics = self.learner.loss(batch)
                batch_loss, logged, stop_flags = loss.detach(), metrics["loss"], (False, False)
                if self.dist.enabled:
                    # one all-reduce a step: the mean of the ranks' losses (the loss of the global batch) and
                    # whether any rank saw Ctrl-C or passed the time limit, so that all stop after the same step
                    flags = [float(stops.requested), float(time.perf_counter() > deadline)]
                    shared = torch.cat([loss.detach().float().reshape(1), loss.new_tensor(flags)])
                    torch.distributed.all_reduce(shared)
                    batch_loss = logged = shared[0] / world
                    stop_flags = (bool(shared[1] > 0), bool(shared[2] > 0))
                if not torch.isfinite(batch_loss):
                    raise FloatingPointError(
                        f"the training loss is {float(batch_loss)} at step {self.step}; lower optim.lr or check the "
                        f"dataset for NaN (realloop-dataset verify). The last checkpoint is intact."
                    )
                self.learner.step(loss)
                self.step += 1
                running.append(logged)
                window_n += bs
                bar.update(1)
                row: dict[str, Any] = {}
                if self.dist.enabled:
                    interrupted = interrupted or stop_flags[0]
                    if stop_flags[1]:
                        stop_at = self.step
                elif time.perf_counter() > deadline:
                    stop_at = self.step  # a bounded budget: end here, resumable, on the full schedule
                last = self.step == stop_at
                if self.step % log_every == 0 or last:
                    now = time.perf_counter()
                    row.update(
                        train_loss=float(torch.stack(running).mean()),
                        lr=self.learner.optimizer.param_groups[0]["lr"],
                        samples_per_s=window_n / (now - window_t),
                    )
                    running, window_t, window_n = [], now, 0
                    bar.set_postfix(loss=f"{row['train_loss']:.4f}", refresh=False)
                if val_every and (self.step % val_every == 0 or last):
                    last_val = row["val_loss"] = self.validate()
                if eval_every and (self.step % eval_every == 0 or last) and main:  # rank 0's policy: all ranks'
                    last_eval = self.rollouts()
                    if last_eval:
                        row.update(success_rate=last_eval["success_rate"], mean_return=last_eval["mean_return"])
                if row:
                    self._log({"step": self.step, "epoch": self.step // max(1, per_epoch), **row}, tb, writer, f)
                if self.step % ckpt_every == 0 or last:
                    folder = self.save()
            if interrupted or (stops.requested and not self.dist.enabled):
                raise self._interrupted()
        finally:
            stops.restore()
            bar.close()
            if main:
                tb.close()
                f.close()
        seconds = time.perf_counter() - t0
        if folder is None:  # nothing left to train: the resumed run was complete
            folder = resolve_checkpoint(self.out / "checkpoints")
        train_losses = [r["train_loss"] for r in self.history if r.get("train_loss") is not None]
        summary = TrainSummary(
            policy=self.cfg["policy"]["name"],
            dataset=str(self.dataset_path),
            out=str(self.out),
            device=f"{world} x {self.device.type}" if self.dist.enabled else str(self.device),
            steps=self.step,
            start_step=start_step,
            seconds=round(seconds, 1),
            samples_per_s=round((self.step - start_step) * bs / max(seconds, 1e-9), 1),
            train_loss=train_losses[-1] if train_losses else float("nan"),
            val_loss=last_val,
            checkpoint=str(folder),
            parameters=self.policy.num_parameters(),
            eval=last_eval,
            history=self.history,
        )
        if main:
            plot_losses(self.history, self.out / "loss.png", title=f"{summary.policy} on {self.dataset_path.name}")
            (self.out / "train_summary.json").write_text(json.dumps(asdict(summary), indent=2))
        return summary


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training between two steps; the message says which checkpoint holds the current step."""


def dataset_fingerprint(ds: Dataset) -> str:
    """A short hash of what training reads from a dataset besides the samples themselves: its features, its
    episodes (their metadata: streams, lengths, times, attributes) and its statistics. Two datasets with the same
    shapes but other recordings differ; a copy of a dataset moved elsewhere does not."""
    content = {
        "features": {n: f.to_dict() for n, f in ds.features.items()},
        "episodes": [[i, ds.episode(i).meta] for i in ds.episode_indices],
        "stats": ds.stats,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _feature_list(features: Mapping[str, Any]) -> str:
    """``{"action": {"shape": [7], ...}}`` -> ``[action(7)]``."""
    parts = [f"{n}({','.join(map(str, f.get('shape') or []))})" for n, f in sorted(features.items())]
    return f"[{', '.join(parts)}]"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.csv`` past ``step`` (what an interrupted run logged after its last checkpoint),
    so that a resumed run appends no duplicate steps; rewritten atomically."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)


def plot_losses(history: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Train and validation loss against step, log scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=key.replace("_", " "), markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: DictConfig | Mapping[str, Any], progress: bool = True) -> TrainSummary:
    """Run a training config (hydra DictConfig or a resolved dict); see the module doc. Under torchrun this
    process trains as its rank and leaves the process group it joined."""
    plain: dict[str, Any] = to_plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    dist = Distributed.from_env()
    owned = dist.enabled and not torch.distributed.is_initialized()
    try:
        return Trainer(plain, progress=progress, dist=dist).run()
    finally:
        if owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# errors a user can fix from the message: printed as one line, exit code 2, no traceback
USER_ERRORS = (
    ValueError,
    KeyError,
    FileExistsError,
    FileNotFoundError,
    RuntimeError,
    NotADatasetError,
    DatasetLockedError,
    MissingStatsError,
    CheckpointError,
)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    dist = Distributed.from_env()
    try:
        summary = train(cfg)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        # every rank says what failed it (an error on one rank alone would otherwise go unseen)
        where = f" (rank {dist.rank})" if dist.rank else ""
        print(f"realloop-train{where}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as e:
        if dist.main:  # all ranks stopped at the same step: one message
            print(f"realloop-train: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        if not dist.main:
            sys.exit(130)
        out = Path(str(cfg.out))
        last = out / "checkpoints" / "last"
        where = (
            f"the last checkpoint is {last.resolve()}: continue with resume=true"
            if last.exists()
            else f"no checkpoint was saved in {out}"
        )
        print(f"realloop-train: interrupted; {where}", file=sys.stderr)
        sys.exit(130)
    if dist.main:
        print(summary.line())
        print(f"summary: {Path(summary.out) / 'train_summary.json'}, curves: {Path(summary.out) / 'loss.png'}")


def main() -> None:
    """Console entry point (hydra parses ``key=value`` overrides from sys.argv, checked first: exit code 2 and
    one line for a config error)."""
    exit_on_config_error("realloop-train", compose_config)
    _hydra_main()


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m realloop.policies.train ...
    main()
