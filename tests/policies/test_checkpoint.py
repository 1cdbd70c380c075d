"""Checkpoints hold weights, config, normaliser and schema, never pickle; loading one cannot run code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from realloop.data import make_feature
from realloop.policies.checkpoint import (
    CheckpointError,
    UnsafeConfigError,
    build_policy,
    check_config,
    link_last,
    load_policy,
    save_checkpoint,
)
from realloop.policies.train import compose_config

FEATURES = {
    "observation.state": make_feature("observation.state", dtype="float32", shape=[5]).to_dict(),
    "action": make_feature("action", dtype="float32", shape=[3]).to_dict(),
}
STATS = {
    "observation.state": {"min": np.full(5, -2.0), "max": np.full(5, 4.0), "mean": np.ones(5), "std": np.ones(5)},
    "action": {
        "min": np.array([-1.0, 0.0, 5.0]),
        "max": np.array([1.0, 2.0, 5.0]),
        "mean": np.zeros(3),
        "std": np.ones(3),
    },
}


def policy_config(name: str, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    cfg = compose_config([f"policy={name}", "dataset.path=unused", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def make_checkpoint(folder: Path, name: str = "diffusion") -> tuple[Path, torch.nn.Module, dict]:
    size = "policy.down_dims=[16,32]" if name == "diffusion" else "policy.hidden_dims=[16,16]"
    cfg = policy_config(name, "policy.obs_keys=[observation.state]", size)
    torch.manual_seed(0)
    policy = build_policy(cfg["policy"], FEATURES)
    policy.normalizer.set_stats(STATS)
    path = save_checkpoint(folder / "step_0000001", policy, cfg, {"step": 1})
    link_last(path)
    return path, policy, cfg


@pytest.mark.parametrize("name", ["diffusion", "bc"])
def test_round_trip_gives_the_same_actions(tmp_path: Path, name: str) -> None:
    path, policy, cfg = make_checkpoint(tmp_path, name)
    loaded = load_policy(tmp_path)  # the checkpoints folder: resolves `last`
    assert loaded.path == path.resolve()
    assert loaded.config == cfg and loaded.meta["step"] == 1
    obs = {"observation.state": torch.randn(4, 2, 5)}
    a = policy.eval().predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    b = loaded.policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 8, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the normaliser came back from the weights: [-1, 1] -> [min, max]; a constant entry is only centred
    back = loaded.policy.normalizer.unnormalize("action", torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(back, torch.tensor([[-1.0, 0.0, 5.0], [1.0, 2.0, 5.0]]))
    saved = json.loads((path / "policy.json").read_text())
    assert saved["features"] == FEATURES
    assert saved["normalizer"]["action"]["mode"] == "min_max"


def test_checkpoint_files_are_not_pickles(tmp_path: Path) -> None:
    path, _, _ = make_checkpoint(tmp_path)
    for f in path.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"\x80\x02", f"{f.name} looks like a pickle"
        assert not f.name.endswith((".pt", ".pth", ".pkl", ".ckpt"))


@pytest.mark.parametrize(
    "target",
    ["os.system", "builtins.eval", "subprocess.Popen", "realloopx.evil.Policy", "realloop..x", "torch.nn.Linear"],
)
def test_target_outside_realloop_is_refused_before_any_import(tmp_path: Path, target: str) -> None:
    path, _, _ = make_checkpoint(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["policy"]["_target_"] = target
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeConfigError, match="outside realloop"):
        load_policy(path)


def test_nested_target_and_interpolation_are_refused(tmp_path: Path) -> None:
    path, _, _ = make_checkpoint(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["eval"]["obs_map"] = {"_target_": "os.system", "command": "touch pwned"}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeConfigError, match=r"eval\.obs_map\._target_"):
        load_policy(path)
    with pytest.raises(UnsafeConfigError, match="interpolation"):
        check_config({"policy": {"horizon": "${oc.env:HOME}"}})
    assert not (Path.cwd() / "pwned").exists()


def test_target_inside_realloop_must_be_a_policy_class(tmp_path: Path) -> None:
    path, _, _ = make_checkpoint(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["policy"]["_target_"] = "realloop.policies.normalize.Normalizer"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsafeConfigError, match="not a realloop policy class"):
        load_policy(path)


def test_corrupted_or_mismatched_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    path, _, _ = make_checkpoint(tmp_path)
    good = path.parent / "good"
    shutil.copytree(path, good)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_policy(path)
    cfg = json.loads((good / "config.json").read_text())
    cfg["policy"]["down_dims"] = [16, 64]
    (good / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_policy(good)
    (good / "policy.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_policy(good)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_policy(tmp_path.parent)


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path, policy, cfg = make_checkpoint(tmp_path)
    before = (path / "model.safetensors").read_bytes()

    class Boom(dict):
        def items(self):
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, policy, cfg, {"step": 2}, training_tensors=Boom())
    assert (path / "model.safetensors").read_bytes() == before
    assert load_policy(tmp_path).meta["step"] == 1
