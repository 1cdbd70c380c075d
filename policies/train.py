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
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from realloop.configs import CONFIG_DIR
from realloop.configs.schema import compose_checked, exit_on_config_error, to_plain
from realloop.data import Dataset, DatasetLockedError, NotADatasetError
from realloop.data.stats import MissingStatsError, ensure_stats, load_stats
from realloop.data.training import WindowDataset, split_episodes
from realloop.policies.checkpoint import (
    CheckpointError,
    build_policy,
    link_last,
    load_training_state,
    resolve_checkpoint,
    save_checkpoint,
)
from realloop.policies.chunk_policy import ChunkPolicy

CSV_FIELDS = ("step", "epoch", "train_loss", "val_loss", "lr", "samples_per_s", "success_rate", "mean_return")


# what configs/train.yaml's defaults cannot say about its keys (realloop.configs.schema)
CONFIG_OPEN = ("eval.env_kwargs", "eval.obs_map")
CONFIG_TYPES = {
    "compile": "bool|str",
    "dataset.path": "str|null",
    "dataset.rate": "number|null",
    "stop_at": "int|null",
    "time_limit_min": "number|null",
    "eval.env": "str|null",
}
CONFIG_BOUNDS = {
    "steps": (1, None), "batch_size": (1, None), "seed": (0, None), "log_every": (1, None), "val_every": (0, None),
    "val_batches": (1, None), "checkpoint_every": (1, None), "keep_checkpoints": (1, None), "stop_at": (1, None),
    "time_limit_min": (0, None), "dataset.val_fraction": (0, 1), "dataset.num_workers": (0, None),
    "optim.lr": (0, None), "optim.warmup_steps": (0, None), "optim.grad_clip": (0, None), "ema.decay": (0, 1),
    "eval.every": (0, None), "eval.episodes": (0, None), "eval.num_envs": (1, None),
}  # fmt: skip
CONFIG_CHOICES = {"precision": ("auto", "fp32", "bf16"), "compile": ("auto", True, False)}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The train config with hydra-style overrides, without running hydra's app (for scripts and tests); a key
    it does not have or a bad value raises :class:`~realloop.configs.schema.ConfigError` (one line)."""
    return compose_checked(
        "train", overrides, open=CONFIG_OPEN, types=CONFIG_TYPES, bounds=CONFIG_BOUNDS, choices=CONFIG_CHOICES
    )


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return device


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


# -- EMA -------------------------------------------------------------------------------------------------------
def ema_decay(step: int, max_decay: float, power: float) -> float:
    """diffusion_policy's warm-up: the decay grows as 1 - (1 + step)^-power, capped at ``max_decay``."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


def make_ema(policy: ChunkPolicy, max_decay: float, power: float) -> AveragedModel:
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
        return averaged.lerp(current, 1.0 - ema_decay(int(n), max_decay, power))

    return AveragedModel(policy, avg_fn=avg, use_buffers=True)


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


# -- optimiser state as safetensors + JSON ------------------------------------------------------------------------
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    for key, v in js["scalars"].items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": js["param_groups"]})


# -- the run ------------------------------------------------------------------------------------------------------
class Trainer:
    """One training run of a resolved config (a plain dict; see configs/train.yaml)."""

    def __init__(self, cfg: Mapping[str, Any], progress: bool = True) -> None:
        self.cfg = dict(cfg)
        self.progress = progress
        self.out = Path(self.cfg["out"])
        self.device = pick_device(str(self.cfg["device"]))
        seed = int(self.cfg["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed)

        dcfg = self.cfg["dataset"]
        if not dcfg.get("path"):
            raise ValueError("dataset.path is not set: give the dataset to train on, e.g. dataset.path=outputs/x.zarr")
        self.dataset_path = Path(dcfg["path"])
        ensure_stats(self.dataset_path, progress=progress)
        with Dataset.open(self.dataset_path) as ds:
            pcfg = self.cfg["policy"]
            keys = [*pcfg["obs_keys"], pcfg.get("action_key", "action")]
            missing = [k for k in keys if k not in ds.features]
            if missing:
                raise KeyError(
                    f"{self.dataset_path} has no features {missing} that policy {pcfg['name']} needs (it has "
                    f"{sorted(ds.features)}); choose the policy's inputs with policy.obs_keys=[...]"
                )
            features = {k: ds.features[k].to_dict() for k in keys}
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
        )
        self.train_data = WindowDataset.for_policy(self.dataset_path, episodes=self.train_eps, **window)
        self.val_data = (
            WindowDataset.for_policy(self.dataset_path, episodes=self.val_eps, **window) if self.val_eps else None
        )

        ocfg = self.cfg["optim"]
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=float(ocfg["lr"]),
            betas=tuple(ocfg["betas"]),
            weight_decay=float(ocfg["weight_decay"]),
        )
        self.ema = (
            make_ema(self.policy, float(self.cfg["ema"]["decay"]), float(self.cfg["ema"]["power"]))
            if self.cfg["ema"]["enabled"]
            else None
        )
        self.step = 0
        self.saved_step: int | None = None  # the step of the newest checkpoint in out, if any
        self.history: list[dict[str, Any]] = []
        cuda = self.device.type == "cuda"
        precision = self.cfg["precision"]
        self.autocast_dtype = torch.bfloat16 if (precision == "bf16" or (precision == "auto" and cuda)) else None
        compile_on = self.cfg["compile"] is True or (self.cfg["compile"] == "auto" and cuda)
        self.loss_fn = torch.compile(self.policy.compute_loss) if compile_on else self.policy.compute_loss
        self._resume_or_refuse()

    def _inference_model(self) -> ChunkPolicy:
        """What is evaluated and checkpointed: the EMA copy of the policy when EMA is on, else the policy."""
        return cast(ChunkPolicy, self.ema.module) if self.ema is not None else self.policy

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
        try:
            self.policy.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        except RuntimeError as e:
            lines = str(e).strip().splitlines()
            why = lines[-1].strip() if lines else type(e).__name__
            raise CheckpointError(
                f"cannot resume {folder}: its weights do not fit this run's policy ({why}); choose a new out="
            ) from None
        restore_optimizer(self.optimizer, tensors, js["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
            self.ema.n_averaged.copy_(tensors["ema_n_averaged"])
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.step = int(js["step"])
        self.saved_step = self.step
        self.history = [r for r in js.get("history", []) if int(r.get("step", 0)) <= self.step]
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
        model = self._inference_model()
        tensors = {f"model.{k}": v for k, v in self.policy.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
            tensors["ema_n_averaged"] = self.ema.n_averaged
        opt_tensors, opt_json = optimizer_state(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "policy_name": self.cfg["policy"]["name"],
            "step": self.step,
            "dataset": {**self.dataset_info, "train_episodes": self.train_eps, "val_episodes": self.val_eps},
        }
        folder = save_checkpoint(
            self.out / "checkpoints" / f"step_{self.step:07d}",
            model,
            self.cfg,
            meta,
            tensors,
            {"step": self.step, "optimizer": opt_json, "history": self.history},
        )
        link_last(folder)
        self._prune(folder)
        self.saved_step = self.step
        return folder

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
        )

    def _to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss of the inference model over up to ``val_batches`` validation batches, with fixed noise."""
        if self.val_data is None or len(self.val_data) == 0:
            return None
        model = self._inference_model()
        model.eval()
        bs = min(int(self.cfg["batch_size"]), len(self.val_data))
        order = [list(range(i, min(i + bs, len(self.val_data)))) for i in range(0, len(self.val_data), bs)]
        order = order[: int(self.cfg["val_batches"])]
        losses = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(self.cfg["seed"]))
            for batch in self._loader(self.val_data, iter(order)):
                with self._autocast():
                    loss, _ = model.compute_loss(self._to_device(batch))
                losses.append(float(loss))
        model.train()
        return float(np.mean(losses))

    def rollouts(self) -> dict[str, Any] | None:
        ecfg = self.cfg.get("eval") or {}
        if not ecfg.get("env") or int(ecfg.get("episodes", 0)) <= 0:
            return None
        from realloop.policies.evaluate import evaluate

        model = self._inference_model()
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

    def _log(self, row: dict[str, Any], tb: Any, writer: csv.DictWriter, f: Any) -> None:
        self.history.append(row)
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        f.flush()
        for k, v in row.items():
            if k not in ("step", "epoch") and v is not None:
                tb.add_scalar(k, v, row["step"])

    def run(self) -> TrainSummary:
        from torch.utils.tensorboard import SummaryWriter

        self.out.mkdir(parents=True, exist_ok=True)
        steps = int(self.cfg["steps"])
        bs = int(self.cfg["batch_size"])
        start_step = self.step
        batches = batch_indices(len(self.train_data), bs, int(self.cfg["seed"]), start_step)
        loader = iter(self._loader(self.train_data, batches))
        per_epoch = len(self.train_data) // bs
        warmup = int(self.cfg["optim"]["warmup_steps"])
        base_lr = float(self.cfg["optim"]["lr"])  # not the param groups': a resumed optimiser holds a scaled lr
        log_every, val_every = int(self.cfg["log_every"]), int(self.cfg["val_every"])
        ckpt_every, eval_every = int(self.cfg["checkpoint_every"]), int((self.cfg.get("eval") or {}).get("every", 0))
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
        interrupted = False

        def on_sigint(signum: int, frame: Any) -> None:  # Ctrl-C: finish this step, checkpoint it, stop
            nonlocal interrupted
            if interrupted:  # a second Ctrl-C: stop now, without a checkpoint of this step
                raise KeyboardInterrupt
            interrupted = True

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
        try:
            while self.step < stop_at and not interrupted:
                for g in self.optimizer.param_groups:
                    g["lr"] = base_lr * lr_factor(self.step, warmup, steps)
                try:
                    batch = self._to_device(next(loader))
                except Exception:
                    if interrupted:  # e.g. a DataLoader worker ended by the same Ctrl-C: nothing trained yet
                        break
                    raise
                with self._autocast():
                    loss, metrics = self.loss_fn(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the training loss is {float(loss)} at step {self.step}; lower optim.lr or check the "
                        f"dataset for NaN (realloop-dataset verify). The last checkpoint is intact."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), float(self.cfg["optim"]["grad_clip"]))
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.policy)
                self.step += 1
                running.append(metrics["loss"])
                window_n += bs
                bar.update(1)
                row: dict[str, Any] = {}
                if time.perf_counter() > deadline:
                    stop_at = self.step  # a bounded budget: end here, resumable, on the full schedule
                last = self.step == stop_at
                if self.step % log_every == 0 or last:
                    now = time.perf_counter()
                    row.update(
                        train_loss=float(torch.stack(running).mean()),
                        lr=self.optimizer.param_groups[0]["lr"],
                        samples_per_s=window_n / (now - window_t),
                    )
                    running, window_t, window_n = [], now, 0
                    bar.set_postfix(loss=f"{row['train_loss']:.4f}", refresh=False)
                if val_every and (self.step % val_every == 0 or last):
                    last_val = row["val_loss"] = self.validate()
                if eval_every and (self.step % eval_every == 0 or last):
                    last_eval = self.rollouts()
                    if last_eval:
                        row.update(success_rate=last_eval["success_rate"], mean_return=last_eval["mean_return"])
                if row:
                    self._log({"step": self.step, "epoch": self.step // max(1, per_epoch), **row}, tb, writer, f)
                if self.step % ckpt_every == 0 or last:
                    folder = self.save()
            if interrupted:
                raise self._interrupted()
        finally:
            if main_thread and previous is not None:
                signal.signal(signal.SIGINT, previous)
            bar.close()
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
            device=str(self.device),
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
    """Run a training config (hydra DictConfig or a resolved dict); see the module doc."""
    plain: dict[str, Any] = to_plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    return Trainer(plain, progress=progress).run()


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
    try:
        summary = train(cfg)
    except USER_ERRORS as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"realloop-train: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as e:
        print(f"realloop-train: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        out = Path(str(cfg.out))
        last = out / "checkpoints" / "last"
        where = (
            f"the last checkpoint is {last.resolve()}: continue with resume=true"
            if last.exists()
            else f"no checkpoint was saved in {out}"
        )
        print(f"realloop-train: interrupted; {where}", file=sys.stderr)
        sys.exit(130)
    print(summary.line())
    print(f"summary: {Path(summary.out) / 'train_summary.json'}, curves: {Path(summary.out) / 'loss.png'}")


def main() -> None:
    """Console entry point (hydra parses ``key=value`` overrides from sys.argv, checked first: exit code 2 and
    one line for a config error)."""
    exit_on_config_error("realloop-train", compose_config)
    _hydra_main()
