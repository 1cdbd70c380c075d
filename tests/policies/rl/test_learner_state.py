"""A learner's training state on disk: bit-identical resume, safetensors and JSON only, atomic writes, clear
refusals."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realloop.policies.checkpoint import CheckpointError
from realloop.policies.rl import state as state_module
from realloop.policies.rl.learner import Batch
from realloop.policies.rl.sac import SACLearner
from realloop.policies.rl.state import load_learner_state, save_learner_state

STATE, WRIST = "observation.state", "observation.images.wrist"
LOW, HIGH = np.array([-1.0, 0.0]), np.array([1.0, 2.0])


def make_learner(images: bool, seed: int, **overrides: Any) -> SACLearner:
    torch.manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {STATE: (3,)}
    if images:
        shapes[WRIST] = (3, 12, 12)
    stats = {STATE: {"mean": [0.5, 0.0, -1.0], "std": [1.0, 2.0, 3.0]}}
    cfg: dict[str, Any] = {"hidden_dims": (16, 16), "num_critics": 4, "utd": 2, "image_feature_dim": 4, **overrides}
    return SACLearner(shapes, LOW, HIGH, obs_stats=stats, **cfg)


def make_batches(images: bool, count: int, n: int = 8) -> list[Batch]:
    rng = np.random.default_rng(123)
    out = []
    for _ in range(count):
        obs = {STATE: rng.normal(size=(n, 3)).astype(np.float32)}
        next_obs = {STATE: rng.normal(size=(n, 3)).astype(np.float32)}
        if images:
            obs[WRIST] = rng.integers(0, 256, size=(n, 3, 12, 12), dtype=np.uint8)
            next_obs[WRIST] = rng.integers(0, 256, size=(n, 3, 12, 12), dtype=np.uint8)
        out.append(
            {
                "observation": obs,
                "action": rng.uniform(LOW, HIGH, size=(n, 2)).astype(np.float32),
                "reward": rng.normal(size=n).astype(np.float32),
                "discount": (0.99 * (rng.random(n) > 0.2)).astype(np.float32),
                "next_observation": next_obs,
                "online": rng.random(n) > 0.5,
            }
        )
    return out


def everything(learner: SACLearner) -> dict[str, torch.Tensor]:
    """Every module tensor and optimiser moment of ``learner``."""
    out = {f"{m}.{k}": v.clone() for m, mod in learner.modules().items() for k, v in mod.state_dict().items()}
    for name, opt in learner.optimizers().items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt.{name}.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return out


@pytest.mark.parametrize(("images", "grasp"), [(False, False), (True, False), (False, True)],
                         ids=["state", "images", "grasp_critic"])  # fmt: skip
def test_resume_gives_bit_identical_parameters(tmp_path: Path, images: bool, grasp: bool) -> None:
    batches = make_batches(images, 6)
    kwargs = {"grasp_dim": 1} if grasp else {}
    learner = make_learner(images, seed=0, **kwargs)
    for b in batches[:3]:
        learner.update(b)
    save_learner_state(tmp_path / "state", learner, meta={"step": 3})
    for b in batches[3:]:
        learner.update(b)  # exploration noise, target subsets and image shifts continue from the saved RNG
    straight = everything(learner)

    resumed = make_learner(images, seed=99, **kwargs)  # other initial weights and RNG: all must come from the folder
    torch.rand(17)  # and the global RNG moved on
    assert load_learner_state(tmp_path / "state", resumed) == {"step": 3}
    assert resumed.extra_state() == {"updates": 3, "critic_steps": 6}
    for b in batches[3:]:
        resumed.update(b)
    again = everything(resumed)
    assert straight.keys() == again.keys()
    assert grasp == any(k.startswith("opt.grasp_critic.") for k in straight)
    different = [k for k in straight if not torch.equal(straight[k], again[k])]
    assert not different, f"{different[:5]} differ after resume"
    assert resumed.extra_state() == learner.extra_state()


def test_rng_states_of_numpy_and_python_are_restored(tmp_path: Path) -> None:
    learner = make_learner(False, seed=0)
    np.random.seed(5)
    random.seed(5)
    save_learner_state(tmp_path / "state", learner)
    expected = (np.random.rand(3), random.random(), torch.rand(3))
    np.random.seed(6)
    random.seed(6)
    load_learner_state(tmp_path / "state", make_learner(False, seed=1))
    got = (np.random.rand(3), random.random(), torch.rand(3))
    np.testing.assert_array_equal(expected[0], got[0])
    assert expected[1] == got[1]
    assert torch.equal(expected[2], got[2])


def test_the_state_is_safetensors_and_json_only(tmp_path: Path) -> None:
    learner = make_learner(True, seed=0)
    learner.update(make_batches(True, 1)[0])
    folder = save_learner_state(tmp_path / "state", learner, meta={"config": {"utd": 2}})
    assert sorted(p.name for p in folder.iterdir()) == ["training_state.json", "training_state.safetensors"]
    assert not list(tmp_path.glob("*.tmp"))
    js = json.loads((folder / "training_state.json").read_text())
    assert js["extra_state"] == {"updates": 1, "critic_steps": 2} and js["meta"] == {"config": {"utd": 2}}
    assert set(js["optimizers"]) == {"critic", "actor", "temperature"}
    tensors = load_file(str(folder / "training_state.safetensors"))
    assert "module.temperature.log_alpha" in tensors and "rng.torch" in tensors
    assert any(k.startswith("module.encoder.normalizer.") for k in tensors)
    assert any(k.startswith("optimizer.critic/optimizer.") and k.endswith("exp_avg_sq") for k in tensors)
    for path in folder.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path.name} looks like a pickle or a torch.save zip"


def test_a_crash_while_saving_leaves_the_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    learner = make_learner(False, seed=0)
    folder = save_learner_state(tmp_path / "state", learner, meta={"step": 0})
    before = (folder / "training_state.safetensors").read_bytes()

    def disk_full(*args: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(state_module, "save_tensors", disk_full)
    learner.update(make_batches(False, 1)[0])
    with pytest.raises(OSError, match="No space"):
        save_learner_state(folder, learner, meta={"step": 1})
    assert (folder / "training_state.safetensors").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    assert load_learner_state(folder, make_learner(False, seed=1)) == {"step": 0}


def test_loading_into_another_learner_or_from_nowhere_is_refused(tmp_path: Path) -> None:
    save_learner_state(tmp_path / "state", make_learner(False, seed=0))
    with pytest.raises(CheckpointError, match="critic"):
        load_learner_state(tmp_path / "state", make_learner(False, seed=0, num_critics=2))
    with pytest.raises(CheckpointError, match=r"nowhere has no training_state\.safetensors"):
        load_learner_state(tmp_path / "nowhere", make_learner(False, seed=0))
