"""SACLearner: env-unit actions, the TD target's discount, UTD steps, the shared encoder's gradients, and learning
on small synthetic problems (no simulator)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from realloop.policies.rl.learner import Batch, Learner
from realloop.policies.rl.sac import SACConfig, SACLearner

STATE = "observation.state"
WRIST, FRONT = "observation.images.wrist", "observation.images.front"
LOW, HIGH = np.array([-2.0, 0.0, 10.0]), np.array([2.0, 1.0, 20.0])


def batch(obs: np.ndarray, action: np.ndarray, reward: np.ndarray, discount: np.ndarray, next_obs: np.ndarray) -> Batch:
    """A state-only batch (obs keyed as observation.state)."""
    n = len(obs)
    return {
        "observation": {STATE: obs.astype(np.float32)},
        "action": action.astype(np.float32),
        "reward": reward.astype(np.float32),
        "discount": discount.astype(np.float32),
        "next_observation": {STATE: next_obs.astype(np.float32)},
        "online": np.ones(n, dtype=bool),
    }


def random_batch(rng: np.random.Generator, n: int, obs_dim: int = 4, low: Any = LOW, high: Any = HIGH) -> Batch:
    return batch(
        rng.normal(size=(n, obs_dim)),
        rng.uniform(low, high, size=(n, len(low))),
        rng.normal(size=n),
        np.full(n, 0.99),
        rng.normal(size=(n, obs_dim)),
    )


def image_batch(rng: np.random.Generator, n: int) -> Batch:
    b = random_batch(rng, n)
    for obs in (b["observation"], b["next_observation"]):
        obs[WRIST] = rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)
        obs[FRONT] = rng.integers(0, 256, size=(n, 3, 16, 16), dtype=np.uint8)
    return b


def tiny(obs_dim: int = 4, low: Any = LOW, high: Any = HIGH, **overrides: Any) -> SACLearner:
    cfg = {"hidden_dims": (32, 32), "num_critics": 4, **overrides}
    return SACLearner({STATE: (obs_dim,)}, low, high, **cfg)


def tiny_images(**overrides: Any) -> SACLearner:
    shapes = {STATE: (4,), WRIST: (3, 16, 16), FRONT: (3, 16, 16)}
    return SACLearner(shapes, LOW, HIGH, hidden_dims=(32, 32), num_critics=2, image_feature_dim=8, **overrides)


def test_it_is_a_learner_with_named_modules_and_optimizers() -> None:
    learner = tiny()
    assert isinstance(learner, Learner)
    assert set(learner.modules()) == {"encoder", "encoder_target", "actor", "critic", "critic_target", "temperature"}
    assert set(learner.optimizers()) == {"critic", "actor", "temperature"}
    assert learner.target_entropy == -1.5  # -|A| / 2
    assert SACConfig.preset("sac").num_critics == 2 and SACConfig().num_critics == 10
    with pytest.raises(ValueError, match="num_min_critics"):
        SACConfig(num_critics=2, num_min_critics=3)


def test_act_returns_env_units_inside_the_bounds() -> None:
    torch.manual_seed(0)
    learner = tiny()
    with torch.no_grad():
        learner.actor.mean.bias.copy_(torch.tensor([30.0, -30.0, 0.0]))  # saturate two dims at the bounds
    obs = {STATE: np.random.default_rng(0).normal(size=(512, 4)).astype(np.float32)}
    for explore in (True, False):
        a = learner.act(obs, explore=explore)
        assert a.shape == (512, 3) and a.dtype == np.float32
        assert bool((a >= LOW.astype(np.float32)).all() and (a <= HIGH.astype(np.float32)).all())
    np.testing.assert_allclose(learner.act(obs, explore=False)[:, :2], np.broadcast_to([2.0, 0.0], (512, 2)))
    assert 12 < learner.act(obs, explore=False)[:, 2].mean() < 18  # the middle of [10, 20], not of [-1, 1]
    np.testing.assert_array_equal(learner.act(obs, explore=False), learner.act(obs, explore=False))
    assert not np.array_equal(learner.act(obs, explore=True), learner.act(obs, explore=True))


def test_update_maps_env_unit_actions_into_unit_range() -> None:
    learner = tiny()
    b = random_batch(np.random.default_rng(0), 8)
    b["action"][0] = LOW
    b["action"][1] = HIGH
    b["action"][2] = (LOW + HIGH) / 2
    b["action"][3] = HIGH + 5  # outside: clipped
    prepared = learner._prepare(b)["action"]
    expected = torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3, [1.0] * 3])
    torch.testing.assert_close(prepared[:4], expected)


def test_a_terminal_transition_s_target_is_just_the_reward() -> None:
    torch.manual_seed(0)
    learner = tiny(backup_entropy=True)
    mb = learner._prepare(random_batch(np.random.default_rng(1), 16))

    def target(discount: float) -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(7)  # the same a' and target members each time
            return learner.td_target({**mb, "discount": torch.full((16,), discount)})

    torch.testing.assert_close(target(0.0), mb["reward"])
    bootstrap = target(1.0) - mb["reward"]
    assert bootstrap.abs().min() > 1e-4
    torch.testing.assert_close(target(0.5), mb["reward"] + 0.5 * bootstrap)


def test_utd_takes_g_critic_steps_then_one_actor_and_temperature_step() -> None:
    learner = tiny(utd=3)
    steps = dict.fromkeys(learner.optimizers(), 0)
    for name, opt in learner.optimizers().items():
        opt.register_step_post_hook(lambda *_, name=name: steps.__setitem__(name, steps[name] + 1))
    rng = np.random.default_rng(0)
    metrics = learner.update(random_batch(rng, 3 * 8))
    assert steps == {"critic": 3, "actor": 1, "temperature": 1}
    learner.update(random_batch(rng, 3 * 8))
    assert steps == {"critic": 6, "actor": 2, "temperature": 2}
    assert learner.extra_state() == {"updates": 2, "critic_steps": 6}
    assert {"critic_loss", "q", "target_q", "actor_loss", "entropy", "temperature", "temperature_loss"} <= set(metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    with pytest.raises(ValueError, match="utd=3"):
        learner.update(random_batch(rng, 25))


def test_every_utd_minibatch_keeps_the_batchs_offline_online_mix() -> None:
    """The replay buffer puts a batch's offline rows first; each of the G critic steps and the actor's step must
    still see half of each (RLPD's symmetric sampling), not the offline rows first and the online ones last."""
    learner = tiny(utd=4, bc_weight=1.0)
    seen: list[float] = []
    critic_loss = learner.critic_loss
    learner.critic_loss = lambda mb, enc=None: (seen.append(float(mb["demo"].float().mean())), critic_loss(mb, enc))[1]
    b = random_batch(np.random.default_rng(0), 4 * 16)
    b["online"] = np.arange(4 * 16) >= 2 * 16  # offline rows first, as ReplayBuffer.sample gives them
    metrics = learner.update(b)
    assert seen == [0.5] * 4 and metrics["bc_rows"] == 0.5


def test_the_critic_trains_the_shared_encoder_and_the_actor_does_not() -> None:
    torch.manual_seed(0)
    learner = tiny_images()
    mb = learner._prepare(image_batch(np.random.default_rng(0), 8))
    encoder_params = list(learner.encoder.parameters())
    assert encoder_params

    learner.actor_loss(mb)[0].backward()
    assert all(p.grad is None for p in encoder_params)
    assert all(p.grad is None for p in learner.critic.parameters())
    assert all(p.grad is not None for p in learner.actor.parameters())

    learner.critic_loss(mb)[0].backward()
    assert all(p.grad is not None for p in learner.critic.parameters())
    assert sum(float(p.grad.abs().sum()) for p in encoder_params if p.grad is not None) > 0
    assert all(p.grad is None for p in learner.critic_target.parameters())


def test_image_updates_run_and_acting_does_not_augment() -> None:
    torch.manual_seed(0)
    learner = tiny_images()
    rng = np.random.default_rng(0)
    before = {k: v.clone() for k, v in learner.encoder.state_dict().items()}
    metrics = learner.update(image_batch(rng, 8))
    assert np.isfinite(metrics["critic_loss"])
    assert any(not torch.equal(before[k], v) for k, v in learner.encoder.state_dict().items())
    obs = image_batch(rng, 2)["observation"]
    a = learner.act(obs, explore=False)
    np.testing.assert_array_equal(a, learner.act(obs, explore=False))
    assert bool((a >= LOW.astype(np.float32)).all() and (a <= HIGH.astype(np.float32)).all())
    # the update shifts images: prepared observations differ from the raw ones (as unit floats)
    shifted = learner._prepare(image_batch(np.random.default_rng(3), 8))["observation"][WRIST]
    raw = torch.as_tensor(image_batch(np.random.default_rng(3), 8)["observation"][WRIST]).float() / 255
    assert shifted.shape == raw.shape and not torch.equal(shifted, raw)


def test_observation_statistics_travel_in_the_actor_weights() -> None:
    torch.manual_seed(0)
    stats = {STATE: {"mean": [5.0, -3.0, 0.0, 1.0], "std": [2.0, 0.5, 1.0, 4.0]}}
    learner = tiny(obs_stats=stats)
    weights = learner.actor_weights()
    assert any(k.startswith("encoder.normalizer.") for k in weights)
    torch.manual_seed(1)
    actor_side = tiny()  # built without the statistics, other random weights
    obs = {STATE: np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32) * 3 + 5}
    assert not np.allclose(actor_side.act(obs, explore=False), learner.act(obs, explore=False))
    actor_side.load_actor_weights(weights)
    np.testing.assert_array_equal(actor_side.act(obs, explore=False), learner.act(obs, explore=False))
    with pytest.raises(KeyError, match="none of"):
        actor_side.load_actor_weights({**weights, "critic.out.weight": torch.zeros(1)})


@pytest.mark.parametrize("preset", ["sac", "rlpd"])
def test_it_learns_the_best_action_of_a_contextual_bandit(preset: str) -> None:
    """One-step problem: context s in [-1, 1]^2, best action a*(s) = (1.5 s0, 0.5 + 0.4 s1) in env units, reward
    -|a - a*|^2 / scale; random behaviour actions; discount 0. The learnt deterministic action moves to a*."""
    torch.manual_seed(0)
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    learner = SACLearner(
        {STATE: (2,)},
        low,
        high,
        SACConfig.preset(preset, hidden_dims=(64, 64), num_critics=2 if preset == "sac" else 5),
        actor_lr=1e-3,
        critic_lr=1e-3,
        temperature_lr=1e-3,
        init_temperature=0.1,
    )
    rng = np.random.default_rng(0)
    scale = (high - low) / 2

    def best(s: np.ndarray) -> np.ndarray:
        return np.stack([1.5 * s[:, 0], 0.5 + 0.4 * s[:, 1]], axis=1)

    def error() -> float:
        s = rng.uniform(-1, 1, size=(256, 2)).astype(np.float32)
        return float(np.abs((learner.act({STATE: s}, explore=False) - best(s)) / scale).mean())

    before = error()
    for _ in range(300):
        s = rng.uniform(-1, 1, size=(64, 2))
        a = rng.uniform(low, high, size=(64, 2))
        reward = -(((a - best(s)) / scale) ** 2).sum(axis=1)
        learner.update(batch(s, a, reward, np.zeros(64), s))
    after = error()
    assert after < 0.12 and after < before / 3, (before, after)


def test_the_critic_learns_discounted_values_of_a_two_step_chain() -> None:
    """s0 -> s1 (reward 0, discount 0.9) -> end (reward 1, terminal: discount 0). Without the entropy backup, Q(s1,
    .) -> 1 and Q(s0, .) -> 0.9 whatever the action."""
    torch.manual_seed(0)
    learner = tiny(
        obs_dim=2,
        low=np.array([-1.0]),
        high=np.array([1.0]),
        backup_entropy=False,
        tau=0.05,
        critic_lr=1e-3,
        num_critics=4,
    )
    s0, s1 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    obs = np.repeat(np.concatenate([s0, s1]), 16, axis=0)
    next_obs = np.repeat(np.concatenate([s1, s1]), 16, axis=0)  # s1's successor is unused (discount 0)
    reward = np.repeat([0.0, 1.0], 16)
    discount = np.repeat([0.9, 0.0], 16)
    rng = np.random.default_rng(0)
    for _ in range(400):
        learner.update(batch(obs, rng.uniform(-1, 1, size=(32, 1)), reward, discount, next_obs))
    with torch.no_grad():
        a = torch.linspace(-1, 1, 9)[:, None]
        q0 = learner.critic(learner.encoder({STATE: torch.tensor(s0, dtype=torch.float32).expand(9, 2)}), a)
        q1 = learner.critic(learner.encoder({STATE: torch.tensor(s1, dtype=torch.float32).expand(9, 2)}), a)
    assert abs(float(q1.mean()) - 1.0) < 0.03, float(q1.mean())
    assert abs(float(q0.mean()) - 0.9) < 0.03, float(q0.mean())


def _bc_actor(flag: str, every: int, flagged: np.ndarray, other: np.ndarray, **config: Any) -> tuple[np.ndarray, dict]:
    """The actor's deterministic actions after 150 updates on reward-free batches whose rows show the action
    ``flagged`` where ``batch[flag]`` is True (every ``every``-th row) and ``other`` elsewhere; and the last
    update's metrics. Every row is online unless ``flag`` is ``online``."""
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    learner = tiny(obs_dim=2, low=low, high=high, actor_lr=1e-3, **config)
    for _ in range(150):
        s = rng.normal(size=(32, 2))
        rows = np.arange(32) % every == 0
        b = batch(s, np.where(rows[:, None], flagged, other), np.zeros(32), np.zeros(32), s)
        b[flag] = rows  # type: ignore[literal-required]
        metrics = learner.update(b)
    return learner.act({STATE: rng.normal(size=(64, 2)).astype(np.float32)}, explore=False), metrics


def test_bc_weight_pulls_the_actor_to_the_demonstrations_actions_not_its_own() -> None:
    """Offline rows (the demonstrations) show one action, online rows (the policy's own) another, no reward: the
    BC term clones the demonstrations' action alone."""
    demo, own = np.array([0.6, -0.4]), np.array([-0.6, 0.4])
    with_bc, metrics = _bc_actor("online", 2, own, demo, bc_weight=10.0)
    without, _ = _bc_actor("online", 2, own, demo, bc_weight=0.0)
    assert metrics["bc_cloned"] == 1.0  # without the Q filter every demonstration is cloned
    assert np.abs(with_bc - demo).mean() < 0.1
    assert np.abs(without - demo).mean() > 3 * np.abs(with_bc - demo).mean()


def test_the_action_penalty_pulls_the_actor_to_the_middle_of_its_range() -> None:
    """No reward anywhere (the critic is indifferent) and an actor started far from the middle: the penalty brings
    its action to the middle (a residual actor's: no correction); without it the action stays where it was."""

    def final_action(penalty: float) -> tuple[np.ndarray, dict[str, float]]:
        torch.manual_seed(0)
        learner = tiny(action_penalty=penalty, init_temperature=1e-6, temperature_lr=0.0, actor_lr=1e-3)
        with torch.no_grad():
            learner.actor.mean.bias.fill_(1.5)  # tanh(1.5) = 0.9 of the half range
        rng = np.random.default_rng(0)
        metrics: dict[str, float] = {}
        for _ in range(400):
            b = random_batch(rng, 32)
            b["reward"][:] = 0.0
            metrics = learner.update(b)
        s = rng.normal(size=(64, 4)).astype(np.float32)
        unit = (learner.act({STATE: s}, explore=False) - (LOW + HIGH) / 2) / ((HIGH - LOW) / 2)
        return unit, metrics

    pulled, metrics = final_action(1.0)
    kept, plain = final_action(0.0)
    assert np.abs(pulled).mean() < 0.15 and metrics["action_size"] < 0.05
    assert np.abs(kept).mean() > 0.6 and "action_size" not in plain


def test_bc_successes_clones_the_online_transitions_of_successful_episodes_only() -> None:
    """Online rows of successful episodes show one action, online rows of failed ones another, and there are no
    offline rows: with ``bc_successes`` the BC term clones the successful episodes' action (and only those rows);
    without it nothing is cloned (no demonstrations)."""
    won, lost = np.array([0.6, -0.4]), np.array([-0.6, 0.4])
    imitated, metrics = _bc_actor("succeeded", 4, won, lost, bc_weight=10.0, bc_successes=True)
    plain, plain_metrics = _bc_actor("succeeded", 4, won, lost, bc_weight=10.0)
    assert metrics["bc_rows"] == 0.25 and plain_metrics["bc_rows"] == 0.0
    assert np.abs(imitated - won).mean() < 0.1
    assert np.abs(plain - won).mean() > 3 * np.abs(imitated - won).mean()


def _demo_bandit(**config: Any) -> tuple[np.ndarray, list[dict[str, float]]]:
    """A bandit whose best action is a*, half of each batch demonstrations of a worse one, 300 updates with a strong
    BC term (``bc_weight=10``): the actor's deterministic actions, and each update's metrics."""
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    learner = tiny(
        obs_dim=2, low=low, high=high, bc_weight=10.0, actor_lr=1e-3, critic_lr=1e-3, init_temperature=0.05, **config
    )
    metrics = []
    for _ in range(300):
        s = rng.normal(size=(64, 2))
        online = np.arange(64) % 2 == 0
        a = np.where(online[:, None], rng.uniform(low, high, size=(64, 2)), BANDIT_DEMO)
        b = batch(s, a, -((a - BANDIT_BEST) ** 2).sum(axis=1), np.zeros(64), s)
        b["online"] = online
        metrics.append(learner.update(b))
    return learner.act({STATE: rng.normal(size=(64, 2)).astype(np.float32)}, explore=False), metrics


BANDIT_BEST, BANDIT_DEMO = np.array([-0.5, 0.5]), np.array([0.3, -0.2])


def _distance(actions: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(actions - target).mean())


def test_the_q_filter_stops_cloning_demonstrations_the_critic_rates_below_the_policy() -> None:
    """With a strong BC term the actor stays near the demonstrations' action; with the Q filter the critic soon
    rates the policy's actions above them, cloning stops and the actor goes to a*."""
    unfiltered, _ = _demo_bandit()
    filtered, metrics = _demo_bandit(bc_q_filter=True)
    best, demo = BANDIT_BEST, BANDIT_DEMO
    # measured: filtered (-0.72, 0.73) (a small critic's optimum overshoots a*), unfiltered (0.16, -0.09)
    assert _distance(filtered, best) < 0.3 and _distance(filtered, best) < _distance(filtered, demo) / 3
    assert _distance(unfiltered, demo) < _distance(unfiltered, best) / 2
    assert metrics[-1]["bc_cloned"] < 0.2  # the critic prefers the policy's action on (nearly) every demonstration


def test_a_decaying_bc_weight_hands_the_actor_over_to_the_critic() -> None:
    """bc_decay_updates: the BC weight falls linearly from bc_weight to 0, then the critic alone steers the actor,
    from the demonstrations' action to a*."""
    decayed, metrics = _demo_bandit(bc_decay_updates=150)
    assert [round(metrics[k]["bc_weight"], 6) for k in (0, 75, 150, 299)] == [10.0, 5.0, 0.0, 0.0]
    assert (
        _distance(decayed, BANDIT_BEST) < 0.3 and _distance(decayed, BANDIT_BEST) < _distance(decayed, BANDIT_DEMO) / 3
    )
    with pytest.raises(ValueError, match="must not be negative"):
        tiny(bc_weight=1.0, bc_decay_updates=-1)


def test_over_action_chunks_it_acts_in_chunks_and_learns_the_best_chunk() -> None:
    """Q-chunking: a one-step problem over chunks of 2 actions, reward -|chunk - (s, -s)|^2: the critic sees the
    whole chunk, so the actor learns a different action for each step of it."""
    torch.manual_seed(0)
    low, high = np.array([-1.0]), np.array([1.0])
    learner = tiny(obs_dim=1, low=low, high=high, action_chunk=2, num_critics=2, actor_lr=1e-3, critic_lr=1e-3,
                   init_temperature=0.05, hidden_dims=(64, 64))  # fmt: skip
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.8, 0.8, size=(5, 1)).astype(np.float32)
    chunk = learner.act({STATE: s}, explore=True)
    assert chunk.shape == (5, 2, 1) and (np.abs(chunk) <= 1).all()
    with pytest.raises(ValueError, match=r"action_chunk=2 needs \(B, 2, A\) actions"):
        learner.update(batch(s, np.zeros((5, 1)), np.zeros(5), np.zeros(5), s))

    def best(s: np.ndarray) -> np.ndarray:
        return np.stack([s, -s], axis=1)  # (B, 2, 1)

    for _ in range(400):
        s = rng.uniform(-0.8, 0.8, size=(64, 1))
        a = rng.uniform(-1, 1, size=(64, 2, 1))
        reward = -((a - best(s)) ** 2).sum(axis=(1, 2))
        learner.update(batch(s, a, reward, np.zeros(64), s))
    s = np.linspace(-0.8, 0.8, 33, dtype=np.float32)[:, None]
    error = np.abs(learner.act({STATE: s}, explore=False) - best(s)).mean()
    assert error < 0.1, error


def _cql_batch(rng: np.random.Generator, n: int, mc_return: float) -> Batch:
    """One-step offline data: every state's recorded action is 0.5, reward 0.5, terminal."""
    s = rng.normal(size=(n, 2))
    b = batch(s, np.full((n, 1), 0.5), np.full(n, 0.5), np.zeros(n), s)
    b["mc_return"] = np.full(n, mc_return, dtype=np.float32)
    return b


def test_the_conservative_penalty_keeps_q_of_unseen_actions_below_the_data() -> None:
    rng = np.random.default_rng(0)
    low, high = np.array([-1.0]), np.array([1.0])

    def gap(cql_weight: float) -> float:
        torch.manual_seed(0)
        learner = tiny(obs_dim=2, low=low, high=high, num_critics=2, cql_weight=cql_weight, cql_actions=4,
                       critic_lr=1e-3, backup_entropy=False)  # fmt: skip
        for _ in range(150):
            learner.update(_cql_batch(rng, 32, 0.5))
        s = torch.tensor(rng.normal(size=(64, 2)), dtype=torch.float32)
        with torch.no_grad():
            f = learner.encoder({STATE: s})
            q_data = learner.critic(f, torch.full((64, 1), 0.5)).mean()
            q_far = learner.critic(f, torch.full((64, 1), -0.9)).mean()
        return float(q_data - q_far)

    plain, conservative = gap(0.0), gap(5.0)
    assert conservative > 0.3 and conservative > plain + 0.2, (plain, conservative)


def test_cal_ql_bounds_policy_q_values_in_the_penalty_by_the_monte_carlo_return() -> None:
    rng = np.random.default_rng(1)
    learners = {}
    for calibrated in (True, False):
        torch.manual_seed(0)
        learners[calibrated] = tiny(obs_dim=2, low=np.array([-1.0]), high=np.array([1.0]), num_critics=2,
                                    cql_weight=1.0, calibrated=calibrated)  # fmt: skip
    b = _cql_batch(rng, 16, float("nan"))

    def penalty(learner: SACLearner, mb: dict) -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            f, nf = learner.encoder(mb["observation"]), learner.encoder(mb["next_observation"])
            return float(learner.conservative_penalty(mb, f, learner.critic(f, mb["action"]), nf))

    unknown = learners[True]._prepare(b)  # NaN returns (episodes in progress): no bound, plain CQL
    assert penalty(learners[True], unknown) == pytest.approx(penalty(learners[False], unknown), rel=1e-6)
    high = {**unknown, "mc_return": torch.full((16,), 100.0)}  # policy actions' Q raised to 100
    assert penalty(learners[True], high) > 90 > penalty(learners[False], high)


def grasp_q(learner: SACLearner, s: np.ndarray) -> np.ndarray:
    """The grasp critic's members' mean Q over the two gripper states, (B, 2)."""
    with torch.no_grad():
        return learner.grasp_critic(learner.encoder({STATE: torch.tensor(s, dtype=torch.float32)})).mean(0).numpy()


def test_a_grasp_critic_sets_the_gripper_at_one_of_its_bounds_and_the_actor_acts_on_the_rest() -> None:
    torch.manual_seed(0)
    learner = tiny(grasp_dim=-1, grasp_epsilon=1.0)  # the last dim, in [10, 20], is the gripper
    assert learner.actor.mean.out_features == 2 and learner.critic.hidden[0].in_features == 4 + 2
    assert {"grasp_critic", "grasp_critic_target"} <= set(learner.modules()) and "grasp_critic" in learner.optimizers()
    obs = {STATE: np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)}
    explored = learner.act(obs, explore=True)
    assert sorted(np.unique(explored[:, 2])) == [10.0, 20.0]  # epsilon 1: drawn at random, never in between
    greedy = learner.act(obs, explore=False)
    np.testing.assert_array_equal(greedy[:, 2], np.where(grasp_q(learner, obs[STATE]).argmax(1) == 1, 20.0, 10.0))
    assert any(k.startswith("grasp_critic.") for k in learner.actor_weights())

    b = random_batch(np.random.default_rng(1), 4)
    b["action"][:, 2] = [11.0, 14.9, 15.1, 19.0]  # a batch's gripper counts as its nearer state
    mb = learner._prepare(b)
    assert mb["grasp"].tolist() == [0, 0, 1, 1] and mb["action"].shape == (4, 2)
    metrics = learner.update(random_batch(np.random.default_rng(2), 8))
    assert np.isfinite(metrics["grasp_loss"]) and "grasp_q" in metrics

    with pytest.raises(ValueError, match="action_chunk=1"):
        SACConfig(grasp_dim=0, action_chunk=2)
    with pytest.raises(ValueError, match="grasp_dim=3 is no dim"):
        tiny(grasp_dim=3)


def test_the_grasp_critic_learns_which_state_pays_and_bootstraps_through_the_best_state() -> None:
    """Two kinds of transitions: at s0 = (x, 0), x in [-1, 1], the gripper pays 1 when its state matches the sign of x
    (terminal); at s1 = (0, 1) it pays nothing and leads to s0 = (1, 0) with discount 0.9, whose best state pays 1,
    so both of s1's states are worth 0.9 (the max at s0, not the mean 0.5). Uniformly random grasps, continuous
    actions irrelevant."""
    torch.manual_seed(0)
    learner = tiny(obs_dim=2, low=np.array([-1.0, 0.0]), high=np.array([1.0, 1.0]), grasp_dim=1, critic_lr=1e-3,
                   tau=0.05, backup_entropy=False)  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(500):
        x = rng.uniform(-1, 1, size=32)
        grasp = rng.integers(0, 2, size=32)
        first = np.arange(32) < 24  # 24 of s0, 8 of s1
        obs = np.where(first[:, None], np.stack([x, np.zeros(32)], 1), [[0.0, 1.0]])
        next_obs = np.where(first[:, None], obs, [[1.0, 0.0]])
        reward = np.where(first, (grasp == (x > 0)).astype(float), 0.0)
        action = np.stack([rng.uniform(-1, 1, size=32), grasp.astype(float)], 1)
        learner.update(batch(obs, action, reward, np.where(first, 0.0, 0.9), next_obs))
    s = np.stack([np.linspace(-1, 1, 41), np.zeros(41)], 1)
    s = s[np.abs(s[:, 0]) > 0.1]
    greedy = learner.act({STATE: s.astype(np.float32)}, explore=False)
    np.testing.assert_array_equal(greedy[:, 1] == 1.0, s[:, 0] > 0)
    np.testing.assert_allclose(grasp_q(learner, np.array([[0.0, 1.0]]))[0], [0.9, 0.9], atol=0.06)


def test_the_conservative_penalty_keeps_the_unseen_grasp_state_below_the_datas() -> None:
    """Every transition closes the gripper (lower bound) and pays 1; with the penalty Q(s, open) falls well below
    Q(s, closed)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    learner = tiny(obs_dim=2, low=np.array([-1.0, 0.0]), high=np.array([1.0, 1.0]), grasp_dim=1, critic_lr=1e-3,
                   cql_weight=1.0, cql_actions=2, calibrated=False)  # fmt: skip
    for _ in range(200):
        s = rng.normal(size=(32, 2))
        action = np.stack([rng.uniform(-1, 1, size=32), np.zeros(32)], 1)
        learner.update(batch(s, action, np.ones(32), np.zeros(32), s))
    q = grasp_q(learner, rng.normal(size=(64, 2)))
    assert abs(q[:, 0].mean() - 1.0) < 0.1 and q[:, 1].mean() < q[:, 0].mean() - 0.5, q.mean(0)


def test_the_grasp_critics_cloning_term_and_clone_make_the_demonstrated_state_its_best() -> None:
    """The demonstrations open the gripper where x > 0 and close it elsewhere, and every reward is 0, so TD alone
    leaves both states worth 0; the large-margin term (bc_weight, in update) and clone each order them as shown."""
    rng = np.random.default_rng(0)

    def demos(n: int) -> Batch:
        s = np.stack([rng.uniform(-1, 1, size=n), np.zeros(n)], 1)
        action = np.stack([rng.uniform(-1, 1, size=n), (s[:, 0] > 0).astype(float)], 1)
        b = batch(s, action, np.zeros(n), np.zeros(n), s)
        b["online"] = np.zeros(n, dtype=bool)
        return b

    def agreement(learner: SACLearner) -> float:
        s = np.stack([np.linspace(-1, 1, 40), np.zeros(40)], 1)
        return float(((grasp_q(learner, s).argmax(1) == 1) == (s[:, 0] > 0)).mean())

    def learner(**overrides: Any) -> SACLearner:
        torch.manual_seed(0)
        return tiny(obs_dim=2, low=np.array([-1.0, 0.0]), high=np.array([1.0, 1.0]), grasp_dim=1, critic_lr=1e-3,
                    **overrides)  # fmt: skip

    cloning, cloned = learner(bc_weight=1.0, grasp_margin=0.2), learner()
    for _ in range(150):
        cloning.update(demos(32))
        cloned.clone(demos(32))
    assert agreement(cloning) >= 0.95 and agreement(cloned) >= 0.95
    s = np.array([[0.5, 0.0], [-0.5, 0.0]])
    q = grasp_q(cloning, s)
    assert q[0, 1] - q[0, 0] > 0.1 and q[1, 0] - q[1, 1] > 0.1, q  # by about the margin
