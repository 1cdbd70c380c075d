"""realloop-collect: record scripted demonstrations of a sim task into a realloop dataset.

    realloop-collect task=arm_lift episodes=100 out=outputs/arm_lift.zarr images=true randomize=true

Each step writes the observation before it, the action, and ``next.reward``, ``next.success``, ``next.done`` and
``next.terminated`` at the step's sim time; each episode ends with its final observation, stamped one control period
after the last step (the aligned view's steps are the actions: it is no step of its own).

Hydra config: configs/collect.yaml with a task from configs/task/. Every episode is committed (atomically) as
soon as it ends, so killing the command leaves a valid dataset with the episodes done so far; running it again
appends. A progress bar shows the success rate; the run ends with a one-line summary, also saved as JSON next
to the dataset (``<out stem>.collect.json``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import realloop.sim  # noqa: F401  (registers the task ids)
from realloop.configs import CONFIG_DIR
from realloop.configs.schema import compose_checked, exit_on_config_error
from realloop.data import Dataset, DatasetLockedError, DatasetWriteError, NotADatasetError
from realloop.sim.envs.base import task_of
from realloop.sim.experts import make_expert


@dataclass
class CollectSummary:
    """What one realloop-collect run did."""

    task: str
    out: str
    episodes: int
    successes: int
    steps: int
    seconds: float
    dataset_episodes: int
    interrupted: bool = False

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    def line(self) -> str:
        return (
            f"collected {self.episodes} {self.task} episodes ({self.successes} successful, {self.success_rate:.0%}), "
            f"{self.steps} steps in {self.seconds:.1f} s -> {self.out} ({self.dataset_episodes} episodes in total)"
            + (" [interrupted]" if self.interrupted else "")
        )


# what configs/collect.yaml's defaults cannot say about its keys (realloop.configs.schema)
CONFIG_OPEN = ("task.env",)  # gym.make keyword arguments
CONFIG_BOUNDS = {"episodes": (1, None), "seed": (0, None)}
CONFIG_CHOICES = {"image_format": ("jpeg", "png", "webp")}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The collect config with hydra-style overrides, without running hydra's app (for scripts and tests); a key
    it does not have or a bad value raises :class:`~realloop.configs.schema.ConfigError` (one line)."""
    return compose_checked("collect", overrides, open=CONFIG_OPEN, bounds=CONFIG_BOUNDS, choices=CONFIG_CHOICES)


def make_task_env(task: Mapping[str, Any], images: bool, image_size: Sequence[int], randomize: bool) -> gym.Env:
    """The gymnasium env of a task config (configs/task/*.yaml)."""
    task = _plain(task)
    return gym.make(
        task["env_id"],
        cameras=list(task.get("cameras") or []) if images else [],
        image_size=tuple(image_size),
        randomize=task.get("randomize") if randomize else None,
        **task.get("env", {}),
    )


def collect(cfg: DictConfig | Mapping[str, Any], progress: bool = True) -> CollectSummary:
    """Run the scripted expert of `cfg.task` for `cfg.episodes` episodes, writing each into `cfg.out`."""
    c = _plain(cfg)
    task = c["task"]
    noise = float(c.get("action_noise") or 0.0)
    if noise < 0:
        raise ValueError(f"action_noise={noise} must be >= 0 (a fraction of one control step's motion)")
    out = Path(c["out"])
    if out.exists() and not out.is_dir():
        raise NotADatasetError(
            f"out={out} is a file, not a dataset (a directory); choose a new out= or an existing dataset to append to"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((a for a in out.parents if a.exists()), None)
        why = f"{blocker} is a file" if blocker is not None and not blocker.is_dir() else e.strerror or str(e)
        raise ValueError(f"cannot create the folder of out={out} ({why}); choose another out=") from e
    env = make_task_env(task, c["images"], c["image_size"], c["randomize"])
    u = task_of(env)
    expert = make_expert(env)
    noise_scale = noise * u.action_mode.step_scale()
    spec = u.robot.spec
    attributes = {"env_id": task["env_id"], "control_mode": u.action_mode.name, "collect_config": c}
    robot = yaml.safe_load(spec.source.read_text()) if spec.source else {"name": spec.name}
    ds = Dataset.create(out, u.dataset_features(c["image_format"]), robot=robot, attributes=attributes, exist_ok=True)
    first = len(ds)
    summary = CollectSummary(task["name"], str(out), 0, 0, 0, 0.0, first)
    start = time.perf_counter()
    bar = tqdm(range(c["episodes"]), desc=f"collect {task['name']}", unit="ep", disable=not progress)
    writer = None
    try:
        for k in bar:
            seed = int(c["seed"]) + first + k
            obs, info = env.reset(seed=seed)
            expert.reset(np.random.default_rng(seed))
            writer = ds.begin_episode(
                task=u.task_description, source="scripted", robot=spec.name, sim_params=u.sim_params or None,
                seed=seed, env_id=task["env_id"], control_mode=u.action_mode.name, action_noise=noise,
            )  # fmt: skip
            noise_rng = np.random.default_rng([seed, 1])  # its own stream: the expert's draws stay the same
            steps, done = 0, False
            while not done:
                action = expert.act(obs)
                executed = action + noise_rng.normal(size=action.shape) * noise_scale if noise else action
                next_obs, reward, terminated, truncated, info = env.step(executed.astype(action.dtype))
                t = steps * u.robot.control_dt
                for name, value in obs.items():
                    writer.add(name, t, value)
                writer.add("action", t, action)
                writer.add("next.reward", t, reward)
                writer.add("next.success", t, info["is_success"])
                writer.add("next.done", t, terminated or truncated)
                writer.add("next.terminated", t, terminated)
                obs, steps, done = next_obs, steps + 1, terminated or truncated
            for name, value in obs.items():  # the final observation, one control period after the last step
                writer.add(name, steps * u.robot.control_dt, value)
            success = bool(info["is_success"])
            if success or c["keep_failures"]:
                writer.commit(success=success)
                summary.dataset_episodes += 1
            else:
                writer.discard()
            writer = None
            summary.episodes += 1
            summary.successes += success
            summary.steps += steps
            bar.set_postfix(success=f"{summary.success_rate:.0%}")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if writer is not None and not writer.closed:
            writer.discard()
        bar.close()
        ds.close()
        env.close()
        summary.seconds = round(time.perf_counter() - start, 2)
    report = {**asdict(summary), "success_rate": summary.success_rate}
    out.with_suffix(".collect.json").write_text(json.dumps(report, indent=2))
    return summary


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="collect")
def _app(cfg: DictConfig) -> None:
    try:
        summary = collect(cfg)
    except (NotADatasetError, DatasetLockedError, DatasetWriteError, FileExistsError, ValueError) as e:
        print(f"realloop-collect: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(summary.line())
    print(f"summary: {Path(summary.out).with_suffix('.collect.json')}")
    if summary.interrupted:
        sys.exit(130)


def main() -> None:
    """Console entry point (hydra parses `key=value` overrides from sys.argv, checked first: exit code 2 and one
    line for a config error)."""
    exit_on_config_error("realloop-collect", compose_config)
    _app()


if __name__ == "__main__":
    main()
