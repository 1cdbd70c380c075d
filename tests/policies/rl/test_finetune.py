"""realloop-finetune end to end on a real MuJoCo task: demonstrations from realloop-collect, online episodes on
disk, a checkpoint that realloop-eval runs, bit-identical resume, and bad input refused before learning."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realloop.configs.schema import to_plain
from realloop.data import Dataset
from realloop.policies.agent import PolicyAgent
from realloop.policies.checkpoint import load_policy
from realloop.policies.evaluate import compose_config as eval_config
from realloop.policies.evaluate import evaluate
from realloop.policies.evaluate import run as run_eval
from realloop.policies.rl.finetune import FinetuneError, Finetuner, compose_config, finetune

ENV = "realloop/ArmReach-v0"
TINY = [
    f"env={ENV}", "env_kwargs={max_episode_steps: 20}", "batch_size=16", "algo.utd=2", "algo.num_critics=3",
    "algo.hidden_dims=[16,16]", "learning_starts=20", "log_every=10", "eval.episodes=2", "progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from realloop.sim.collect import collect
    from realloop.sim.collect import compose_config as collect_config

    out = tmp_path_factory.mktemp("demos") / "reach.zarr"
    collect(collect_config(["task=arm_reach", "episodes=2", f"out={out}", "task.env.max_episode_steps=20"]), False)
    return out


@pytest.fixture(scope="module")
def bc_policy(tmp_path_factory: pytest.TempPathFactory, demos: Path) -> Path:
    """A small MLP BC checkpoint (realloop-train) trained on the demonstrations."""
    from realloop.policies.train import compose_config as train_config
    from realloop.policies.train import train

    out = tmp_path_factory.mktemp("bc")
    args = ["policy=bc", "policy.hidden_dims=[32]", f"dataset.path={demos}", "steps=100", "batch_size=4"]
    return Path(train(train_config([*args, "device=cpu", f"out={out}"]), progress=False).checkpoint)


def run(tmp_path: Path, *overrides: str) -> tuple:
    cfg = compose_config([*TINY, f"out={tmp_path}", *overrides])
    return finetune(cfg, progress=False), tmp_path


def assert_same_last_checkpoint(a: Path, b: Path) -> None:
    """The last checkpoints of runs ``a`` and ``b`` hold the same tensors, bit for bit."""
    for name in ("model.safetensors", "training_state.safetensors"):
        ta = load_file(str(a / "checkpoints" / "last" / name))
        tb = load_file(str(b / "checkpoints" / "last" / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert (ta[k] == tb[k]).all(), f"{name}: {k} differs after resume"


def test_a_run_writes_its_outputs_and_its_checkpoint_runs_in_realloop_eval(tmp_path: Path, demos: Path) -> None:
    summary, out = run(tmp_path / "run", f"demos=[{demos}]", "reward=success", "steps=60", "eval.every=40")
    assert summary.env_steps == 60 and summary.episodes == 3 and summary.updates == 60 - 20 + 1
    assert [e["env_steps"] for e in summary.evals] == [40, 60]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["env_steps"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert np.isfinite(float(rows[-1]["critic_loss"])) and float(rows[-1]["temperature"]) > 0
    assert (out / "curves.png").stat().st_size > 1000 and any((out / "tb").iterdir())
    saved = json.loads((out / "finetune_summary.json").read_text())
    assert saved["env_steps"] == 60 and saved["eval"] == summary.eval

    # every online episode is on disk, as the policy's, with what RL needs; success rewards as asked
    with Dataset.open(out / "online.zarr") as ds:
        assert len(ds) == 3
        for ep in ds.episodes():
            assert ep.meta["source"] == "policy"
            n = len(ep.stream("action"))
            assert n == 20 and len(ep.stream("observation.state")) == n + 1  # the final observation
            success = ep.stream("next.success").read()
            np.testing.assert_array_equal(ep.stream("next.reward").read(), success.astype(np.float32))
            assert ep.stream("next.done").read()[-1]

    # the checkpoint is a policy like any other: realloop-eval rebuilds the env (env=auto) and gets the same result
    loaded = load_policy(out)
    assert type(loaded.policy).__name__ == "ActorPolicy" and loaded.meta["step"] == 60
    again = evaluate(loaded.policy, ENV, {"max_episode_steps": 20}, episodes=2, seed=100000, progress=False)
    assert again.mean_return == pytest.approx(summary.eval["return_mean"], rel=1e-5)
    result, _ = run_eval(eval_config([f"checkpoint={out}", "env=auto", "episodes=2", "progress=false"]))
    assert result.env == ENV and result.mean_return == pytest.approx(again.mean_return, rel=1e-5)


def test_resume_continues_bit_identically(tmp_path: Path, demos: Path) -> None:
    common = [f"demos=[{demos}]", "eval.every=0", "checkpoint_every=20", "seed=3"]
    _, a = run(tmp_path / "a", *common, "steps=60")
    run(tmp_path / "b", *common, "steps=40")
    resumed, b = run(tmp_path / "b", *common, "steps=60", "resume=true")
    assert resumed.start_env_steps == 40 and resumed.env_steps == 60
    assert_same_last_checkpoint(a, b)
    rows = [int(r["env_steps"]) for r in csv.DictReader((b / "metrics.csv").open())]
    assert rows == sorted(set(rows))  # no duplicate rows after the resume


def test_sigterm_checkpoints_the_current_step_and_resume_continues(tmp_path: Path) -> None:
    out, common = tmp_path / "run", ["algo=sac", "eval.every=0", "checkpoint_every=100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "realloop.policies.rl.finetune", *TINY, *common, "steps=100000", f"out={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics, deadline = out / "metrics.csv", time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # learning has logged a few rows
        if metrics.exists() and len(metrics.read_text().splitlines()) > 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)  # a scheduler's stop: checkpoint this step, as Ctrl-C does
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    saved = json.loads((out / "finetune_summary.json").read_text())
    assert saved["interrupted"] and saved["env_steps"] >= 30
    ckpt = Path(saved["checkpoint"])
    assert ckpt.name == f"step_{saved['env_steps']:08d}" and (out / "checkpoints" / "last").resolve() == ckpt
    assert str(ckpt) in stdout
    resumed, _ = run(out, *common, f"steps={saved['env_steps'] + 10}", "resume=true")
    assert resumed.start_env_steps == saved["env_steps"] and resumed.env_steps == saved["env_steps"] + 10


def test_bad_input_is_refused_before_learning(tmp_path: Path, demos: Path) -> None:
    with pytest.raises(FinetuneError, match=r"environment_state.*has shape"):
        run(tmp_path / "x", f"demos=[{demos}]", "env=realloop/ArmLift-v0", "steps=10")
    with pytest.raises(FinetuneError, match="obs_keys"):
        run(tmp_path / "y", "obs_keys=[observation.nothing]", "steps=10")
    with pytest.raises(FinetuneError, match="no checkpoint"):
        run(tmp_path / "z", "resume=true", "steps=10")
    with pytest.raises(FinetuneError, match=r"missing\.zarr does not exist; fix the path"):
        run(tmp_path / "w", f"demos=[{tmp_path / 'missing.zarr'}]", "steps=10")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(FinetuneError, match="neither a realloop-finetune nor a realloop-train checkpoint"):
        run(tmp_path / "v", f"init={other}", "steps=10")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "realloop.policies.rl.finetune", "algo.num_critic=3", f"out={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realloop-finetune: error:") and "num_critic" in lines[0]


def test_held_action_dims_stay_at_their_values_and_the_checkpoint_fills_them(tmp_path: Path, demos: Path) -> None:
    hold = "hold_actions={ee.droll: 0, ee.dpitch: 0.02}"
    summary, out = run(tmp_path / "h", f"demos=[{demos}]", hold, "steps=40", "eval.every=0", "random_steps=20")
    assert summary.env_steps == 40
    with Dataset.open(out / "online.zarr") as ds:  # the env got full actions: held dims fixed, the others free
        actions = np.concatenate([ep.stream("action").read() for ep in ds.episodes()])
    np.testing.assert_array_equal(actions[:, 3], 0.0)
    np.testing.assert_allclose(actions[:, 4], 0.02, rtol=1e-6)
    assert np.std(actions[:, [0, 1, 2, 5, 6]], axis=0).min() > 0
    policy = load_policy(out).policy
    assert policy.actor.mean.out_features == 5
    obs = {k: torch.zeros(3, 1, *policy.obs_shapes[k]) for k in policy.obs_keys}
    with torch.no_grad():
        chunk = policy.sample_actions(obs)
    assert chunk.shape == (3, 1, 7)
    np.testing.assert_array_equal(chunk[:, 0, 3].numpy(), 0.0)
    np.testing.assert_allclose(chunk[:, 0, 4].numpy(), 0.02, rtol=1e-6)

    with pytest.raises(FinetuneError, match=r"'ee\.dyawn' is no action dim; use names \['ee\.dx'"):
        run(tmp_path / "a", "hold_actions={ee.dyawn: 0}", "steps=10")
    with pytest.raises(FinetuneError, match="outside the action bounds"):
        run(tmp_path / "b", "hold_actions={ee.droll: 5}", "steps=10")
    with pytest.raises(FinetuneError, match=r"move held action dim 0 .* drop it from hold_actions"):
        run(tmp_path / "c", f"demos=[{demos}]", "hold_actions={ee.dx: 0}", "steps=10")


def test_action_chunks_run_open_loop_and_the_checkpoint_acts_in_the_learners_chunks(
    tmp_path: Path, demos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config([*TINY, f"out={tmp_path}", f"demos=[{demos}]", "algo.action_chunk=3",
                          "hold_actions={ee.droll: 0}", "steps=40", "eval.every=0"])  # fmt: skip
    ft = Finetuner(to_plain(cfg), progress=False)
    calls = []
    act = ft.learner.act
    monkeypatch.setattr(ft.learner, "act", lambda obs, explore: calls.append(explore) or act(obs, explore))
    summary = ft.run()
    # two 20-step episodes, a new chunk of 3 every 3 steps and at each episode start: 7 chunks per episode
    assert summary.episodes == 2 and len(calls) == 14 and all(calls)
    policy = load_policy(tmp_path).policy
    assert policy.horizon == policy.n_action_steps == 3
    obs = {k: torch.randn(4, 1, *policy.obs_shapes[k]) for k in policy.obs_keys}
    with torch.no_grad():
        chunk = policy.sample_actions(obs).numpy()
    learner_chunk = act({k: v[:, 0].numpy() for k, v in obs.items()}, False)  # (4, 3, 6): the free dims
    assert chunk.shape == (4, 3, 7)
    np.testing.assert_allclose(np.delete(chunk, 3, axis=2), learner_chunk, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(chunk[..., 3], 0.0)


def test_a_grasp_critic_sets_the_gripper_open_or_closed_and_the_checkpoint_chooses_as_the_learner(
    tmp_path: Path, demos: Path
) -> None:
    cfg = compose_config([*TINY, f"out={tmp_path / 'g'}", f"demos=[{demos}]", "grasp_action=gripper",
                          "hold_actions={ee.droll: 0}", "steps=40", "eval.every=0", "random_steps=20"])  # fmt: skip
    ft = Finetuner(to_plain(cfg), progress=False)
    summary = ft.run()
    assert summary.env_steps == 40
    with Dataset.open(tmp_path / "g" / "online.zarr") as ds:  # random steps and the learner's alike
        gripper = np.concatenate([ep.stream("action").read()[:, 6] for ep in ds.episodes()])
    assert sorted(np.unique(gripper)) == pytest.approx([0.0, 0.04])
    row = list(csv.DictReader((tmp_path / "g" / "metrics.csv").open()))[-1]
    assert np.isfinite(float(row["grasp_loss"])) and np.isfinite(float(row["grasp_q"]))

    policy = load_policy(tmp_path / "g").policy
    assert policy.actor.mean.out_features == 5  # 7 dims less the held roll and the gripper
    obs = {k: torch.randn(64, 1, *policy.obs_shapes[k]) for k in policy.obs_keys}
    with torch.no_grad():
        chunk = policy.sample_actions(obs).numpy()[:, 0]
    learner = ft.learner.act({k: v[:, 0].numpy() for k, v in obs.items()}, False)  # the 6 free dims
    np.testing.assert_allclose(np.delete(chunk, 3, axis=1), learner, rtol=1e-5, atol=1e-6)
    assert set(np.unique(chunk[:, 6])) <= {0.0, np.float32(0.04)}

    with pytest.raises(FinetuneError, match=r"grasp_action: ee\.droll is held"):
        run(tmp_path / "a", "grasp_action=ee.droll", "hold_actions={ee.droll: 0}", "steps=10")
    with pytest.raises(FinetuneError, match="grasp_action: 'claw' is no action dim"):
        run(tmp_path / "b", "grasp_action=claw", "steps=10")
    with pytest.raises(FinetuneError, match="action_chunk=1"):
        run(tmp_path / "c", "grasp_action=6", "algo.action_chunk=2", "steps=10")


def test_offline_pretraining_then_online_with_cal_ql(tmp_path: Path, demos: Path) -> None:
    summary, out = run(tmp_path / "c", f"demos=[{demos}]", "algo=calql", "algo.cql_actions=2", "offline_updates=30",
                       "learning_starts=0", "steps=20", "eval.every=0")  # fmt: skip
    assert [e["env_steps"] for e in summary.evals] == [0, 20]  # the offline result, then the end
    assert summary.updates == 30 + 20
    assert (out / "checkpoints" / "step_00000000" / "model.safetensors").exists()
    row = next(csv.DictReader((out / "metrics.csv").open()))
    assert summary.algo == "calql" and np.isfinite(float(row["q"])) and np.isfinite(float(row["cql_penalty"]))
    with pytest.raises(FinetuneError, match="offline_updates pretrains on demonstrations"):
        run(tmp_path / "d", "offline_updates=10", "steps=10")


def test_a_bc_regularised_run_logs_how_much_it_clones(tmp_path: Path, demos: Path) -> None:
    _, out = run(tmp_path / "bc", f"demos=[{demos}]", "algo.bc_weight=1", "algo.bc_q_filter=true", "steps=40",
                 "eval.every=0")  # fmt: skip
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[0].keys() >= {"bc_loss", "bc_cloned"} and rows[0]["bc_cloned"] == "nan"  # before learning starts
    assert np.isfinite(float(rows[-1]["bc_loss"])) and 0.0 <= float(rows[-1]["bc_cloned"]) <= 1.0
    assert float(rows[-1]["bc_rows"]) == 0.5  # the offline half of each batch (no successes cloned)


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path: Path, demos: Path) -> None:
    common = [f"demos=[{demos}]", "eval.every=0", "checkpoint_every=20"]
    run(tmp_path / "r", *common, "steps=20")
    config_path = tmp_path / "r" / "checkpoints" / "last" / "config.json"
    config = json.loads(config_path.read_text())
    del config["algo"]["cql_weight"], config["algo"]["action_chunk"]  # as an older realloop wrote it
    config_path.write_text(json.dumps(config))
    resumed, _ = run(tmp_path / "r", *common, "steps=40", "resume=true")
    assert resumed.env_steps == 40
    with pytest.raises(FinetuneError, match=r"resume: algo=.* differs from the run's"):
        run(tmp_path / "r", *common, "steps=60", "resume=true", "algo.cql_weight=1")


def test_an_imitation_policy_acts_first_then_the_actor_is_distilled_from_it(
    tmp_path: Path, demos: Path, bc_policy: Path
) -> None:
    # no RL update (learning_starts beyond the run): the final actor is the distilled one
    summary, out = run(tmp_path / "w", f"demos=[{demos}]", f"init={bc_policy}", "imitation.steps=40",
                       "imitation.updates=1000", "steps=60", "learning_starts=1000", "eval.every=0")  # fmt: skip
    im = summary.imitation
    assert im is not None and im["env_steps"] == 40 and im["episodes"] == 2 and im["updates"] == 1000
    assert im["clone_loss_last"] < im["clone_loss_first"] / 2
    assert [e["env_steps"] for e in summary.evals] == [40, 60]  # the distilled actor's result, then the end
    assert "imitation policy for 40 steps" in summary.line()

    bc = load_policy(bc_policy).policy
    actor = load_policy(out).policy
    untrained = Finetuner(
        to_plain(compose_config([*TINY, f"out={tmp_path / 'new'}", "steps=60"])), False
    ).actor_policy()
    with Dataset.open(out / "online.zarr") as ds:
        episodes = list(ds.episodes())
    assert len(episodes) == 3
    low, high = actor.action_low.numpy(), actor.action_high.numpy()
    for ep in episodes[:2]:  # the imitation policy's: replayed step by step, it does exactly what the env got
        done = ep.stream("action").read()
        obs = {k: ep.stream(k).read()[: len(done)] for k in bc.obs_keys}
        agent = PolicyAgent(bc, num_envs=1)
        acted = np.stack([agent.step({k: v[t : t + 1] for k, v in obs.items()})[0] for t in range(len(done))])
        np.testing.assert_allclose(done, np.clip(acted, low, high), rtol=1e-5, atol=1e-6)
        # the distilled actor acts as the imitation policy did on its states; an untrained one does not
        states = {k: torch.from_numpy(ep.stream(k).read()[: len(done), None]) for k in actor.obs_keys}
        with torch.no_grad():
            ours, base = (p.sample_actions(states)[:, 0].numpy() for p in (actor, untrained))
        assert np.abs(ours - done).mean() < 0.4 * np.abs(base - done).mean()

    with pytest.raises(
        FinetuneError, match=r"learnt from realloop/ArmReach-v0 data .* this run acts in realloop/ArmLift"
    ):
        run(tmp_path / "x", f"init={bc_policy}", "env=realloop/ArmLift-v0", "steps=100")
    with pytest.raises(FinetuneError, match=r"imitation.steps=60 is not below steps=60"):
        run(tmp_path / "y", f"init={bc_policy}", "imitation.steps=60", "steps=60")


def test_with_a_grasp_critic_the_imitation_policy_s_gripper_is_snapped_and_distilled(
    tmp_path: Path, demos: Path, bc_policy: Path
) -> None:
    summary, out = run(tmp_path / "g", f"demos=[{demos}]", f"init={bc_policy}", "grasp_action=gripper",
                       "imitation.steps=40", "imitation.updates=300", "steps=60", "learning_starts=1000",
                       "eval.every=0")  # fmt: skip
    assert summary.imitation is not None and summary.imitation["updates"] == 300
    with Dataset.open(out / "online.zarr") as ds:
        episodes = list(ds.episodes())
    done = np.concatenate([ep.stream("action").read() for ep in episodes[:2]])  # the imitation policy's steps
    assert sorted(np.unique(done[:, 6])) == pytest.approx([0.0, 0.04])  # open or closed, never in between
    actor = load_policy(out).policy
    states = {k: torch.from_numpy(np.concatenate([ep.stream(k).read()[:-1] for ep in episodes[:2]])[:, None])
              for k in actor.obs_keys}  # fmt: skip
    with torch.no_grad():
        chosen = actor.sample_actions(states)[:, 0, 6].numpy()
    assert (chosen == done[:, 6]).mean() >= 0.9  # the grasp critic was distilled from the gripper's states


def test_a_run_resumed_inside_the_imitation_phase_continues_bit_identically(
    tmp_path: Path, demos: Path, bc_policy: Path
) -> None:
    common = [f"demos=[{demos}]", f"init={bc_policy}", "imitation.steps=50", "imitation.updates=20", "eval.every=0",
              "checkpoint_every=20", "learning_starts=20", "seed=3"]  # fmt: skip
    _, a = run(tmp_path / "a", *common, "steps=60")
    # the same run stopped at 40 env steps (inside the imitation phase), as an interrupted one would be
    b = tmp_path / "b"
    ft = Finetuner(to_plain(compose_config([*TINY, f"out={b}", *common, "steps=60"])), progress=False)
    ft.c["steps"] = 40
    assert ft.run().imitation is None
    resumed = finetune(compose_config([*TINY, f"out={b}", *[c for c in common if not c.startswith("init=")],
                                       "steps=60", "resume=true"]), progress=False)  # fmt: skip
    assert resumed.start_env_steps == 40 and resumed.imitation is not None and resumed.imitation["env_steps"] == 50
    assert_same_last_checkpoint(a, b)


@pytest.fixture(scope="module")
def diffusion_policy(tmp_path_factory: pytest.TempPathFactory, demos: Path) -> Path:
    """A small diffusion checkpoint (realloop-train) trained on the reach demonstrations."""
    from realloop.policies.train import compose_config as train_config
    from realloop.policies.train import train

    out = tmp_path_factory.mktemp("diffusion")
    args = ["policy=diffusion", "policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16",
            "policy.num_inference_steps=4", f"dataset.path={demos}", "steps=30", "batch_size=8",
            "val_every=0"]  # fmt: skip
    return Path(train(train_config([*args, "device=cpu", f"out={out}"]), progress=False).checkpoint)


def test_noise_steering_learns_in_chunks_and_its_checkpoint_is_the_frozen_policy_with_its_actor(
    tmp_path: Path, diffusion_policy: Path
) -> None:
    base = load_policy(diffusion_policy).policy
    steer = ["algo=noise", f"init={diffusion_policy}", "algo.num_critics=2", "learning_starts=4", "eval.every=0"]
    summary, out = run(tmp_path / "n", *steer, "steps=9", "seed=1")
    # an episode of 20 steps is 3 chunks of the policy's 8 (the last cut to 4): 9 learner steps, 3 episodes
    assert summary.env_steps == 9 and summary.episodes == 3 and summary.actions_executed == 60
    assert "9 chunks (to 9; 60 env steps in all)" in summary.line()
    with Dataset.open(out / "online.zarr") as ds:  # what the learner saw: one noise vector per chunk
        ep = next(ds.episodes())
        assert ep.stream("action").read().shape == (3, base.horizon * base.action_dim)

    loaded = load_policy(out)
    policy = loaded.policy
    assert type(policy).__name__ == "NoiseSteeredPolicy"
    frozen = base.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in policy.base.state_dict().items())  # the base did not change
    # it acts in the env's own action space, as realloop-eval runs it; the result is the run's final evaluation
    again = evaluate(policy, ENV, {"max_episode_steps": 20}, episodes=2, seed=100000, progress=False)
    assert again.mean_return == pytest.approx(summary.eval["return_mean"], rel=1e-5)
    result, _ = run_eval(eval_config([f"checkpoint={out}", "env=auto", "episodes=2", "progress=false"]))
    assert result.mean_return == pytest.approx(again.mean_return, rel=1e-5)

    # resumed, the run continues bit-identically (the frozen policy comes back from the run's own checkpoint)
    run(tmp_path / "a", *steer, "steps=12", "checkpoint_every=3")
    run(tmp_path / "b", *steer, "steps=6", "checkpoint_every=3")
    resumed, _ = run(tmp_path / "b", *[s for s in steer if not s.startswith("init=")], "steps=12",
                     "checkpoint_every=3", "resume=true")  # fmt: skip
    assert resumed.start_env_steps == 6 and resumed.actions_executed == 80
    assert_same_last_checkpoint(tmp_path / "a", tmp_path / "b")


def test_noise_steering_refuses_what_it_cannot_steer(
    tmp_path: Path, demos: Path, bc_policy: Path, diffusion_policy: Path
) -> None:
    with pytest.raises(FinetuneError, match="algo=noise works on a pretrained policy: give init="):
        run(tmp_path / "a", "algo=noise", "steps=10")
    with pytest.raises(FinetuneError, match="holds a MLPPolicy; algo=noise steers the noise of a diffusion policy"):
        run(tmp_path / "b", "algo=noise", f"init={bc_policy}", "steps=10")
    with pytest.raises(FinetuneError, match="demonstrations hold actions, not noise"):
        run(tmp_path / "c", "algo=noise", f"init={diffusion_policy}", f"demos=[{demos}]", "steps=10")
    with pytest.raises(FinetuneError, match=r"drop hold_actions, grasp_action and algo\.action_chunk"):
        run(tmp_path / "d", "algo=noise", f"init={diffusion_policy}", "algo.action_chunk=2", "steps=10")
    other_task = r"learnt from realloop/ArmReach-v0 data .* this run acts in realloop/ArmLift"
    with pytest.raises(FinetuneError, match=other_task):
        run(tmp_path / "e", "algo=noise", f"init={diffusion_policy}", "env=realloop/ArmLift-v0", "steps=10")


def test_noise_steering_acts_in_the_env_of_the_policys_data_unless_told_otherwise(
    tmp_path: Path, diffusion_policy: Path
) -> None:
    """The demonstrations were recorded with 20-step episodes (task.env.max_episode_steps=20): without env_kwargs
    the steering run takes that env, as realloop-eval env=auto does; given env_kwargs win."""
    steer = ["algo=noise", f"init={diffusion_policy}", "learning_starts=100", "eval.every=0", "eval.episodes=1"]
    _, out = run(tmp_path / "auto", *steer, "env_kwargs=null", "steps=3")
    env = json.loads((out / "checkpoints" / "last" / "policy.json").read_text())["env"]
    assert env["kwargs"]["max_episode_steps"] == 20 and "control_mode" in env["kwargs"]
    with Dataset.open(out / "online.zarr") as ds:  # 3 chunks: 8 + 8 + 4 steps, one 20-step episode
        assert len(ds) == 1
    _, out = run(tmp_path / "given", *steer, "env_kwargs={max_episode_steps: 12}", "steps=2")
    env = json.loads((out / "checkpoints" / "last" / "policy.json").read_text())["env"]
    assert env["kwargs"] == {"max_episode_steps": 12}


def test_residual_rl_starts_as_the_frozen_policy_and_grows_its_correction(
    tmp_path: Path, diffusion_policy: Path
) -> None:
    base = load_policy(diffusion_policy).policy
    residual = ["algo=residual", f"init={diffusion_policy}", "algo.num_critics=2", "eval.every=0",
                "algo.residual_warmup=40", "seed=1"]  # fmt: skip
    # before any update the fine-tuned policy is the frozen one, exactly: its actor's mean starts at zero
    summary, out = run(tmp_path / "zero", *residual, "learning_starts=1000", "steps=20")
    assert summary.updates == 0 and summary.actions_executed is None
    frozen = evaluate(base, ENV, {"max_episode_steps": 20}, episodes=2, seed=100000, progress=False)
    assert summary.eval["return_mean"] == frozen.mean_return

    summary, out = run(tmp_path / "r", *residual, "learning_starts=16", "steps=60")
    assert summary.env_steps == 60 and summary.episodes == 3 and summary.updates == 60 - 16 + 1
    with Dataset.open(out / "online.zarr") as ds:  # the correction's scale grew from 0 over the first 40 steps
        ep = next(ds.episodes())
        actions = ep.stream("action").read()
        assert actions.shape == (20, base.action_dim)  # and the base actions with the episode's 21 observations
        assert ep.stream("observation.base_action").read().shape == (21, base.action_dim)
    assert not actions[0].any() and np.abs(actions[1:]).max() > 0
    assert (np.abs(actions) <= np.arange(20)[:, None] / 40 + 1e-6).all()

    policy = load_policy(out).policy
    assert type(policy).__name__ == "ResidualPolicy" and policy.scale == pytest.approx(0.1)
    frozen_weights = base.state_dict()
    assert all(torch.equal(v, frozen_weights[k]) for k, v in policy.base.state_dict().items())
    again = evaluate(policy, ENV, {"max_episode_steps": 20}, episodes=2, seed=100000, progress=False)
    assert again.mean_return == pytest.approx(summary.eval["return_mean"], rel=1e-5)
    assert again.mean_return != frozen.mean_return  # the correction acts
    result, _ = run_eval(eval_config([f"checkpoint={out}", "env=auto", "episodes=2", "progress=false"]))
    assert result.mean_return == pytest.approx(again.mean_return, rel=1e-5)


def test_residual_rl_resumes_bit_identically(tmp_path: Path, diffusion_policy: Path) -> None:
    residual = ["algo=residual", f"init={diffusion_policy}", "algo.num_critics=2", "eval.every=0",
                "algo.residual_warmup=30", "learning_starts=10", "checkpoint_every=20"]  # fmt: skip
    run(tmp_path / "a", *residual, "steps=40")
    run(tmp_path / "b", *residual, "steps=20")
    resumed, _ = run(tmp_path / "b", *[s for s in residual if not s.startswith("init=")], "steps=40", "resume=true")
    assert resumed.start_env_steps == 20
    assert_same_last_checkpoint(tmp_path / "a", tmp_path / "b")


def test_residual_rl_corrects_any_realloop_train_policy_and_refuses_the_rest(
    tmp_path: Path, demos: Path, bc_policy: Path, diffusion_policy: Path
) -> None:
    _, out = run(tmp_path / "bc", "algo=residual", f"init={bc_policy}", "learning_starts=100", "steps=3")
    assert type(load_policy(out).policy.base).__name__ == "MLPPolicy"
    with pytest.raises(FinetuneError, match="algo=residual works on a pretrained policy: give init="):
        run(tmp_path / "a", "algo=residual", "steps=10")
    with pytest.raises(FinetuneError, match="is a realloop-finetune checkpoint; algo=residual works on a realloop-"):
        run(tmp_path / "b", "algo=residual", f"init={out}", "steps=10")
    with pytest.raises(FinetuneError, match="not noise or corrections; drop demos="):
        run(tmp_path / "c", "algo=residual", f"init={diffusion_policy}", f"demos=[{demos}]", "steps=10")
    with pytest.raises(FinetuneError, match=r"algo=residual works on the frozen policy's chunks: drop hold_actions"):
        run(tmp_path / "d", "algo=residual", f"init={diffusion_policy}", "grasp_action=gripper", "steps=10")


def test_residual_rl_and_noise_steering_work_on_an_image_diffusion_policy(tmp_path: Path) -> None:
    """An image diffusion policy (wrist camera at 32x32 + state) steered and corrected in the env its data came
    from: the env renders the camera, the learner sees it, and each checkpoint runs in realloop-eval."""
    from realloop.policies.train import compose_config as train_config
    from realloop.policies.train import train
    from realloop.sim.collect import collect
    from realloop.sim.collect import compose_config as collect_config

    data = tmp_path / "lift_img.zarr"
    collect(collect_config(["task=arm_lift", "episodes=2", f"out={data}", "images=true", "image_size=[32,32]",
                            "task.env.max_episode_steps=16"]), progress=False)  # fmt: skip
    policy = Path(train(train_config([
        "policy=diffusion_image", f"dataset.path={data}", f"out={tmp_path / 'img'}", "steps=2", "batch_size=4",
        "val_every=0", "checkpoint_every=2", "device=cpu", "policy.down_dims=[16,32]", "policy.crop=[28,28]",
        "policy.num_inference_steps=2",
        "policy.obs_keys=[observation.state,observation.environment_state,observation.images.wrist]",
    ]), progress=False).checkpoint)  # fmt: skip
    common = [f"init={policy}", "env=realloop/ArmLift-v0", "env_kwargs=null", "algo.num_critics=2", "eval.every=0",
              "algo.image_feature_dim=8", "batch_size=8", "learning_starts=2"]  # fmt: skip
    for algo, steps in (("residual", 16), ("noise", 10)):
        summary, out = run(tmp_path / algo, f"algo={algo}", *common, f"steps={steps}")
        assert summary.updates > 0 and summary.env_steps == steps
        with Dataset.open(out / "online.zarr") as ds:  # the learner saw the camera
            assert "observation.images.wrist" in ds.features
        result, _ = run_eval(eval_config([f"checkpoint={out}", "env=auto", "episodes=2", "progress=false"]))
        assert result.mean_return == pytest.approx(summary.eval["return_mean"], rel=1e-5)
