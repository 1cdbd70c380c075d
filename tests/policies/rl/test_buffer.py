"""The replay buffer: transitions as recorded step by step, terminal and truncated discounts, n-step returns and
action chunks by hand, ratio sampling, the ring, online episodes on disk across a killed run, clear errors for
missing fields, and adding and sampling from two threads at once.

The datasets encode each step in its values: the state is ``[episode, step]``, the action ``[episode, step]``, the
reward ``10 * episode + step`` and every camera frame the constant ``10 * episode + step``; so every sampled
transition can be checked against what was written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from realloop.data import Dataset
from realloop.data.verify import verify
from realloop.policies.rl.buffer import MissingFieldError, ReplayBuffer

STATE, CAM = "observation.state", "observation.images.cam"
NEXT = {
    "next.reward": {"dtype": "float32", "shape": []},
    "next.success": {"dtype": "bool", "shape": []},
    "next.done": {"dtype": "bool", "shape": []},
    "next.terminated": {"dtype": "bool", "shape": []},
}
FEATURES = {
    STATE: {"dtype": "float32", "shape": [2], "names": ["episode", "step"]},
    CAM: {"shape": [8, 8, 3], "image_format": "png"},
    "action": {"dtype": "float32", "shape": [2], "rate_hz": 10},
    **NEXT,
}
GAMMA = 0.5


def reward_of(e: float, k: float) -> float:
    return 10.0 * e + k


def frame(e: int, k: int) -> np.ndarray:
    return np.full((8, 8, 3), 10 * e + k, dtype=np.uint8)


def write_dataset(
    path: Path,
    episodes: Sequence[tuple[int, bool]],  # (steps, terminated)
    final: bool = True,
    fields: Sequence[str] = tuple(NEXT),
) -> Path:
    """One episode per entry; ``final=False`` writes no final observation, ``fields`` the next.* streams kept."""
    features = {k: v for k, v in FEATURES.items() if not k.startswith("next.") or k in fields}
    with Dataset.create(path, features, durable=False) as ds:
        for e, (n, terminated) in enumerate(episodes):
            t = np.arange(n + 1) * 0.1
            m = n + 1 if final else n
            flags = np.arange(n) == n - 1
            with ds.begin_episode(source="sim") as w:
                w.extend(STATE, t[:m], np.array([[e, k] for k in range(m)], dtype=np.float32))
                w.extend(CAM, t[:m], np.stack([frame(e, k) for k in range(m)]))
                w.extend("action", t[:n], np.array([[e, k] for k in range(n)], dtype=np.float32))
                values = {
                    "next.reward": [reward_of(e, k) for k in range(n)],
                    "next.success": flags & terminated,
                    "next.done": flags,
                    "next.terminated": flags & terminated,
                }
                for name in fields:
                    w.extend(name, t[:n], np.asarray(values[name]))
                w.commit(success=terminated)
    return path


EPISODES = [(4, True), (3, False), (5, True)]


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("buffer") / "demos.zarr", EPISODES)


def steps_of(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(episode, step) of each transition's observation and next observation."""
    s, ns = batch["observation"][STATE].numpy(), batch["next_observation"][STATE].numpy()
    return s[:, 0].astype(int), s[:, 1].astype(int), ns[:, 0].astype(int), ns[:, 1].astype(int)


def test_offline_transitions_are_the_recorded_steps(demos: Path) -> None:
    buf = ReplayBuffer([STATE, CAM], [demos], gamma=GAMMA, image_size=(4, 4))
    assert buf.offline_steps == len(buf) == sum(n for n, _ in EPISODES)
    batch = buf.sample(400, np.random.default_rng(0))
    e, k, ne, nk = steps_of(batch)
    assert {(a, b) for a, b in zip(e, k, strict=True)} == {
        (i, j) for i, (n, _) in enumerate(EPISODES) for j in range(n)
    }
    np.testing.assert_array_equal(ne, e)
    np.testing.assert_array_equal(nk, k + 1)  # the last step's next observation is the final one
    np.testing.assert_array_equal(batch["action"].numpy(), np.stack([e, k], 1))
    np.testing.assert_allclose(batch["reward"].numpy(), reward_of(e, k))
    n = np.array([EPISODES[i][0] for i in e])
    terminal = np.array([EPISODES[i][1] for i in e]) & (k == n - 1)
    np.testing.assert_allclose(batch["discount"].numpy(), np.where(terminal, 0.0, GAMMA))
    assert not batch["online"].any()
    np.testing.assert_array_equal(batch["succeeded"].numpy(), [EPISODES[i][1] for i in e])  # the episode's success
    # images: (B, C, H, W) uint8 at image_size, the frames of the step and of the next step
    img, next_img = batch["observation"][CAM], batch["next_observation"][CAM]
    assert img.dtype == torch.uint8 and img.shape == (400, 3, 4, 4)
    np.testing.assert_array_equal(img.numpy()[:, 0, 0, 0], 10 * e + k)
    np.testing.assert_array_equal(next_img.numpy()[:, 2, 3, 3], 10 * e + k + 1)
    assert batch["observation"][STATE].dtype == torch.float32 and batch["action"].shape == (400, 2)
    # Monte Carlo returns to the episode's end
    expected = [
        sum(GAMMA**m * reward_of(i, j + m) for m in range(EPISODES[i][0] - j)) for i, j in zip(e, k, strict=True)
    ]
    np.testing.assert_allclose(batch["mc_return"].numpy(), expected, rtol=1e-6)
    # stored HWC: the same batch
    hwc = ReplayBuffer([CAM], [demos], image_size=(4, 4), image_layout="hwc").sample(8, np.random.default_rng(1))
    assert hwc["observation"][CAM].shape == (8, 3, 4, 4)


def test_n_step_returns_by_hand(demos: Path) -> None:
    buf = ReplayBuffer([STATE], [demos], gamma=GAMMA, n_step=3)
    batch = buf.sample(400, np.random.default_rng(0))
    r = reward_of
    g = GAMMA
    # (episode, step) -> (reward, discount, next step): episode 0 (4 steps) and 2 (5 steps) end terminated, 1 (3)
    # truncated
    table = {
        (0, 0): (r(0, 0) + g * r(0, 1) + g**2 * r(0, 2), g**3, 3),
        (0, 1): (r(0, 1) + g * r(0, 2) + g**2 * r(0, 3), 0.0, 4),
        (0, 2): (r(0, 2) + g * r(0, 3), 0.0, 4),
        (0, 3): (r(0, 3), 0.0, 4),
        (1, 0): (r(1, 0) + g * r(1, 1) + g**2 * r(1, 2), g**3, 3),
        (1, 1): (r(1, 1) + g * r(1, 2), g**2, 3),  # truncated: bootstrap from the final observation
        (1, 2): (r(1, 2), g, 3),
        (2, 2): (r(2, 2) + g * r(2, 3) + g**2 * r(2, 4), 0.0, 5),
        (2, 3): (r(2, 3) + g * r(2, 4), 0.0, 5),
    }
    seen = set()
    for i, (e, k, ne, nk) in enumerate(zip(*steps_of(batch), strict=True)):
        assert ne == e
        if (e, k) in table:
            reward, discount, nxt = table[(e, k)]
            assert batch["reward"][i].item() == pytest.approx(reward)
            assert batch["discount"][i].item() == pytest.approx(discount)
            assert nk == nxt
            seen.add((e, k))
    assert seen == set(table)


def test_action_chunks_repeat_the_last_action_past_the_end(demos: Path) -> None:
    buf = ReplayBuffer([STATE], [demos], gamma=GAMMA, action_chunk=3)
    batch = buf.sample(400, np.random.default_rng(0))
    assert batch["action"].shape == (400, 3, 2) and batch["action_is_pad"].shape == (400, 3)
    for i, (e, k, _ne, nk) in enumerate(zip(*steps_of(batch), strict=True)):
        n, terminated = EPISODES[e]
        span = min(3, n - k)
        chunk = [[e, min(k + m, n - 1)] for m in range(3)]  # the episode's last action repeated
        np.testing.assert_array_equal(batch["action"][i].numpy(), chunk)
        assert batch["action_is_pad"][i].tolist() == [m >= span for m in range(3)]
        assert nk == k + span  # the next observation is H steps ahead, or the final one
        assert batch["reward"][i].item() == pytest.approx(sum(GAMMA**m * reward_of(e, k + m) for m in range(span)))
        ended_terminal = terminated and k + span == n
        assert batch["discount"][i].item() == pytest.approx(0.0 if ended_terminal else GAMMA**span)
    with pytest.raises(ValueError, match="n_step must be 1 or it"):
        ReplayBuffer([STATE], [demos], action_chunk=3, n_step=2)


def test_collected_episodes_give_the_recorded_transitions(tmp_path: Path) -> None:
    from realloop.sim.collect import collect, compose_config

    out = tmp_path / "reach.zarr"
    collect(compose_config(["task=arm_reach", "episodes=2", f"out={out}", "task.env.max_episode_steps=6"]), False)
    collect(compose_config(["task=arm_reach", "episodes=1", f"out={tmp_path / 'r2.zarr'}", "seed=5"]), False)
    keys = [STATE, "observation.environment_state"]
    buf = ReplayBuffer(keys, [out, tmp_path / "r2.zarr"], gamma=0.9)
    with Dataset.open(out) as a, Dataset.open(tmp_path / "r2.zarr") as b:
        eps = [*a.episodes(), *b.episodes()]
        assert buf.offline_steps == sum(len(ep.stream("action")) for ep in eps)

        def key(state: np.ndarray, env_state: np.ndarray) -> tuple:
            return (*state.tolist(), *env_state.tolist())

        rows = {
            key(ep.stream(STATE).read()[k], ep.stream(keys[1]).read()[k]): (ep, k)
            for ep in eps
            for k in range(len(ep.stream("action")))
        }
        assert eps[0].meta["success"] is False and eps[2].meta["success"] is True  # truncated, terminated
        batch = buf.sample(300, np.random.default_rng(0))
        for i in range(300):
            ep, k = rows[key(batch["observation"][STATE][i].numpy(), batch["observation"][keys[1]][i].numpy())]
            state = ep.stream(STATE).read()
            np.testing.assert_array_equal(batch["next_observation"][STATE][i].numpy(), state[k + 1])  # final at the end
            np.testing.assert_array_equal(batch["action"][i].numpy(), ep.stream("action").read()[k])
            assert batch["reward"][i].item() == pytest.approx(float(ep.stream("next.reward").read()[k]))
            terminal = bool(ep.stream("next.terminated").read()[k])
            assert batch["discount"][i].item() == pytest.approx(0.0 if terminal else 0.9)


def test_missing_fields_are_one_line_errors_naming_the_fix(tmp_path: Path) -> None:
    old = write_dataset(tmp_path / "old.zarr", [(4, True), (3, False)], final=False, fields=["next.success"])
    cases = [
        ({}, f"episode 0 of dataset {old} has no stream 'next.reward'; collect the data again with realloop-collect "
             "(which writes it), or pass rewards='success' (1.0 where next.success)"),
        ({"rewards": "success"}, f"episode 0 of dataset {old} has no stream 'next.terminated'; collect the data again "
                                 "with realloop-collect (which writes it), or pass terminals='success'"),
        ({"rewards": "success", "terminals": "success"}, f"episode 1 of dataset {old} has no final observation after "
                                                         "its last step, which is truncated"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(MissingFieldError, match=re.escape(message)) as exc:
            ReplayBuffer([STATE], [old], **kwargs)
        assert "\n" not in str(exc.value) and str(old) in str(exc.value)
    with pytest.raises(MissingFieldError, match=r"has no features \['observation.images.front'\]"):
        ReplayBuffer(["observation.images.front"], [old])

    # what old datasets still give: the terminated episode needs no final observation; the truncated one loses
    # its last transition (its next observation is unknown)
    buf = ReplayBuffer([STATE], [old], rewards="success", terminals="success", missing_final="drop", gamma=GAMMA)
    assert buf.offline_steps == 4 + 2
    batch = buf.sample(200, np.random.default_rng(0))
    e, k, _ne, nk = steps_of(batch)
    assert set(zip(e.tolist(), k.tolist(), strict=True)) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)}
    np.testing.assert_array_equal(nk[e == 1], k[e == 1] + 1)
    np.testing.assert_allclose(batch["reward"].numpy(), (e == 0) & (k == 3))  # success: the last step of episode 0
    np.testing.assert_allclose(batch["discount"].numpy(), np.where((e == 0) & (k == 3), 0.0, GAMMA))

    # a reward function of the steps: next.observation.state is the state one step later
    def progress(steps):
        return steps["next.observation.state"][:, 1] - steps[STATE][:, 1]

    fn = ReplayBuffer([STATE], [old], rewards=progress, terminals="success", missing_final="drop")
    batch = fn.sample(50, np.random.default_rng(0))
    e, k, _ne, _nk = steps_of(batch)
    # 1.0, except at the terminal step that has no final observation (its next observation repeats its own)
    np.testing.assert_array_equal(batch["reward"].numpy(), np.where((e == 0) & (k == 3), 0.0, 1.0))


def test_rate_view_of_a_multi_rate_recording(tmp_path: Path) -> None:
    """A robot-like recording: state at 50 Hz, actions and next.* at 10 Hz, state recorded on after the last
    action; with rate=10 the steps are the actions and the last one's next observation is the state 0.1 s later."""
    path = tmp_path / "robot.zarr"
    features = {k: FEATURES[k] for k in (STATE, "action", "next.reward", "next.terminated")}
    with Dataset.create(path, features, durable=False) as ds, ds.begin_episode() as w:
        ts = 0.003 + np.arange(30) / 50  # 0.003 .. 0.583
        w.extend(STATE, ts, np.stack([np.zeros(30), ts], 1))
        ta = 0.01 + np.arange(5) / 10  # 0.01 .. 0.41
        w.extend("action", ta, np.zeros((5, 2)))
        w.extend("next.reward", ta, np.arange(5))
        w.extend("next.terminated", ta, np.arange(5) == 4)
    buf = ReplayBuffer([STATE], [path], rate=10)
    batch = buf.sample(100, np.random.default_rng(0))
    t, nt = batch["observation"][STATE][:, 1].numpy(), batch["next_observation"][STATE][:, 1].numpy()
    step = np.round(batch["reward"].numpy()).astype(int)
    expected = 0.003 + np.floor((0.01 + step / 10 - 0.003) * 50 + 1e-6) / 50  # the last sample at or before
    np.testing.assert_allclose(t, expected, atol=1e-6)
    np.testing.assert_allclose(nt, 0.003 + np.floor((0.01 + (step + 1) / 10 - 0.003) * 50 + 1e-6) / 50, atol=1e-6)
    assert set(step.tolist()) == set(range(5))


def online_step(e: int, k: int) -> dict[str, np.ndarray]:
    return {STATE: np.array([e, k], dtype=np.float32), CAM: frame(e % 20, k)}


def run_episode(buf: ReplayBuffer, e: int, n: int, terminated: bool, env: int = 0, end: bool = True) -> None:
    for k in range(n):
        last = end and k == n - 1
        buf.add(
            online_step(e, k), np.array([e, k], np.float32), reward_of(e, k),
            last and terminated, last and not terminated, online_step(e, k + 1), env=env, success=last and terminated,
        )  # fmt: skip


def test_online_ratio_and_empty_parts(demos: Path) -> None:
    buf = ReplayBuffer([STATE], [demos], online_ratio=0.25, capacity=100)
    assert not buf.sample(64)["online"].any()  # nothing online yet: all offline
    run_episode(buf, 100, 10, terminated=True)
    batch = buf.sample(1000, np.random.default_rng(0))
    online = batch["online"].numpy()
    assert online.sum() == 250
    e = batch["observation"][STATE][:, 0].numpy()
    np.testing.assert_array_equal(e >= 100, online)
    # a ratio for one batch (distilling from the online part alone) leaves the buffer's own as it was
    assert buf.sample(64, online_ratio=1.0)["online"].all() and not buf.sample(64, online_ratio=0.0)["online"].any()
    assert buf.sample(1000, np.random.default_rng(1))["online"].numpy().sum() == 250
    only_online = ReplayBuffer([STATE], capacity=100)
    run_episode(only_online, 100, 3, terminated=False)
    assert only_online.sample(32)["online"].all()
    with pytest.raises(RuntimeError, match="the replay buffer is empty"):
        ReplayBuffer([STATE]).sample(4)


def test_the_ring_overwrites_the_oldest_steps() -> None:
    buf = ReplayBuffer([STATE, CAM], capacity=8, gamma=GAMMA)
    run_episode(buf, 1, 20, terminated=False, end=False)  # still in progress
    # 8 slots: the steps 13..19 and the newest observation (step 20)
    assert buf.online_steps == 7 and buf.online_added == 20
    batch = buf.sample(200, np.random.default_rng(0))
    e, k, ne, nk = steps_of(batch)
    assert set(k.tolist()) == set(range(13, 20))
    np.testing.assert_array_equal(nk, k + 1)
    np.testing.assert_allclose(batch["discount"].numpy(), GAMMA)  # in progress: nothing ended
    assert np.isnan(batch["mc_return"].numpy()).all()  # its return is not known yet
    assert not batch["succeeded"].numpy().any()  # nor whether it succeeds
    buf.discard_episode(0)  # episode 1 is left unfinished (never committed); its steps stay
    run_episode(buf, 2, 3, terminated=True)  # a new episode starts
    batch = buf.sample(300, np.random.default_rng(1))
    e, k, ne, nk = steps_of(batch)
    # episode 2 took 3 steps + its final observation: 4 slots, the oldest 4 of episode 1 are gone
    assert set(zip(e.tolist(), k.tolist(), strict=True)) == {(1, 17), (1, 18), (1, 19), (2, 0), (2, 1), (2, 2)}
    np.testing.assert_array_equal(ne, e)
    np.testing.assert_array_equal(nk, k + 1)
    ended = e == 2
    expected = [sum(GAMMA**m * reward_of(2, j + m) for m in range(3 - j)) for j in k[ended]]
    np.testing.assert_allclose(batch["mc_return"].numpy()[ended], expected)
    assert np.isnan(batch["mc_return"].numpy()[~ended]).all()
    np.testing.assert_array_equal(batch["succeeded"].numpy(), ended)  # episode 2 succeeded at its last step


def test_parallel_envs_keep_their_own_episodes() -> None:
    buf = ReplayBuffer([STATE], capacity=100, gamma=GAMMA, n_step=4)
    for k in range(6):  # two envs, interleaved
        for env, e in ((0, 10), (1, 20)):
            last = k == 5
            buf.add(online_step(e, k), np.array([e, k]), reward_of(e, k), last and env == 0, last and env == 1,
                    online_step(e, k + 1), env=env)  # fmt: skip
    batch = buf.sample(500, np.random.default_rng(0))
    e, k, ne, nk = steps_of(batch)
    np.testing.assert_array_equal(ne, e)
    np.testing.assert_array_equal(nk, np.minimum(k + 4, 6))
    span = nk - k
    expected = [sum(GAMMA**m * reward_of(a, b + m) for m in range(s)) for a, b, s in zip(e, k, span, strict=True)]
    np.testing.assert_allclose(batch["reward"].numpy(), expected)
    terminal = (e == 10) & (nk == 6)
    np.testing.assert_allclose(batch["discount"].numpy(), np.where(terminal, 0.0, GAMMA**span))


KILLED_CHILD = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_buffer import ReplayBuffer, STATE, CAM, run_episode
buf = ReplayBuffer([STATE, CAM], capacity=1000, online_path={path!r}, task="reach", step_dt=0.1)
run_episode(buf, 0, 4, terminated=True, env=0)
run_episode(buf, 1, 2, terminated=False, env=1, end=False)  # env 1's episode is in progress...
run_episode(buf, 2, 3, terminated=False, env=0)  # ...while env 0 ends another one
run_episode(buf, 3, 2, terminated=False, env=0, end=False)
print(buf.online_added, buf.online_episodes, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_online_episodes_survive_a_killed_run_and_reload(tmp_path: Path) -> None:
    online = tmp_path / "online.zarr"
    code = KILLED_CHILD.format(tests=str(Path(__file__).parent), path=str(online))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["11", "2"]
    assert verify(online).ok
    with Dataset.open(online) as ds:  # the two ended episodes, not the ones in progress
        assert len(ds) == 2
        first, second = ds.episode(0), ds.episode(1)
        assert first.meta["source"] == "policy" and first.meta["task"] == "reach" and first.success is True
        assert second.success is False and second.meta["attributes"]["env"] == 0
        assert first.stream(STATE).read().tolist() == [[0, k] for k in range(5)]  # with the final observation
        np.testing.assert_allclose(first.stream(STATE).timestamps, np.arange(5) * 0.1)
        assert first.stream("next.done").read().tolist() == [False] * 3 + [True]
        assert second.stream("next.terminated").read().tolist() == [False] * 3
        assert first.stream("next.success").read().tolist() == [False] * 3 + [True]
        np.testing.assert_array_equal(second.stream(CAM)[3], frame(2, 3))

    with ReplayBuffer([STATE, CAM], capacity=1000, online_path=online, gamma=GAMMA) as buf:
        assert buf.online_steps == 7 and buf.online_episodes == 2
        batch = buf.sample(300, np.random.default_rng(0))
        e, k, ne, nk = steps_of(batch)
        np.testing.assert_array_equal(ne, e)
        assert set(zip(e.tolist(), k.tolist(), strict=True)) == {(0, j) for j in range(4)} | {(2, j) for j in range(3)}
        np.testing.assert_array_equal(nk, k + 1)
        np.testing.assert_allclose(batch["discount"].numpy(), np.where((e == 0) & (k == 3), 0.0, GAMMA))
        np.testing.assert_array_equal(batch["next_observation"][CAM].numpy()[:, 0, 0, 0], 10 * e + k + 1)
        assert batch["online"].all()
        np.testing.assert_array_equal(batch["succeeded"].numpy(), e == 0)  # reloaded: episode 0 succeeded
        state = json.loads(json.dumps(buf.state_dict()))
        assert state["added"] == 7 and state["committed_episodes"] == 2 and state["size"] == 9
        run_episode(buf, 4, 2, terminated=True)  # appends to the same dataset
        assert buf.online_episodes == 3
    with ReplayBuffer([STATE, CAM], capacity=11, online_path=online) as buf:
        # only the newest episodes that fit: 3 slots (episode 4) + 4 (episode 2); episode 0 needs 5 more
        assert buf.online_steps == 5 and buf.online_added == 5
        buf.load_state_dict({**state, "capacity": 11})
        assert buf.online_added == 7
        with pytest.raises(ValueError, match=r"committed 5 online episodes, the online dataset .* holds 3"):
            buf.load_state_dict({**state, "capacity": 11, "committed_episodes": 5})
        with pytest.raises(ValueError, match="capacity 1000, this one has 11"):
            buf.load_state_dict(state)


def test_adding_and_sampling_from_two_threads() -> None:
    """An actor thread adds episodes of two envs to a small ring while the learner samples n-step transitions:
    every sampled transition is whole (its observation, action, reward, discount and next observation agree).
    Threads switch every 10 us (without the buffer's lock this fails every time)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        _add_and_sample_concurrently()
    finally:
        sys.setswitchinterval(interval)


def _add_and_sample_concurrently() -> None:
    n_step = 3
    buf = ReplayBuffer([STATE], capacity=48, gamma=GAMMA, n_step=n_step, online_ratio=1.0)
    length = {e: 3 + e % 7 for e in range(400)}
    terminal = {e: e % 3 == 0 for e in range(400)}
    errors: list[BaseException] = []

    def actor() -> None:
        try:
            k = {0: 0, 1: 0}
            episode = {0: 0, 1: 1}
            for _ in range(2500):
                for env in (0, 1):
                    e, j = episode[env], k[env]
                    last = j == length[e] - 1
                    buf.add(online_step(e, j), np.array([e, j]), reward_of(e, j), last and terminal[e],
                            last and not terminal[e], online_step(e, j + 1), env=env)  # fmt: skip
                    k[env] = 0 if last else j + 1
                    episode[env] = (e + 2) % 400 if last else e
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=actor)
    thread.start()
    while not buf.online_steps:
        time.sleep(0.001)
    batches = during = 0
    while thread.is_alive() or batches < 20:
        during += thread.is_alive()
        batch = buf.sample(64)
        e, k, ne, nk = steps_of(batch)
        assert (ne == e).all() and batch["online"].all()
        np.testing.assert_array_equal(batch["action"].numpy(), np.stack([e, k], 1))
        span = nk - k
        assert ((span >= 1) & (span <= n_step)).all()
        n = np.array([length[i] for i in e])
        assert (nk <= n).all()
        expected = [sum(GAMMA**m * reward_of(a, b + m) for m in range(s)) for a, b, s in zip(e, k, span, strict=True)]
        np.testing.assert_allclose(batch["reward"].numpy(), expected, rtol=1e-6)
        ended_terminal = np.array([terminal[i] for i in e]) & (nk == n)
        np.testing.assert_allclose(batch["discount"].numpy(), np.where(ended_terminal, 0.0, GAMMA**span))
        batches += 1
    thread.join()
    assert not errors, errors
    assert during >= 10 and buf.online_added == 5000
