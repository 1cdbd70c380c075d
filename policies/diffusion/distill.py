"""A one-step sampler distilled from a trained diffusion policy (Luhman & Luhman 2021, "Knowledge distillation in
iterative generative models"): the student maps the initial noise of an action chunk, in one U-Net pass, to what
the teacher's DDIM sampler makes of the same noise for the same observation.

DDIM is deterministic given its initial noise, so the teacher is a function noise -> chunk and the student
regresses it: the loss is the mean squared error between the two chunks (normalised actions). The student has the
teacher's architecture and starts from its weights, queried at the first DDIM timestep, where the teacher's own
first step already gives a rough chunk (DDIM with one step). It keeps the teacher's noise space: the same noise
gives (nearly) the same chunk from both.

realloop-train trains it like any policy (``policy=diffusion_distill policy.teacher=<run or checkpoint>``): the
architecture, the observation keys and the dataset's view come from the teacher's checkpoint
(:func:`student_config`), the teacher is loaded when training starts and never saved with the student, and the
checkpoint runs wherever the teacher's runs (realloop-eval, the policy runner, realloop-eval-graph).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from realloop.policies.diffusion.policy import DiffusionPolicy

TEACHER_KEYS = ("teacher", "teacher_steps")  # the student's own policy keys; every other one is the teacher's
DATASET_KEYS = ("rate", "image_size")  # how the teacher saw its dataset, which the student must see the same way


def student_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The train config ``cfg`` (resolved, plain) with a distilled policy's section completed from its teacher's
    checkpoint: the teacher's policy keys under the student's ``_target_``, ``name`` and :data:`TEACHER_KEYS`;
    the teacher's dataset (``dataset.path`` when unset) and its view of it (:data:`DATASET_KEYS`). ValueError when
    the teacher is not a diffusion policy or ``cfg`` sets a dataset view other than the teacher's."""
    from realloop.policies.checkpoint import read_json, resolve_checkpoint

    out = copy.deepcopy(dict(cfg))
    pcfg = out["policy"]
    folder = resolve_checkpoint(pcfg["teacher"])
    teacher_cfg = read_json(folder / "config.json")
    tpol = teacher_cfg.get("policy", {})
    if tpol.get("_target_") != f"{DiffusionPolicy.__module__}.{DiffusionPolicy.__qualname__}":
        raise ValueError(
            f"policy.teacher={pcfg['teacher']} is a {tpol.get('_target_')} checkpoint; a one-step sampler is "
            "distilled from a diffusion policy (policy=diffusion or diffusion_image*)"
        )
    own = {k: pcfg[k] for k in ("_target_", "name", *TEACHER_KEYS) if k in pcfg}
    out["policy"] = {**{k: v for k, v in tpol.items() if k not in own}, **own, "teacher": str(folder)}
    dcfg, tdata = out["dataset"], teacher_cfg.get("dataset", {})
    if not dcfg.get("path"):
        dcfg["path"] = tdata.get("path")
    for key in DATASET_KEYS:
        if dcfg.get(key) is not None and dcfg[key] != tdata.get(key):
            raise ValueError(
                f"dataset.{key}={dcfg[key]} differs from the teacher's ({tdata.get(key)}): the student sees the "
                f"data as its teacher did; leave dataset.{key} unset"
            )
        dcfg[key] = tdata.get(key)
    dcfg["cache_images"] = bool(dcfg.get("cache_images")) or bool(tdata.get("cache_images"))
    return out


class DistilledDiffusionPolicy(DiffusionPolicy):
    """A diffusion policy that samples in one U-Net pass (see the module doc).

    Args:
        teacher: the diffusion checkpoint (or run) distilled; read only when training (:meth:`compute_loss`).
        teacher_steps: the teacher's DDIM steps the student imitates; None: the teacher's ``num_inference_steps``.
        Every other argument is the teacher's (:class:`DiffusionPolicy`), filled in by :func:`student_config`.
    """

    initialized: Tensor  # 1.0 once the weights have been copied from the teacher (saved, so a resume keeps its own)

    def __init__(
        self,
        features: Mapping[str, Mapping[str, Any]],
        obs_keys: Sequence[str],
        teacher: str,
        teacher_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, obs_keys, **kwargs)
        self.teacher_path = str(teacher)
        self.teacher_steps = int(teacher_steps or self.num_inference_steps)
        # the timestep the student is queried at: the first one the teacher's sampler visits
        self.start_timestep = self.scheduler.inference_timesteps(self.teacher_steps)[0]
        self.num_inference_steps = 1
        self.register_buffer("initialized", torch.zeros(()))
        self._teacher: list[DiffusionPolicy] = []  # a list, not a submodule: neither trained nor saved

    def teacher(self) -> DiffusionPolicy:
        """The frozen teacher (loaded on first use); the first use on a fresh student also copies its weights."""
        if not self._teacher:
            from realloop.policies.checkpoint import load_policy

            with torch.random.fork_rng(devices=[]):  # building it draws initial weights: training's RNG stays
                model = load_policy(self.teacher_path, device=self.device).policy
            if type(model) is not DiffusionPolicy:
                raise ValueError(f"the teacher {self.teacher_path} is a {type(model).__name__}, not a DiffusionPolicy")
            model.requires_grad_(False)
            model.num_inference_steps = self.teacher_steps
            self._teacher.append(model)
            if not bool(self.initialized):
                self.load_state_dict(model.state_dict(), strict=False)  # `initialized` is the student's own
                self.initialized.fill_(1.0)
        return self._teacher[0]

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        teacher = self.teacher()
        obs = self.normalize_obs(batch)  # the student's normaliser is the teacher's (copied with its weights)
        shape = (obs[self.obs_keys[0]].shape[0], self.horizon, self.action_dim)
        noise = self.scheduler.initial_noise(shape, None, None, self.device, torch.float32)
        with torch.no_grad():
            teacher.eval()  # the teacher's chunk without training-time augmentation (random crops)
            target = teacher.sample_actions(obs, noise=noise)
        loss = F.mse_loss(self.denoise_once(self.encoder(obs), noise, self.start_timestep).float(), target.float())
        return loss, {"loss": loss.detach()}

    def sample_actions(
        self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None, noise: Tensor | None = None
    ) -> Tensor:
        cond = self.encoder(obs)
        shape = (cond.shape[0], self.horizon, self.action_dim)
        x = self.scheduler.initial_noise(shape, noise, generator, cond.device, cond.dtype)
        return self.denoise_once(cond, x, self.start_timestep)
