"""realloop-train on a real (small) dataset recorded in the sim: outputs, determinism, resume, errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realloop.data import Dataset
from realloop.policies.checkpoint import CheckpointError, load_policy
from realloop.policies.imitation_learner import ema_decay
from realloop.policies.train import batch_indices, compose_config, lr_factor, main, train
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

TINY_DIFFUSION = ["policy=diffusion", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16"]
TINY_BC = ["policy=bc", "policy.hidden_dims=[32,32]"]


@pytest.fixture(scope="module")
def lift_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lift.zarr"
    collect(collect_config(["task=arm_lift", "episodes=4", f"out={path}"]), progress=False)
    return path


def run(path: Path, out: Path, *extra: str, steps: int = 12, policy: list[str] = TINY_DIFFUSION) -> dict:
    cfg = compose_config(
        [
            *policy,
            f"dataset.path={path}",
            f"steps={steps}",
            "batch_size=8",
            "log_every=4",
            "val_every=6",
            "val_batches=2",
            "checkpoint_every=6",
            "optim.warmup_steps=2",
            f"out={out}",
            "device=cpu",
            *extra,
        ]
    )
    return train(cfg, progress=False)


def test_run_folder_has_checkpoint_logs_curves_and_summary(lift_dataset: Path, tmp_path: Path) -> None:
    summary = run(lift_dataset, tmp_path / "run")
    out = tmp_path / "run"
    assert summary.steps == 12 and summary.start_step == 0
    ckpt = Path(summary.checkpoint)
    assert ckpt == (out / "checkpoints" / "last").resolve()
    for name in ("model.safetensors", "config.json", "policy.json", "training_state.safetensors"):
        assert (ckpt / name).is_file(), name
    meta = json.loads((ckpt / "policy.json").read_text())
    assert set(meta["features"]) == {"observation.state", "observation.environment_state", "action"}
    assert meta["features"]["action"]["shape"] == [7]
    assert meta["dataset"]["attributes"]["env_id"] == "realloop/ArmLift-v0"
    assert sorted(meta["dataset"]["train_episodes"] + meta["dataset"]["val_episodes"]) == [0, 1, 2, 3]
    # the normaliser maps the dataset's action range onto [-1, 1]
    with Dataset.open(lift_dataset) as ds:
        hi = np.asarray(ds.stats["action"]["max"])
    norm = meta["normalizer"]["action"]
    np.testing.assert_allclose((hi - np.asarray(norm["offset"])) * np.asarray(norm["scale"]), 1.0, atol=1e-5)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [4, 6, 8, 12]
    assert all(float(r["train_loss"]) > 0 for r in rows if r["train_loss"])
    assert rows[1]["val_loss"] and rows[-1]["val_loss"]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["steps"] == 12 and saved["checkpoint"] == str(ckpt)
    # one checkpoint per checkpoint_every, and the older ones pruned beyond keep_checkpoints (2)
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_0000006", "step_0000012"]


def test_same_seed_same_weights_other_seed_other_weights(lift_dataset: Path, tmp_path: Path) -> None:
    a = load_file(str(Path(run(lift_dataset, tmp_path / "a", steps=6).checkpoint) / "model.safetensors"))
    b = load_file(str(Path(run(lift_dataset, tmp_path / "b", steps=6).checkpoint) / "model.safetensors"))
    c = load_file(str(Path(run(lift_dataset, tmp_path / "c", "seed=1", steps=6).checkpoint) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("unet."))


def test_resume_continues_bit_identically(lift_dataset: Path, tmp_path: Path) -> None:
    straight = run(lift_dataset, tmp_path / "straight", steps=12)
    # the same run, stopped at step 6, then resumed to 12
    first = run(lift_dataset, tmp_path / "split", "stop_at=6", steps=12)
    assert first.steps == 6
    resumed = run(lift_dataset, tmp_path / "split", "resume=true", steps=12)
    assert resumed.start_step == 6 and resumed.steps == 12
    for name in ("model.safetensors", "training_state.safetensors"):
        a = load_file(str(Path(straight.checkpoint) / name))
        b = load_file(str(Path(resumed.checkpoint) / name))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {different[:5]} differ after resume"
    rows = list(csv.DictReader((tmp_path / "split" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [4, 6, 8, 12]


def test_existing_run_is_not_overwritten_without_resume(lift_dataset: Path, tmp_path: Path) -> None:
    run(lift_dataset, tmp_path / "run", steps=6)
    before = (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="resume=true"):
        run(lift_dataset, tmp_path / "run", steps=6)
    assert (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").read_bytes() == before


def test_training_reduces_the_loss_and_the_checkpoint_acts(lift_dataset: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        [
            *TINY_BC,
            f"dataset.path={lift_dataset}",
            "steps=400",
            "batch_size=16",
            "log_every=25",
            "val_every=0",
            "checkpoint_every=400",
            "optim.lr=1e-3",
            "optim.warmup_steps=10",
            "policy.dropout=0.0",
            "policy.hidden_dims=[128,128]",
            f"out={tmp_path / 'bc'}",
            "device=cpu",
        ]
    )
    summary = train(cfg, progress=False)
    losses = [r["train_loss"] for r in summary.history if "train_loss" in r]
    assert losses[-1] < 0.5 * losses[0], losses
    policy = load_policy(tmp_path / "bc").policy
    with Dataset.open(lift_dataset) as ds:
        ep = ds.episode(0)
        state = ep.stream("observation.state").read()[:2]
        env_state = ep.stream("observation.environment_state").read()[:2]
        actions = ep.stream("action").read()
    obs = {
        "observation.state": torch.from_numpy(state[None]).float(),
        "observation.environment_state": torch.from_numpy(env_state[None]).float(),
    }
    chunk = policy.predict_action_chunk(obs)[0].numpy()
    assert chunk.shape == (8, 7)
    # the fitted policy reproduces the demonstration's next actions far better than their mean does
    target = actions[1:9]
    fitted, mean = np.abs(chunk - target).mean(), np.abs(actions.mean(axis=0) - target).mean()
    assert fitted < 0.5 * mean, (fitted, mean)


def test_missing_feature_is_named_with_the_fix(lift_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"observation\.images\.wrist.*policy\.obs_keys"):
        run(lift_dataset, tmp_path / "run", "policy=diffusion_image", "policy.down_dims=[16,32]")


@pytest.mark.slow
def test_cli_prints_one_summary_line(lift_dataset: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("realloop-train")
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            str(exe),
            *TINY_BC,
            f"dataset.path={lift_dataset}",
            "steps=4",
            "batch_size=8",
            "log_every=2",
            "val_every=0",
            "checkpoint_every=4",
            f"out={out}",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("trained bc ") and "-> " in proc.stdout
    bad = subprocess.run([str(exe), "policy=bc", f"out={tmp_path / 'x'}"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "dataset.path" in bad.stderr and "Traceback" not in bad.stderr


def test_config_errors_exit_2_with_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["steps=ten"], "key 'steps' of the train config must be an integer, got 'ten'"),
        (["steps=-3"], "steps=-3 must be >= 1"),
        (["stpes=3"], "unknown key 'stpes' for the train config (did you mean 'steps'?); known: batch_size, "),
        (["optim.lrr=0.1"], "unknown key 'optim.lrr' for the train config (did you mean 'optim.lr'?); known: "
                            "optim.betas, optim.grad_clip, optim.lr, "),
        (["policy=bc", "policy.down_dims=[8]"], "unknown key 'policy.down_dims' for the train config"),  # diffusion's
        (["dataset.val_fraction=1.5"], "dataset.val_fraction=1.5 must be in [0, 1]"),
        (["precision=fp16"], "precision='fp16' must be one of 'auto', 'fp32', 'bf16'"),
        (["ema.enabled=sometimes"], "key 'ema.enabled' of the train config must be true or false, got 'sometimes'"),
        (["policy=nope"], "no policy config 'nope'; known: bc, diffusion, diffusion_distill, diffusion_image"),
    ]  # fmt: skip
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["realloop-train", *args, f"out={tmp_path / 'run'}"])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert err.startswith(f"realloop-train: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
    cfg = compose_config(["compile=false", "stop_at=null", "eval.env_kwargs={control_mode: ee_delta}"])
    assert cfg.compile is False and cfg.eval.env_kwargs == {"control_mode": "ee_delta"}  # open: any keys


def test_schedules() -> None:
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)
    assert ema_decay(0, 0.999, 0.75) == 0.0
    assert ema_decay(10, 0.999, 0.75) < ema_decay(100, 0.999, 0.75) < 0.999
    assert ema_decay(10**9, 0.999, 0.75) == 0.999


def test_batch_order_depends_only_on_seed_and_step() -> None:
    full = batch_indices(50, 8, seed=3, start_step=0)
    seq = [next(full) for _ in range(20)]  # crosses two epochs of 6 batches
    later = batch_indices(50, 8, seed=3, start_step=13)
    assert [next(later) for _ in range(7)] == seq[13:]
    epoch = [i for b in seq[:6] for i in b]
    assert len(set(epoch)) == 48  # a permutation, drop-last
    with pytest.raises(ValueError, match="batch_size"):
        next(batch_indices(5, 8, 0, 0))


@pytest.mark.slow
def test_bf16_autocast_and_torch_compile_train_on_cpu(lift_dataset: Path, tmp_path: Path) -> None:
    """The CUDA defaults (bf16 autocast, torch.compile) forced on here, on CPU: the compiled bf16 loss is close to
    the fp32 one but not identical (autocast is really on), training runs, and the checkpoint keeps fp32 weights
    that load and act."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fp32 = run(lift_dataset, tmp_path / "fp32", steps=4)
    fast = run(lift_dataset, tmp_path / "bf16", "precision=bf16", "compile=true", steps=4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the loss went through torch.compile
    a, b = fp32.history[0]["train_loss"], fast.history[0]["train_loss"]
    assert np.isfinite(b) and a != b and abs(a - b) < 0.1 * a
    weights = load_file(str(Path(fast.checkpoint) / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    loaded = load_policy(fast.checkpoint)
    obs = {
        k: torch.zeros(1, loaded.policy.n_obs_steps, *f.shape)
        for k, f in loaded.policy.features.items()
        if k != "action"
    }
    chunk = loaded.policy.predict_action_chunk(obs)
    assert chunk.shape[-1] == 7 and torch.isfinite(chunk).all()


def test_resume_refuses_other_data_and_a_missing_checkpoint(lift_dataset: Path, tmp_path: Path) -> None:
    from realloop.policies.checkpoint import CheckpointError

    out = tmp_path / "run"
    run(lift_dataset, out, "stop_at=6", steps=12)
    before = (out / "checkpoints" / "last" / "model.safetensors").read_bytes()
    # other features: a reach dataset (environment_state has 3 values, not 12)
    reach = tmp_path / "reach.zarr"
    collect(collect_config(["task=arm_reach", "episodes=2", f"out={reach}"]), progress=False)
    with pytest.raises(CheckpointError) as exc:
        run(reach, out, "resume=true", steps=12)
    message = str(exc.value)
    assert "\n" not in message and "size mismatch" not in message
    assert "observation.environment_state(12)" in message and "observation.environment_state(3)" in message
    assert f"pass dataset.path={lift_dataset.resolve()}" in message and "new out=" in message
    # the same shapes from another dataset (one episode fewer): refused, not silently accepted
    other = Path(shutil.copytree(lift_dataset, tmp_path / "other.zarr"))
    shutil.rmtree(other / "episodes" / "episode_000003")
    with pytest.raises(CheckpointError, match=rf"dataset\.path={other} is another dataset \(fingerprint .*pass "):
        run(other, out, "resume=true", steps=12)
    assert (out / "checkpoints" / "last" / "model.safetensors").read_bytes() == before  # nothing overwritten
    # no checkpoint at all in out: said so, nothing created
    with pytest.raises(FileNotFoundError, match=r"resume=true but .* has no checkpoint to resume from"):
        run(lift_dataset, tmp_path / "fresh", "resume=true", steps=12)
    assert not (tmp_path / "fresh").exists()
    # a copy of the training data elsewhere is the same data: resumed
    copy = Path(shutil.copytree(lift_dataset, tmp_path / "copy.zarr"))
    assert run(copy, out, "resume=true", steps=12).start_step == 6


def test_resume_after_a_crash_past_the_checkpoint_logs_no_duplicate_steps(lift_dataset: Path, tmp_path: Path) -> None:
    from realloop.policies.checkpoint import link_last

    out = tmp_path / "run"
    run(lift_dataset, out, steps=12)  # metrics rows 4, 6, 8, 12; checkpoints 6 and 12
    # as if the process died after logging step 8 (and 12) but before the checkpoint of step 12
    link_last(out / "checkpoints" / "step_0000006")
    shutil.rmtree(out / "checkpoints" / "step_0000012")
    resumed = run(lift_dataset, out, "resume=true", steps=12)
    assert resumed.start_step == 6 and resumed.steps == 12
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert steps == [4, 6, 8, 12]
    assert [r["step"] for r in resumed.history] == [4, 6, 8, 12]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_checkpoints_the_current_step_and_resume_continues(
    lift_dataset: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    exe = Path(sys.executable).with_name("realloop-train")
    out = tmp_path / "run"
    args = [*TINY_BC, f"dataset.path={lift_dataset}", "batch_size=8", "log_every=1", "val_every=0", "device=cpu"]
    proc = subprocess.Popen(
        [str(exe), *args, "steps=100000", "checkpoint_every=100000", f"out={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    metrics = out / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # training has logged a few steps
        if metrics.exists() and len(metrics.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("realloop-train: interrupted at step "), err
    step = int(last_line.split("interrupted at step ")[1].split(";")[0])
    assert step >= 3
    ckpt = out / "checkpoints" / f"step_{step:07d}"
    assert f"checkpoint saved: {ckpt}; continue with resume=true" in last_line
    assert (out / "checkpoints" / "last").resolve() == ckpt.resolve()
    assert json.loads((ckpt / "training_state.json").read_text())["meta"]["step"] == step
    cfg = compose_config([*args, f"steps={step + 2}", f"out={out}", "resume=true"])
    resumed = train(cfg, progress=False)
    assert resumed.start_step == step and resumed.steps == step + 2
    steps = [int(r["step"]) for r in csv.DictReader(metrics.open())]
    assert steps == sorted(set(steps)) and steps[-1] == step + 2


def test_a_corrupted_chunk_stops_training_with_one_line(
    lift_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from realloop.data.stats import ensure_stats

    ensure_stats(lift_dataset, progress=False)
    data = Path(shutil.copytree(lift_dataset, tmp_path / "lift.zarr"))  # with its statistics stored
    chunk = data / "episodes" / "episode_000001" / "observation.state" / "data" / "c" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # after the dataset was written: its crc32c no longer matches
    chunk.write_bytes(bytes(raw))
    argv = [*TINY_BC, f"dataset.path={data}", "steps=2", "batch_size=8", "device=cpu", f"out={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["realloop-train", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        "realloop-train: error: cannot read the data of stream 'observation.state' in episode_000001 of dataset "
        f"{data} (checksum mismatch: a chunk file is truncated or corrupted; "
    ), err
    assert err.endswith(f"run `realloop-dataset verify {data}` to locate the file\n")
    # no statistics yet: computing them meets the damage first, with the same line (after the progress bar)
    with Dataset.open(data, mode="a") as ds:
        ds.info["stats"] = None
        ds.root.attrs["realloop"] = ds.info
    with pytest.raises(SystemExit) as exc:
        main()
    last = capsys.readouterr().err.splitlines(keepends=True)[-1]
    assert exc.value.code == 2
    assert last.startswith("realloop-train: error: cannot read the data of stream 'observation.state' in episode_0")
    assert last.endswith(f"run `realloop-dataset verify {data}` to locate the file\n")
    assert not (tmp_path / "run").exists()


def test_training_state_is_the_imitation_learners_state(lift_dataset: Path, tmp_path: Path) -> None:
    """realloop-train trains an ImitationLearner: its checkpoint's training state loads into one through the learner
    seam, whose exported actor weights are the checkpoint's policy and whose actions are the loaded policy's."""
    from realloop.policies.checkpoint import build_policy
    from realloop.policies.imitation_learner import ImitationLearner
    from realloop.policies.rl.state import FORMAT, load_learner_state

    summary = run(lift_dataset, tmp_path / "bc", steps=6, policy=TINY_BC)
    folder = Path(summary.checkpoint)
    state = json.loads((folder / "training_state.json").read_text())
    assert state["format"] == FORMAT and state["modules"] == ["ema", "policy"] and state["meta"]["step"] == 6

    loaded = load_policy(folder)
    policy = build_policy(loaded.config["policy"], json.loads((folder / "policy.json").read_text())["features"])
    learner = ImitationLearner(policy, lr=1e-3, ema=(0.75, 0.75))
    assert load_learner_state(folder, learner, restore_rng=False)["step"] == 6
    weights = load_file(str(folder / "model.safetensors"))
    exported = learner.actor_weights()
    assert exported.keys() == weights.keys() and all(torch.equal(exported[k], weights[k]) for k in weights)

    with Dataset.open(lift_dataset) as ds:
        ep = next(iter(ds.episodes()))
        n = loaded.policy.n_obs_steps
        obs = {k: ep.stream(k).read()[:n][None] for k in loaded.policy.obs_keys}  # (1, n_obs_steps, ...)
    chunk = learner.act(obs, explore=False)
    expected = loaded.policy.predict_action_chunk({k: torch.as_tensor(v) for k, v in obs.items()}).numpy()
    assert chunk.shape == expected.shape == (1, loaded.policy.n_action_steps, expected.shape[-1])
    np.testing.assert_array_equal(chunk, expected)

    # one more learner step moves the policy; a non-finite loss is refused before any step
    batch = next(iter(torch.utils.data.DataLoader(_windows(lift_dataset, loaded.config["policy"]), batch_size=8)))
    before = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    assert np.isfinite(learner.update(batch)["loss"])
    assert any(not torch.equal(before[k], v) for k, v in learner.policy.state_dict().items())
    bad = {**batch, "action": torch.full_like(batch["action"], float("nan"))}
    kept = {k: v.clone() for k, v in learner.policy.state_dict().items()}
    with pytest.raises(FloatingPointError, match="training loss is nan"):
        learner.update(bad)
    assert all(torch.equal(kept[k], v) for k, v in learner.policy.state_dict().items())


def _windows(path: Path, pcfg: dict):
    from realloop.data.training import WindowDataset

    return WindowDataset.for_policy(
        path, obs_keys=pcfg["obs_keys"], action_key="action", n_obs_steps=pcfg["n_obs_steps"], horizon=pcfg["horizon"]
    )


def test_resume_refuses_a_training_state_without_a_learner_state(lift_dataset: Path, tmp_path: Path) -> None:
    run(lift_dataset, tmp_path / "old", steps=4, policy=TINY_BC)
    path = tmp_path / "old" / "checkpoints" / "last" / "training_state.json"
    state = json.loads(path.read_text())
    del state["format"]  # as an older realloop-train wrote it
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"older realloop-train .* choose a new out="):
        run(lift_dataset, tmp_path / "old", "resume=true", steps=8, policy=TINY_BC)
