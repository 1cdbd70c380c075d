"""realloop-collect: scripted demonstrations land in a valid dataset, survive a kill, and append on rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realloop.configs.schema import ConfigError
from realloop.data import Dataset
from realloop.data.layout import EPISODES_DIR, episode_dirname
from realloop.data.verify import verify
from realloop.sim.collect import collect, compose_config, main


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "realloop.sim.collect", *args]


def test_collect_writes_demonstrations_with_images_and_sim_params(tmp_path: Path) -> None:
    out = tmp_path / "reach.zarr"
    cfg = compose_config(["task=arm_reach", "episodes=3", f"out={out}", "images=true", "randomize=true", "seed=7"])
    summary = collect(cfg, progress=False)
    assert summary.episodes == 3 and summary.dataset_episodes == 3 and summary.successes == 3
    report = json.loads((tmp_path / "reach.collect.json").read_text())
    assert report["success_rate"] == 1.0 and report["steps"] == summary.steps > 0
    assert verify(out).ok
    with Dataset.open(out) as ds:
        assert ds.robot["name"] == "arm6" and ds.robot["control_rate_hz"] == 10
        assert set(ds.features) >= {"observation.images.front", "observation.images.wrist", "action"}
        seeds = []
        for ep in ds.episodes():
            assert ep.meta["source"] == "scripted" and ep.meta["success"] is True
            assert ep.meta["sim_params"]["latency_steps"] in (0, 1)  # the physics that produced the episode
            seeds.append(ep.meta["attributes"]["seed"])
            n = ep.stream("action").data.shape[0]
            for name in ds.features:  # observations: one more sample, the final observation
                assert ep.stream(name).timestamps.shape == (n + name.startswith("observation."),)
            np.testing.assert_allclose(np.diff(ep.stream("action").timestamps), 0.1)
            assert ep.stream("next.success").data[-1]  # the episode ends on success
        assert seeds == [7, 8, 9]
        # different seeds -> different physics
        assert ds.episode(0).meta["sim_params"] != ds.episode(1).meta["sim_params"]


def test_collect_writes_done_terminated_and_the_final_observation(tmp_path: Path) -> None:
    """Each step's observation, next.done and next.terminated, and the final observation after the last step,
    against a replay of the recorded actions: cut by the time limit (truncated) and ended on success."""
    from realloop.sim.collect import make_task_env

    for limit, terminated in ((4, False), (50, True)):
        out = tmp_path / f"reach_{limit}.zarr"
        cfg = compose_config(["task=arm_reach", "episodes=2", f"out={out}", f"task.env.max_episode_steps={limit}"])
        collect(cfg, progress=False)
        env = make_task_env(cfg.task, images=False, image_size=(96, 96), randomize=False)
        with Dataset.open(out) as ds:
            assert len(ds) == 2
            for ep in ds.episodes():
                actions = ep.stream("action").read()
                n = len(actions)
                assert ep.stream("next.done").read().tolist() == [False] * (n - 1) + [True]
                assert ep.stream("next.terminated").read().tolist() == [False] * (n - 1) + [terminated]
                assert ep.success is terminated and (terminated or n == limit)
                obs, _ = env.reset(seed=ep.meta["attributes"]["seed"])
                replay = [obs]
                for a in actions:
                    obs, *_ = env.step(a)
                    replay.append(obs)
                for key in obs:
                    stream = ep.stream(key)
                    np.testing.assert_array_equal(stream.read(), np.stack([o[key] for o in replay]), err_msg=key)
                    np.testing.assert_allclose(stream.timestamps, np.arange(n + 1) * 0.1)
                # the aligned view's steps are the actions, with or without a rate: the final observation is none
                for view in (ep.aligned(), ep.aligned(rate=10)):
                    assert len(view) == n and view.indices["observation.state"][-1] == n - 1
        env.close()


@pytest.mark.slow
def test_killed_collect_leaves_a_valid_dataset_and_rerun_appends(tmp_path: Path) -> None:
    out = tmp_path / "lift.zarr"
    proc = subprocess.Popen(
        _cli("task=arm_lift", "episodes=500", f"out={out}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    episodes_dir = out / EPISODES_DIR
    while time.time() < deadline:  # kill while the second or a later episode is being recorded
        if episodes_dir.is_dir() and len([p for p in episodes_dir.iterdir() if p.is_dir()]) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = verify(out)
    assert report.ok, report.errors
    with Dataset.open(out) as ds:
        done = len(ds)
    assert done >= 2
    res = subprocess.run(_cli("task=arm_lift", "episodes=1", f"out={out}"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"({done + 1} episodes in total)" in res.stdout
    with Dataset.open(out) as ds:
        assert ds.episode(done).meta["attributes"]["seed"] == done  # new episodes get new seeds


def test_interrupted_collect_commits_what_is_done(tmp_path: Path) -> None:
    out = tmp_path / "reach.zarr"
    proc = subprocess.Popen(
        _cli("task=arm_reach", "episodes=500", f"out={out}"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out / EPISODES_DIR / episode_dirname(1)).exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "[interrupted]" in stdout
    assert verify(out).ok


def test_collect_refuses_a_dataset_with_other_features(tmp_path: Path) -> None:
    out = tmp_path / "ds.zarr"
    assert subprocess.run(_cli("task=arm_reach", "episodes=1", f"out={out}"), capture_output=True).returncode == 0
    cmd = _cli("task=arm_reach", "episodes=1", f"out={out}", "images=true")
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2
    assert "different features" in res.stderr
    with Dataset.open(out) as ds:
        assert len(ds) == 1  # nothing lost


def test_action_noise_perturbs_what_runs_and_records_the_expert_labels(tmp_path: Path) -> None:
    runs = {}
    for noise in (0.0, 0.1):
        out = tmp_path / f"lift_{noise}.zarr"
        summary = collect(
            compose_config(["task=arm_lift", "episodes=2", f"out={out}", f"action_noise={noise}"]), progress=False
        )
        assert summary.successes == 2  # the closed-loop expert recovers from the perturbations
        with Dataset.open(out) as ds:
            runs[noise] = [
                (
                    ep.meta["attributes"]["action_noise"],
                    ep.stream("observation.state").read(),
                    ep.stream("action").read(),
                )
                for ep in ds.episodes()
            ]
    for (n0, s0, _a0), (n1, s1, a1) in zip(runs[0.0], runs[0.1], strict=True):
        assert (n0, n1) == (0.0, 0.1)
        # the same seed, other executed actions: the arm went elsewhere
        k = min(len(s0), len(s1))
        assert np.abs(s0[:k, 13:16] - s1[:k, 13:16]).max() > 0.005
        # the recorded gripper commands are the expert's own (open or closed, never perturbed) and every action
        # is a valid ee_delta step: noise never reaches the labels
        closed_or_open = np.isclose(a1[:, 6], 0.0) | ((a1[:, 6] >= 0.034 - 1e-6) & (a1[:, 6] <= 0.04 + 1e-6))
        assert closed_or_open.all()
        assert np.abs(a1[:, :3]).max() <= 0.05 + 1e-6 and np.abs(a1[:, 3:6]).max() <= 0.3 + 1e-6


def test_collect_refuses_negative_action_noise(tmp_path: Path) -> None:
    out = tmp_path / "lift.zarr"
    proc = subprocess.run(
        _cli("task=arm_lift", "episodes=1", f"out={out}", "action_noise=-0.1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "action_noise=-0.1 must be >= 0" in proc.stderr
    assert not out.exists()


def test_config_errors_exit_2_with_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.zarr"
    res = subprocess.run(_cli("episodes=ten", f"out={out}"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr == "realloop-collect: error: key 'episodes' of the collect config must be an integer, got 'ten'\n"
    typo = "unknown key 'episods' for the collect config (did you mean 'episodes'?); known: action_noise, episodes, "
    cases = [
        ("episodes=-3", "episodes=-3 must be >= 1"),
        ("episods=3", typo),
        ("+episods=3", typo),  # hydra's append syntax adds no undeclared key either
        ("task.randomize.frictoin=[1,2]", "unknown key 'task.randomize.frictoin' for the collect config (did you mean "
                                          "'task.randomize.friction'?)"),
        ("images=maybe", "key 'images' of the collect config must be true or false, got 'maybe'"),
        ("image_format=gif", "image_format='gif' must be one of 'jpeg', 'png', 'webp'"),
        ("task=nope", "no task config 'nope'; known: arm_lift, arm_pusht, arm_reach, quad_walk"),
        ("task=_arm", "no task config '_arm' (task/_arm.yaml is a partial that other task configs extend); known: "
                      "arm_lift, arm_pusht, arm_reach, quad_walk"),  # a partial is not a task
        ("episodes", "Error parsing override 'episodes'"),
    ]  # fmt: skip
    for arg, message in cases:
        monkeypatch.setattr(sys, "argv", ["realloop-collect", arg, f"out={out}"])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert err.startswith(f"realloop-collect: error: {message}") and err.count("\n") == 1, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="'episodes' of the collect config must be an integer"):
        compose_config(["episodes=ten"])  # scripts composing the config get the same check
    assert compose_config(["task.env.max_episode_steps=5"]).task.env.max_episode_steps == 5  # gym.make kwargs: open


def test_out_that_is_a_file_is_one_line_and_the_file_survives(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for out, message in [
        (notes, f"out={notes} is a file, not a dataset (a directory); choose a new out= or an existing dataset"),
        (notes / "x.zarr", f"cannot create the folder of out={notes / 'x.zarr'} ({notes} is a file); choose another"),
    ]:
        res = subprocess.run(_cli("task=arm_reach", "episodes=1", f"out={out}"), capture_output=True, text=True)
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith(f"realloop-collect: error: {message}") and res.stderr.count("\n") == 1, res.stderr
    assert notes.read_text() == "keep me"
    assert not (tmp_path / "notes.collect.json").exists()


def test_step_scale_is_one_control_step_of_motion() -> None:
    import gymnasium as gym

    for mode in ("joint_position", "joint_delta", "ee_delta"):
        env = gym.make("realloop/ArmLift-v0", control_mode=mode)
        u = env.unwrapped
        scale = u.action_mode.step_scale()
        assert scale.shape == u.action_space.shape and scale[-1] == 0.0  # the gripper
        if mode != "ee_delta":
            np.testing.assert_allclose(scale[:-1], u.robot.velocity_limit * u.robot.control_dt)
        env.close()


def test_the_cli_run_in_process_leaves_other_loggers_working(tmp_path: Path, monkeypatch) -> None:
    """The hydra CLIs (collect, train, eval) run in-process by the demo: they must not disable the loggers the
    process already has (hydra's "disabled" logging did, silencing e.g. the safety filter's warnings)."""
    import logging

    from realloop.sim.collect import _app

    existing = logging.getLogger("realloop.test.existing")
    monkeypatch.setattr(sys, "argv", ["realloop-collect", "task=arm_reach", "episodes=1", f"out={tmp_path / 'd.zarr'}"])
    _app()
    assert not existing.disabled
