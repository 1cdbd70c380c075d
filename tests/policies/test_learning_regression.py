"""Learning regression: a small seeded imitation run must still learn to lift the cube.

The other policy tests check shapes, files, determinism and that the loss falls; they pass whether the trained
policy's episodes succeed or fail. This test runs the real pipeline end to end, in-process, and asserts the
success rate, so a change that breaks learning (the loss, the normaliser, the action mode, an observation, the
training windows or the batch sampler, the checkpoint round trip, the evaluation env rebuilt from the checkpoint)
fails CI:

1. ``realloop-collect task=arm_lift episodes=100 action_noise=0.1 seed=0`` (no randomisation): 100 scripted
   DART demonstrations of arm lift (reset seeds 0-99, about 2300 steps) into a zarr dataset;
2. ``realloop-train policy=bc policy.hidden_dims=[256,256] policy.dropout=0.0 steps=800 batch_size=64
   optim.warmup_steps=50 val_every=0 seed=0 device=cpu``: an MLP behaviour-cloning policy on 90 episodes (10
   held out by the seeded split), checkpointed;
3. ``realloop-eval checkpoint=<run> episodes=50 num_envs=4``: ArmLift-v0 rebuilt from the checkpoint (env=auto),
   held-out reset seeds 100000-100049, disjoint from the demonstrations' seeds.

Why this pair: it is the cheapest that learns reliably. DART data (the env executes the expert's action plus
noise, the dataset keeps the expert's corrections) is what makes a small BC policy reliable: on plain
demonstrations the same run lifts 48-60% (seeds 0-1). arm_reach is cheaper per episode but its demonstrations
end on success after ~8 steps and BC reached only 56-74% (100 episodes, 1000-3000 steps), a small diffusion
policy 42% at 5x the training time; diffusion on lift needs minutes. With 50 episodes BC lifted 84-100%.

Measured with this exact configuration on the 2-core CPU machine (shared with other jobs, torch on 1 thread):

    training seed          0      1      2      3      4
    lifted (of 50)        50     50     50     50     50
    train + eval (s)    14.4   12.9   12.6   12.9   11.6     (collection once: 16-20 s)

and on another dataset (collection seed=1000), training seeds 0-2: 50, 49, 50. Stopped at 400 steps it still
lifts 46-49/50; at 300 steps with 50 episodes 23-32/50. Broken learners, each run once: trained 1 step 0/50;
actions shuffled across training windows 0/50; unnormalise multiplying by the scale instead of dividing 0/50;
evaluated in joint_delta control (an action-mode mismatch) 0/50; without observation.environment_state (the
cube unseen) 2/50; plain (non-DART) demonstrations 24-30/50. (With no normaliser at all, BC still lifts 44/50.)

Threshold 0.8 (40/50): well below every measured seed (the worst run lifted 49/50, so another seed, CPU or BLAS
does not trip it) and far above the broken learners (0-4%) and the plain-demonstration policy (48-60%).

The module takes about 45 s on that machine (collection, the run above, and the 1-step negative control).
Deselect it with ``-m "not learning"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from realloop.policies.evaluate import EvalResult
from realloop.policies.evaluate import compose_config as eval_config
from realloop.policies.evaluate import run as evaluate_checkpoint
from realloop.policies.train import TrainSummary, train
from realloop.policies.train import compose_config as train_config
from realloop.sim.collect import collect
from realloop.sim.collect import compose_config as collect_config

COLLECT_EPISODES = 100
COLLECT = ["task=arm_lift", f"episodes={COLLECT_EPISODES}", "action_noise=0.1", "randomize=false", "seed=0"]
TRAIN = [
    "policy=bc", "policy.hidden_dims=[256,256]", "policy.dropout=0.0", "steps=800", "batch_size=64",
    "optim.warmup_steps=50", "log_every=100", "val_every=0", "checkpoint_every=800", "device=cpu",
]  # fmt: skip
EVAL_SEED = 100_000  # realloop-eval's default: far from the collection seeds 0-99
EVAL = [f"seed={EVAL_SEED}", "episodes=50", "num_envs=4", "device=cpu", "progress=false"]
THRESHOLD = 0.8


def collect_demos(out: Path) -> Path:
    summary = collect(collect_config([*COLLECT, f"out={out}"]), progress=False)
    assert summary.successes == COLLECT_EPISODES, summary.line()  # the expert itself still lifts
    return out


def train_and_evaluate(
    dataset: Path, out: Path, *overrides: str, seed: int = 0, eval_overrides: tuple[str, ...] = ()
) -> tuple[TrainSummary, EvalResult, dict[str, float]]:
    """Train the test's policy on ``dataset`` into ``out`` and evaluate its checkpoint; returns wall times too."""
    t0 = time.perf_counter()
    summary = train(train_config([*TRAIN, f"dataset.path={dataset}", f"out={out}", f"seed={seed}", *overrides]),
                    progress=False)  # fmt: skip
    t1 = time.perf_counter()
    result, _ = evaluate_checkpoint(eval_config([*EVAL, f"checkpoint={out}", *eval_overrides]))
    t2 = time.perf_counter()
    return summary, result, {"train_s": t1 - t0, "eval_s": t2 - t1}


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return collect_demos(tmp_path_factory.mktemp("learning") / "lift_dart.zarr")


def _episode_seeds(result: EvalResult) -> list[Any]:
    return [e["seed"] for e in result.per_episode]


@pytest.mark.learning
def test_bc_learns_to_lift_the_cube(lift_demos: Path, tmp_path: Path) -> None:
    summary, result, _ = train_and_evaluate(lift_demos, tmp_path / "bc")
    assert summary.steps == 800
    assert result.env == "realloop/ArmLift-v0" and result.episodes == 50
    assert _episode_seeds(result) == list(range(EVAL_SEED, EVAL_SEED + 50))  # held out: not the demos' seeds
    assert result.success_rate >= THRESHOLD, (
        f"the policy no longer learns to lift: {result.line()} (threshold {THRESHOLD:.0%}; this configuration "
        f"lifted 50/50 with training seeds 0-4, see the module docstring)"
    )


@pytest.mark.learning
def test_an_untrained_policy_does_not_lift(lift_demos: Path, tmp_path: Path) -> None:
    """The negative control: the same pipeline trained for 1 step fails, so the success the test above asserts
    comes from learning, not from an env that reports success too easily."""
    _, result, _ = train_and_evaluate(lift_demos, tmp_path / "untrained", "steps=1", "checkpoint_every=1",
                                      eval_overrides=("episodes=8",))  # fmt: skip
    assert result.episodes == 8 and result.success_rate is not None
    assert result.success_rate <= 0.25, result.line()
