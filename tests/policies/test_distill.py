"""The one-step sampler distilled from a diffusion policy: trained by realloop-train from a teacher checkpoint, it
reproduces the teacher's DDIM chunks for the same noise, and runs wherever the teacher's checkpoint runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from realloop.data.training import WindowDataset
from realloop.policies.base import set_inference
from realloop.policies.checkpoint import load_policy
from realloop.policies.diffusion.distill import DistilledDiffusionPolicy
from realloop.policies.train import compose_config, train
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

TINY_DIFFUSION = ["policy=diffusion", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16"]
COMMON = [
    "batch_size=16",
    "log_every=10",
    "val_every=0",
    "dataset.val_fraction=0",
    "optim.warmup_steps=2",
    "device=cpu",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distill")
    data = root / "lift.zarr"
    collect(collect_config(["task=arm_lift", "episodes=3", f"out={data}"]), progress=False)
    cfg = compose_config([*TINY_DIFFUSION, *COMMON, f"dataset.path={data}", "steps=60", f"out={root / 'teacher'}"])
    train(cfg, progress=False)
    return root / "teacher"


def distil(teacher: Path, out: Path, *extra: str, steps: int = 150) -> Path:
    cfg = compose_config(
        ["policy=diffusion_distill", f"policy.teacher={teacher}", *COMMON, f"steps={steps}", "optim.lr=1e-3",
         f"out={out}", *extra]
    )  # fmt: skip
    train(cfg, progress=False)
    return out


def dataset_obs(policy: DistilledDiffusionPolicy, dataset: Path) -> dict[str, torch.Tensor]:
    """Normalised observation histories of 32 windows spread over the dataset (the one it learnt from)."""
    windows = WindowDataset.for_policy(
        dataset, obs_keys=policy.obs_keys, n_obs_steps=policy.n_obs_steps, horizon=policy.horizon
    )
    batch = [windows[i] for i in torch.linspace(0, len(windows) - 1, 32).long().tolist()]
    raw = {k: torch.stack([torch.as_tensor(w[k]) for w in batch]) for k in policy.obs_keys}
    return policy.normalize_obs(raw)


def test_the_student_learns_the_teachers_noise_to_chunk_map(teacher: Path, tmp_path: Path) -> None:
    run = distil(teacher, tmp_path / "student")
    student = load_policy(run).policy
    assert isinstance(student, DistilledDiffusionPolicy) and student.num_inference_steps == 1
    teacher_policy = load_policy(teacher).policy
    config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    # the architecture, keys and dataset came from the teacher; the dataset path too, since none was given
    for key in ("down_dims", "obs_keys", "horizon", "prediction_type"):
        assert (
            config["policy"][key]
            == json.loads((teacher / "checkpoints" / "last" / "config.json").read_text())["policy"][key]
        )
    assert Path(config["policy"]["teacher"]) == (teacher / "checkpoints" / "last").resolve()

    # on the same noise and observations, the student's one pass is much closer to the teacher's DDIM chunk than
    # the teacher's own first DDIM step (where the student started) is
    obs = dataset_obs(student, Path(config["dataset"]["path"]))
    noise = torch.randn(32, student.horizon, student.action_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        target = teacher_policy.sample_actions(obs, noise=noise)
        distilled = student.sample_actions(obs, noise=noise)
        start = teacher_policy.denoise_once(teacher_policy.encoder(obs), noise, student.start_timestep)
    start_error = torch.mean((start - target) ** 2)
    error = torch.mean((distilled - target) ** 2)
    assert error < 0.5 * start_error, (float(error), float(start_error))

    # it acts like any policy: raw histories in, n_action_steps raw actions out
    raw = {k: torch.zeros(2, student.n_obs_steps, *student.obs_shapes[k]) for k in student.obs_keys}
    assert tuple(student.predict_action_chunk(raw).shape) == (2, student.n_action_steps, student.action_dim)


def test_the_same_noise_gives_the_same_chunk_and_a_wrong_noise_shape_is_refused(teacher: Path) -> None:
    policy = load_policy(teacher).policy
    obs = {k: torch.zeros(1, policy.n_obs_steps, *policy.obs_shapes[k]) for k in policy.obs_keys}
    noise = torch.randn(1, policy.horizon, policy.action_dim)
    with torch.no_grad():
        a, b = policy.sample_actions(obs, noise=noise), policy.sample_actions(obs, noise=noise)
        other = policy.sample_actions(obs, noise=noise + 1.0)
    assert torch.equal(a, b) and not torch.allclose(a, other)
    with pytest.raises(ValueError, match="noise has shape"):
        policy.sample_actions(obs, noise=torch.zeros(1, policy.horizon + 1, policy.action_dim))


def test_resume_keeps_the_students_weights(teacher: Path, tmp_path: Path) -> None:
    """The student copies the teacher's weights once; a resumed run continues from its own, bit-identically."""
    whole = distil(teacher, tmp_path / "whole", steps=20)
    distil(teacher, tmp_path / "part", "stop_at=10", steps=20)
    distil(teacher, tmp_path / "part", "resume=true", steps=20)
    a = load_policy(whole).policy.state_dict()
    b = load_policy(tmp_path / "part").policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(b["initialized"]) == 1.0


def test_bad_teachers_and_settings_are_refused_in_one_line(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"policy\.teacher is not set"):
        train(compose_config(["policy=diffusion_distill", *COMMON, f"out={tmp_path / 'a'}"]), progress=False)
    bc_data = json.loads((teacher / "checkpoints" / "last" / "config.json").read_text())["dataset"]["path"]
    bc = ["policy=bc", "policy.hidden_dims=[16]", *COMMON, f"dataset.path={bc_data}", "steps=2"]
    train(compose_config([*bc, f"out={tmp_path / 'bc'}"]), progress=False)
    with pytest.raises(ValueError, match="distilled from a diffusion policy"):
        distil(tmp_path / "bc", tmp_path / "b", steps=2)
    with pytest.raises(ValueError, match=r"dataset\.rate=5 differs from the teacher's"):
        distil(teacher, tmp_path / "c", "dataset.rate=5", steps=2)
    student = load_policy(distil(teacher, tmp_path / "d", steps=2)).policy
    with pytest.raises(ValueError, match="samples in one step"):
        set_inference(student, num_inference_steps=10)
    set_inference(student, num_inference_steps=1)
