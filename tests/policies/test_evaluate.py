"""realloop-eval: vectorised rollouts of trained policies in realloop's tasks and in gymnasium's Pendulum.

Checkpoints are trained for real (tiny, a few dozen steps) on datasets recorded for real: realloop-collect's
arm_lift, and Pendulum episodes of a PD controller written with realloop.data.Dataset.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.envs.registration import register, registry

from realloop.data import Dataset
from realloop.policies import evaluate_graph
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import load_policy
from realloop.policies.evaluate import (
    EvalError,
    compose_config,
    env_kwargs_from_checkpoint,
    evaluate,
    main,
    run,
)
from realloop.policies.obs_map import ObsMap, ObsMapError, load_obs_map
from realloop.policies.train import compose_config as train_config
from realloop.policies.train import train
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

REPO = Path(__file__).resolve().parents[2]
LIFT = "realloop/ArmLift-v0"
PENDULUM_DICT = "realloop_test/PendulumUpright-v0"
UPRIGHT_COS = 0.4  # within ~66 degrees of upright: some episodes get there early, some late, some never
TINY = ["steps=30", "batch_size=16", "log_every=10", "val_every=0", "checkpoint_every=30", "device=cpu"]


# -- a dict-observation Pendulum that reports success (test-only id) --------------------------------------------
class _DictObs(gym.ObservationWrapper):
    """Pendulum's [cos, sin, thdot] array as {agent_pos: [cos, sin], agent_vel: [thdot]}."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({
            "agent_pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            "agent_vel": gym.spaces.Box(-8.0, 8.0, (1,), np.float32),
        })  # fmt: skip

    def observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"agent_pos": obs[:2].astype(np.float32), "agent_vel": obs[2:].astype(np.float32)}


class _Upright(gym.Wrapper):
    """Ends the episode with success once the pendulum is near upright; reports cos(theta) and speed."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "is_success": False}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        cos = float(obs["agent_pos"][0])
        up = cos > UPRIGHT_COS
        info = {**info, "is_success": up, "cos_theta": cos, "speed": abs(float(obs["agent_vel"][0]))}
        return obs, reward, terminated or up, truncated, info


def _make_pendulum_dict(render_mode: str | None = None) -> gym.Env:
    return _Upright(_DictObs(PendulumEnv(render_mode=render_mode)))


if PENDULUM_DICT not in registry:
    register(id=PENDULUM_DICT, entry_point=_make_pendulum_dict, max_episode_steps=40)


def _pd_control(obs: np.ndarray) -> np.ndarray:
    theta = math.atan2(obs[1], obs[0])
    return np.array([np.clip(-8.0 * theta - 1.5 * obs[2], -2.0, 2.0)], dtype=np.float32)


# -- checkpoints ------------------------------------------------------------------------------------------------
def _train(dataset: Path, out: Path, *overrides: str) -> Path:
    cfg = train_config(["policy=bc", f"dataset.path={dataset}", f"out={out}", "policy.hidden_dims=[32,32]", *TINY,
                        *overrides])  # fmt: skip
    summary = train(cfg, progress=False)
    return Path(summary.out), summary


@pytest.fixture(scope="module")
def tiny_lift_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A BC policy on 3 arm_lift episodes of realloop-collect; its training ran 2 rollouts through evaluate."""
    tmp = tmp_path_factory.mktemp("lift")
    collect(collect_config(["task=arm_lift", "episodes=3", f"out={tmp / 'lift.zarr'}"]), progress=False)
    return _train(tmp / "lift.zarr", tmp / "run", f"eval.env={LIFT}", "eval.every=30", "eval.episodes=2",
                  "eval.num_envs=2")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lift_image_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusion policy on the wrist camera (32x32) and the state, trained for 2 steps."""
    tmp = tmp_path_factory.mktemp("lift_img")
    data = tmp / "lift_img.zarr"
    collect(collect_config(["task=arm_lift", "episodes=2", f"out={data}", "images=true", "image_size=[32,32]"]),
            progress=False)  # fmt: skip
    cfg = train_config([
        "policy=diffusion_image", f"dataset.path={data}", f"out={tmp / 'run'}", "steps=2", "batch_size=4",
        "log_every=1", "val_every=0", "checkpoint_every=2", "device=cpu", "policy.down_dims=[16,32]",
        "policy.obs_keys=[observation.state,observation.images.wrist]", "policy.crop=[28,28]",
    ])  # fmt: skip
    return Path(train(cfg, progress=False).out)


@pytest.fixture(scope="module")
def tiny_pendulum_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BC policy on observation.state = Pendulum-v1's [cos, sin, thdot], from a PD controller's episodes."""
    tmp = tmp_path_factory.mktemp("pendulum")
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["cos", "sin", "thdot"], "rate_hz": 20},
        "action": {"dtype": "float32", "shape": [1], "names": ["torque"], "rate_hz": 20},
    }
    ds = Dataset.create(tmp / "pendulum.zarr", features=features, attributes={"source": "test"}, durable=False)
    env = gym.make("Pendulum-v1")
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        ep = ds.begin_episode(task="swing up", source="scripted")
        for t in range(40):
            action = _pd_control(obs)
            ep.add("observation.state", t * 0.05, obs.astype(np.float32))
            ep.add("action", t * 0.05, action)
            obs, *_ = env.step(action)
        ep.commit()
    ds.close()
    return _train(tmp / "pendulum.zarr", tmp / "run", "policy.obs_keys=[observation.state]")[0]


@pytest.fixture(scope="module")
def pendulum_policy(tiny_pendulum_checkpoint: Path) -> Any:
    return load_policy(tiny_pendulum_checkpoint).policy


DICT_MAP = {"observation.state": {"keys": ["agent_pos", "agent_vel"]}}


def _same_episodes(a: list[dict], b: list[dict]) -> None:
    """Same seeds, lengths and successes; returns and info equal up to float rounding: a batched forward pass
    rounds differently from a single-sample one (BLAS kernels), so batch composition changes the last bits."""
    assert [(e["episode"], e["seed"], e["length"], e["success"]) for e in a] == \
        [(e["episode"], e["seed"], e["length"], e["success"]) for e in b]  # fmt: skip
    np.testing.assert_allclose([e["return"] for e in a], [e["return"] for e in b], rtol=1e-5, atol=1e-6)
    for x, y in zip(a, b, strict=True):
        assert x["info"].keys() == y["info"].keys()
        np.testing.assert_allclose(list(x["info"].values()), list(y["info"].values()), rtol=1e-4, atol=1e-5)


# -- observation maps ------------------------------------------------------------------------------------------
def test_obs_map_selects_concatenates_and_explains_misfits() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)  # 3 envs
    out = ObsMap.parse({"observation.state": {"index": [3, 0]}, "observation.x": None})(arr)
    np.testing.assert_array_equal(out["observation.state"], arr[:, [3, 0]])
    np.testing.assert_array_equal(out["observation.x"], arr)

    obs = {"pos": arr[:, :2], "vel": arr[:, 2:3], "observation.extra": arr[:, 3:], "nest": {"inner": arr * 2}}
    out = ObsMap.parse({
        "observation.state": {"keys": ["vel", "pos"]}, "observation.pos": "pos",
        "observation.deep": {"source": "nest/inner", "index": 1},
    })(obs)  # fmt: skip
    np.testing.assert_array_equal(out["observation.state"], np.concatenate([arr[:, 2:3], arr[:, :2]], axis=1))
    np.testing.assert_array_equal(out["observation.pos"], arr[:, :2])
    np.testing.assert_array_equal(out["observation.deep"], arr[:, 1:2] * 2)
    np.testing.assert_array_equal(out["observation.extra"], arr[:, 3:])  # unlisted entries pass through

    with pytest.raises(ObsMapError, match="unknown fields"):
        ObsMap.parse({"observation.state": {"src": "pos"}})
    with pytest.raises(ObsMapError, match="both source and keys"):
        ObsMap.parse({"observation.state": {"source": "pos", "keys": ["vel"]}})
    with pytest.raises(ObsMapError, match="out of range"):
        ObsMap.parse({"observation.state": {"index": [4]}})(arr)
    with pytest.raises(ObsMapError, match=r"lacks.*'pos'"):
        ObsMap.parse({"observation.state": "missing"})(obs)
    with pytest.raises(ObsMapError, match="source: <entry>"):
        ObsMap.parse({"observation.state": None})(obs)

    pendulum = load_obs_map("pendulum")  # configs/obs_map/pendulum.yaml
    assert pendulum.to_dict() == {"observation.state": {"index": [0, 1, 2]}}
    with pytest.raises(ObsMapError, match="pendulum"):  # the message lists the known maps
        load_obs_map("no_such_map")


# -- evaluate ---------------------------------------------------------------------------------------------------
def test_results_do_not_depend_on_num_envs(pendulum_policy: Any) -> None:
    kw = dict(episodes=6, seed=20, obs_map=DICT_MAP, progress=False)
    one = evaluate(pendulum_policy, PENDULUM_DICT, num_envs=1, **kw)
    three = evaluate(pendulum_policy, PENDULUM_DICT, num_envs=3, **kw)
    two_async = evaluate(pendulum_policy, PENDULUM_DICT, num_envs=2, vectorization="async", **kw)
    lengths = [e["length"] for e in one.per_episode]
    assert len(set(lengths)) > 1, "episodes of different lengths are what could bias the assignment"
    assert [e["episode"] for e in three.per_episode] == list(range(6))
    _same_episodes(one.per_episode, three.per_episode)
    _same_episodes(one.per_episode, two_async.per_episode)
    assert one.success_rate == three.success_rate == np.mean([e["success"] for e in one.per_episode])
    assert three.num_envs == 3 and one.episodes == three.episodes == 6


def test_episode_k_uses_seed_plus_k(pendulum_policy: Any) -> None:
    first = evaluate(pendulum_policy, PENDULUM_DICT, episodes=3, seed=7, obs_map=DICT_MAP, progress=False)
    later = evaluate(pendulum_policy, PENDULUM_DICT, episodes=2, seed=8, obs_map=DICT_MAP, progress=False)
    assert [e["seed"] for e in first.per_episode] == [7, 8, 9]
    strip = [{k: v for k, v in e.items() if k != "episode"} for e in first.per_episode[1:]]
    assert strip == [{k: v for k, v in e.items() if k != "episode"} for e in later.per_episode]
    assert first.per_episode[0]["return"] != first.per_episode[1]["return"]


def test_metrics_match_a_manual_rollout(pendulum_policy: Any) -> None:
    result = evaluate(pendulum_policy, PENDULUM_DICT, episodes=3, seed=40, obs_map=DICT_MAP, num_envs=2,
                      progress=False)  # fmt: skip
    env = gym.make(PENDULUM_DICT)
    for ep in result.per_episode:
        agent = PolicyAgent(pendulum_policy, 1)
        obs, _ = env.reset(seed=ep["seed"])
        ret, length, success, done = 0.0, 0, False, False
        while not done:
            state = np.concatenate([obs["agent_pos"], obs["agent_vel"]])[None]
            action = np.clip(agent.step({"observation.state": state})[0], -2.0, 2.0)
            obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
            ret, length, success = ret + float(reward), length + 1, success or info["is_success"]
            done = terminated or truncated
        assert ep["length"] == length and ep["success"] == success
        assert ep["return"] == pytest.approx(ret, rel=1e-5)
        assert ep["info"]["cos_theta"] == pytest.approx(info["cos_theta"], rel=1e-4, abs=1e-5)
        assert ep["info"].keys() == {"cos_theta", "speed"}  # numeric scalars only, the success key apart
        assert success == (info["cos_theta"] > UPRIGHT_COS)
    per = result.per_episode
    assert result.success_rate == pytest.approx(np.mean([e["success"] for e in per]))
    assert result.mean_return == pytest.approx(np.mean([e["return"] for e in per]))
    assert result.std_return == pytest.approx(np.std([e["return"] for e in per]))
    assert result.mean_length == pytest.approx(np.mean([e["length"] for e in per]))
    assert result.info_metrics["speed"] == pytest.approx(np.mean([e["info"]["speed"] for e in per]))
    assert json.loads(json.dumps(result.to_dict()))["successes"] == sum(e["success"] for e in per)
    line = result.line()
    assert line.startswith(f"eval {PENDULUM_DICT}: {result.successes}/3 successful") and "3 episodes" in line


def test_array_observations_and_missing_success(pendulum_policy: Any) -> None:
    by_name = evaluate(pendulum_policy, "Pendulum-v1", episodes=2, seed=3, obs_map="pendulum", max_steps=15,
                       progress=False)  # fmt: skip
    default = evaluate(pendulum_policy, "Pendulum-v1", episodes=2, seed=3, max_steps=15, progress=False)
    assert by_name.per_episode == default.per_episode  # one numeric feature: the whole array is observation.state
    assert [e["length"] for e in by_name.per_episode] == [15, 15]
    assert by_name.success_rate is None and all(e["success"] is None for e in by_name.per_episode)
    assert "success not reported" in by_name.line()
    assert by_name.to_dict()["successes"] is None


def test_observation_and_action_misfits_are_explained(pendulum_policy: Any) -> None:
    with pytest.raises(ObsMapError, match="obs_map"):  # dict entries named unlike the policy's features
        evaluate(pendulum_policy, PENDULUM_DICT, episodes=1, max_steps=2, progress=False)
    with pytest.raises(ObsMapError, match=r"shape \(2,\) per env, the policy expects \(3,\)"):
        evaluate(pendulum_policy, "Pendulum-v1", episodes=1, max_steps=2, progress=False,
                 obs_map={"observation.state": {"index": [0, 1]}})  # fmt: skip
    with pytest.raises(EvalError, match=r"shape \(1,\).*shape \(7,\)"):
        evaluate(pendulum_policy, LIFT, episodes=1, max_steps=2, progress=False)
    with pytest.raises(EvalError, match="cannot make env"):
        evaluate(pendulum_policy, "NoSuchEnv-v9", episodes=1, progress=False)


def test_videos_are_written_and_decodable(tiny_lift_checkpoint: tuple[Path, Any], tmp_path: Path) -> None:
    policy = load_policy(tiny_lift_checkpoint[0]).policy
    result = evaluate(policy, LIFT, {"render_size": (48, 64)}, episodes=3, num_envs=2, seed=1, videos=2,
                      video_dir=tmp_path, max_steps=6, progress=False)  # fmt: skip
    assert len(result.videos) == 2 and result.per_episode[2]["video"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(v).name for v in result.videos)
    for ep in result.per_episode[:2]:
        path = Path(ep["video"])
        assert path.name == f"episode_{ep['episode']:03d}_{'success' if ep['success'] else 'failure'}.mp4"
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)  # the arm's control rate
        cap.release()
        assert len(frames) == ep["length"] + 1  # the reset frame and one per step
        assert frames[0].shape == (48, 64, 3) and frames[-1].std() > 0


def test_training_rollouts_go_through_evaluate(tiny_lift_checkpoint: tuple[Path, Any]) -> None:
    summary = tiny_lift_checkpoint[1]
    assert summary.eval["env"] == LIFT and summary.eval["episodes"] == 2
    assert [e["seed"] for e in summary.eval["per_episode"]] == [100_000, 100_001]
    assert {"height", "ee_to_cube"} <= summary.eval["info_metrics"].keys()


def test_env_auto_rebuilds_the_training_env(tiny_lift_image_checkpoint: Path) -> None:
    loaded = load_policy(tiny_lift_image_checkpoint)
    env_id, kwargs = env_kwargs_from_checkpoint(loaded.meta)
    assert env_id == LIFT
    assert kwargs == {
        "control_mode": "ee_delta", "max_episode_steps": 100, "cameras": ["wrist"], "image_size": [32, 32],
    }  # fmt: skip
    loaded.policy.num_inference_steps = 2
    result = evaluate(loaded.policy, env_id, kwargs, episodes=1, max_steps=2, progress=False)
    assert result.per_episode[0]["length"] == 2 and result.success_rate == 0.0

    meta = json.loads(json.dumps(loaded.meta))
    meta["dataset"]["attributes"]["collect_config"]["randomize"] = True
    assert env_kwargs_from_checkpoint(meta)[1]["randomize"]["friction"] == [0.8, 1.2]  # the task's section
    with pytest.raises(EvalError, match="env="):
        env_kwargs_from_checkpoint({"dataset": {"path": "x.zarr", "attributes": {}}, "features": {}})


# -- the CLI ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_writes_json_and_videos(tiny_lift_checkpoint: tuple[Path, Any]) -> None:
    run_dir = tiny_lift_checkpoint[0]
    cmd = [str(REPO / ".venv/bin/realloop-eval"), f"checkpoint={run_dir}", "episodes=2", "num_envs=2", "max_steps=4",
           "videos=1", "device=cpu", "env_kwargs={render_size:[48,64]}"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    folder = (run_dir / "checkpoints" / "last").resolve() / "eval"
    report = json.loads((folder / "realloop_ArmLift-v0.json").read_text())
    assert lines[0].startswith(f"eval {LIFT}: {report['result']['successes']}/2 successful (")
    assert "2 episodes in" in lines[0] and lines[1].startswith(f"results: {folder / 'realloop_ArmLift-v0.json'}")
    assert report["env_id"] == LIFT and report["env_kwargs"]["control_mode"] == "ee_delta"
    assert report["env_kwargs"]["render_size"] == [48, 64] and report["config"]["episodes"] == 2
    assert report["result"]["episodes"] == 2 and [e["length"] for e in report["result"]["per_episode"]] == [4, 4]
    videos = [Path(v) for v in report["result"]["videos"]]
    assert len(videos) == 1 and videos[0].parent == folder / "realloop_ArmLift-v0" and videos[0].is_file()


def test_cli_errors_exit_2_with_one_line(
    tiny_pendulum_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    res = subprocess.run([str(REPO / ".venv/bin/realloop-eval"), f"checkpoint={tmp_path / 'nothing'}"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    missing = f"no checkpoint at {tmp_path / 'nothing'}: the path does not exist"
    assert res.stderr.strip() == f"realloop-eval: error: {missing}"

    ckpt = f"checkpoint={tiny_pendulum_checkpoint}"
    cases = [
        ([ckpt], "does not record the env"),  # a hand-made dataset: env=auto cannot know the env
        ([ckpt, "env=NoSuchEnv-v9"], "cannot make env 'NoSuchEnv-v9'"),
        ([ckpt, "env=Pendulum-v1", "obs_map={observation.state:{index:[0]}}"], "fix the obs_map entry"),
        ([ckpt, "env=Pendulum-v1", "obs_map=nonexistent"], "configs/obs_map/"),
        ([ckpt, "env=Pendulum-v1", "obs_map=pendulum", "n_action_steps=99"], "n_action_steps=99 must be in [1, "),
        ([], "no checkpoint given"),
    ]
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["realloop-eval", *args, "max_steps=2", "episodes=1", "device=cpu"])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2, err
        assert err.startswith("realloop-eval: error: ") and message in err and "\n" not in err


def test_run_in_process_matches_evaluate(tiny_pendulum_checkpoint: Path, pendulum_policy: Any, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    cfg = compose_config([f"checkpoint={tiny_pendulum_checkpoint}", "env=Pendulum-v1", "obs_map=pendulum",
                          "episodes=2", "seed=5", "max_steps=10", f"out={out}", "device=cpu"])  # fmt: skip
    result, path = run(cfg)
    assert path == out and json.loads(out.read_text())["result"]["per_episode"] == result.per_episode
    direct = evaluate(pendulum_policy, "Pendulum-v1", episodes=2, seed=5, max_steps=10, progress=False)
    assert result.per_episode == direct.per_episode


def test_n_action_steps_sets_how_often_the_policy_replans(
    tiny_pendulum_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realloop.policies.chunk_policy import ChunkPolicy

    calls = []
    original = ChunkPolicy.predict_action_chunk
    monkeypatch.setattr(
        ChunkPolicy, "predict_action_chunk", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    counts = {}
    for n in (None, 1):
        calls.clear()
        cfg = compose_config([f"checkpoint={tiny_pendulum_checkpoint}", "env=Pendulum-v1", "obs_map=pendulum",
                              "episodes=1", "max_steps=12", f"out={tmp_path / 'r.json'}", "device=cpu",
                              f"n_action_steps={'null' if n is None else n}"])  # fmt: skip
        run(cfg)
        counts[n] = len(calls)
    assert load_policy(tiny_pendulum_checkpoint).policy.n_action_steps > 1
    assert counts[1] == 12 and counts[None] < 12  # one chunk per step, against the checkpoint's chunking


@pytest.mark.slow
def test_eval_graph_runs_the_checkpoint_on_the_sim_graph(
    tiny_lift_checkpoint: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = tiny_lift_checkpoint
    out = tmp_path / "graph"
    argv = [
        str(run),
        "--episodes",
        "1",
        "--seed",
        "3",
        "--episode-s",
        "3",
        "--timeout",
        "60",
        "--out",
        str(out),
        "--domain-id",
        str(150 + os.getpid() % 60),
        "--set",
        "nodes.safety_filter.params.velocity_scale=0.5",
    ]
    assert evaluate_graph.main(argv) == 0
    summary = json.loads((out / "eval_graph.json").read_text())
    (episode,) = summary["results"]
    assert episode["seed"] == 3 and episode["recording"] == str(out / "seed_3.zarr")
    assert summary["overrides"] == ["nodes.safety_filter.params.velocity_scale=0.5"]
    # the episode is committed either way: a success, or a failure 3 sim seconds after the first action
    assert episode["committed"] and Path(episode["recording"]).is_dir()
    assert episode["success"] or episode["duration_s"] >= 3.0
    # the nodes' last statuses, heard over DDS as data: the runner ended the episode the way the dataset records
    runner, safety, recorder = (episode["status"][k] for k in ("policy_runner", "safety_filter", "recorder"))
    assert runner["state"] == ("success" if episode["success"] else "timeout"), runner
    assert runner["steps"] > 0 and runner["chunks"] > 0 and runner["inference_ms_mean"] is not None, runner
    assert {"rebased", "rebased_gripper", "dropped", "waits", "lead"} <= runner.keys()
    assert safety["counters"]["accepted"] > 0, safety  # the runner's commands went through the filter
    assert safety["rejected_total"] == sum(safety["counters"]["rejected"].values())
    assert recorder["last"]["outcome"] == "committed" and recorder["last"]["success"] == episode["success"], recorder
    assert "totals" not in episode and "log_tail" not in episode
    assert "[policy_runner]" in Path(episode["log"]).read_text()  # the launch's output: a log file for humans
    assert summary["successes"] == int(episode["success"])
    assert f"{summary['successes']}/1 episodes succeeded" in capsys.readouterr().out


def test_eval_graph_without_a_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_graph.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_make_policy_needs_every_image_feature_observed_or_provided(tiny_lift_image_checkpoint: Path) -> None:
    from realloop.policies.base import make_policy
    from realloop.robot.nodes.sim_mirror import task_model_env

    env = task_model_env("arm_lift")  # a task model without cameras, as the policy runner keeps
    try:
        spec = {"kind": "checkpoint", "path": str(tiny_lift_image_checkpoint)}
        with pytest.raises(ValueError, match=r"observation.images.wrist.*map a camera topic"):
            make_policy(spec, env.unwrapped)
        agent = make_policy(spec, env.unwrapped, provided={"observation.images.wrist"})
        assert agent.image_shapes() == {"observation.images.wrist": (32, 32, 3)}
        # the runner's inference overrides: fewer actions per chunk, fewer denoising steps; typos refused
        wrist = {"observation.images.wrist"}
        agent = make_policy({**spec, "n_action_steps": 2, "num_inference_steps": 3}, env.unwrapped, provided=wrist)
        assert (agent.policy.n_action_steps, agent.policy.num_inference_steps) == (2, 3)
        typo = r"unknown key 'n_action_step' for the checkpoint policy config \(did you mean 'n_action_steps'\?\)"
        with pytest.raises(ValueError, match=typo):
            make_policy({**spec, "n_action_step": 2}, env.unwrapped, provided=wrist)
        with pytest.raises(ValueError, match=r"n_action_steps=99 must be in \[1, "):
            make_policy({**spec, "n_action_steps": 99}, env.unwrapped, provided=wrist)
    finally:
        env.close()


def test_config_errors_exit_2_with_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["episodes=ten"], "key 'episodes' of the eval config must be an integer, got 'ten'"),
        (["episodes=-3"], "episodes=-3 must be >= 1"),
        (["num_envs=0"], "num_envs=0 must be >= 1"),
        (["episdoes=3"], "unknown key 'episdoes' for the eval config (did you mean 'episodes'?); known: checkpoint, "),
        (["vectorization=threads"], "vectorization='threads' must be one of 'sync', 'async'"),
    ]  # fmt: skip
    for args, message in cases:
        monkeypatch.setattr(sys, "argv", ["realloop-eval", "checkpoint=/nonexistent", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert err.startswith(f"realloop-eval: error: {message}") and err.count("\n") == 1, err
    cfg = compose_config(["obs_map={observation.state: {source: agent_pos}}", "progress=false"])
    assert cfg.obs_map == {"observation.state": {"source": "agent_pos"}} and cfg.progress is False  # open mapping
