"""realloop-eval: roll out a trained policy in a gymnasium environment and report how well it does.

    realloop-eval checkpoint=outputs/train/diffusion episodes=100 num_envs=8 videos=2

Hydra config: configs/eval.yaml. ``env=auto`` (the default) rebuilds the environment the training data was
recorded in (realloop-collect's task, control mode, cameras, image size, randomisation) from the checkpoint;
any other gymnasium id works too, with an observation map (``obs_map=``, see :mod:`realloop.policies.obs_map`)
when its observations are not keyed by the policy's feature names. What ``auto`` reads from the checkpoint must
name one of realloop's tasks, with plain-data kwargs, since gymnasium would import the module of a
``module:Env`` id; an id typed as ``env=`` is the user's own and may be any gymnasium id, ``module:Env`` included.

Episode ``k`` always starts from reset seed ``seed + k`` and runs to its end whatever ``num_envs`` is, so a
deterministic policy gets the same per-episode results with 1 or 8 envs (up to the float rounding of batched
inference: a batch of 3 goes through other BLAS kernels than a batch of 1), and short episodes are not
over-represented (an env that finishes early takes the next episode index, never an extra episode). A
stochastic policy (diffusion) is reproducible for a given ``num_envs``; its sampling noise depends on which
envs share a prediction batch.

The CLI prints a one-line summary and writes ``<checkpoint>/eval/<env id>.json`` (config, checkpoint and
:meth:`EvalResult.to_dict`), with videos of the first ``videos`` episodes in ``<checkpoint>/eval/<env id>/``.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from omegaconf import DictConfig
from tqdm import tqdm

from realloop.configs import CONFIG_DIR
from realloop.configs.schema import compose_checked, exit_on_config_error, to_plain
from realloop.policies.agent import PolicyAgent
from realloop.policies.chunk_policy import ChunkPolicy
from realloop.policies.obs_map import ObsMap, check_mapped, default_obs_map, load_obs_map

IMAGES = "observation.images."
VIDEO_NAME = re.compile(r"episode_\d+_(success|failure|unknown)\.mp4")


class EvalError(ValueError):
    """Bad input to an evaluation: unknown env id, env kwargs it rejects, an action space that does not fit."""


# -- results --------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """What an evaluation measured. ``per_episode`` holds one dict per episode (episode, seed, success, return,
    length, info, video); ``info_metrics`` the means of the final-step numeric info values."""

    env: str
    episodes: int
    success_rate: float | None
    mean_return: float
    std_return: float
    mean_length: float
    info_metrics: dict[str, float]
    per_episode: list[dict[str, Any]]
    seconds: float
    steps_per_s: float
    videos: list[str] = field(default_factory=list)
    success_key: str = "is_success"
    seed: int = 0
    num_envs: int = 1

    @property
    def successes(self) -> int | None:
        if self.success_rate is None:
            return None
        return sum(1 for e in self.per_episode if e["success"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field, plus ``successes``."""
        return {**asdict(self), "successes": self.successes}

    def line(self) -> str:
        """The one-line summary, e.g. ``eval realloop/ArmLift-v0: 86/100 successful (86%), return ...``."""
        if self.success_rate is None:
            success = f"success not reported (no {self.success_key!r} in the env's info)"
        else:
            reported = sum(1 for e in self.per_episode if e["success"] is not None)
            success = f"{self.successes}/{reported} successful ({self.success_rate:.0%})"
        infos = "".join(f", {k} {v:.4g}" for k, v in self.info_metrics.items())
        seconds = f"{self.seconds:.0f}" if self.seconds >= 10 else f"{self.seconds:.1f}"
        return (
            f"eval {self.env}: {success}, return {self.mean_return:.4g} ± {self.std_return:.3g}, "
            f"length {self.mean_length:.1f}{infos}, {self.episodes} episodes in {seconds} s "
            f"({self.steps_per_s:.0f} steps/s)"
        )


@dataclass
class _Episode:
    """An episode being run."""

    index: int
    seed: int
    ret: float = 0.0
    length: int = 0
    success: bool | None = None
    info: dict[str, float] = field(default_factory=dict)
    video: _Video | None = None

    def result(self, video: str | None) -> dict[str, Any]:
        return {
            "episode": self.index, "seed": self.seed, "success": self.success, "return": self.ret,
            "length": self.length, "info": dict(sorted(self.info.items())), "video": video,
        }  # fmt: skip


class _Video:
    """MP4 (mp4v) of one episode, written frame by frame under a temporary name, renamed when it ends."""

    def __init__(self, folder: Path, episode: int, fps: float) -> None:
        self.folder, self.episode, self.fps = folder, episode, fps
        self.tmp = folder / f".episode_{episode:03d}.tmp.mp4"
        self.writer: Any = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, frame: Any) -> None:
        import cv2

        if frame is None:
            raise EvalError("the env's render() returned None; it does not support render_mode='rgb_array' videos")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise EvalError(f"the env renders frames of shape {frame.shape}; videos need H x W x 3 RGB frames")
        h, w = frame.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(self.fps), (w, h))
            if not self.writer.isOpened():
                raise EvalError(f"OpenCV cannot write an mp4v video to {self.tmp}")
        elif (w, h) != self.size:
            raise EvalError(f"the env rendered frames of size {self.size} then {(w, h)}; a video needs one size")
        self.writer.write(np.ascontiguousarray(frame[..., ::-1], dtype=np.uint8))  # RGB -> OpenCV's BGR
        self.frames += 1

    def finish(self, success: bool | None) -> Path:
        self.writer.release()
        tag = "unknown" if success is None else "success" if success else "failure"
        path = self.folder / f"episode_{self.episode:03d}_{tag}.mp4"
        self.tmp.replace(path)
        return path

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.tmp.unlink(missing_ok=True)


# -- environments ---------------------------------------------------------------------------------------------
def _make_env(env_id: str, kwargs: Mapping[str, Any], wrap: Callable[[gym.Env], gym.Env] | None = None) -> gym.Env:
    import realloop.sim  # noqa: F401  (registers realloop's task ids, also in async workers)

    env = gym.make(env_id, **kwargs)
    return wrap(env) if wrap is not None else env


def make_vector_env(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    num_envs: int,
    vectorization: str = "sync",
    wrap: Callable[[gym.Env], gym.Env] | None = None,
) -> Any:
    """``num_envs`` copies of ``gym.make(env_id, **env_kwargs)`` (each passed through ``wrap`` when given) without
    autoreset (evaluate resets them)."""
    import realloop.sim  # noqa: F401

    if vectorization not in ("sync", "async"):
        raise EvalError(f"vectorization must be 'sync' or 'async', not {vectorization!r}")
    fns = [functools.partial(_make_env, env_id, dict(env_kwargs), wrap)] * num_envs
    try:
        if vectorization == "sync":
            return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    except gym.error.Error as e:
        from realloop.sim.envs import TASKS

        raise EvalError(
            f"cannot make env {env_id!r}: {e}. Give a registered gymnasium id (realloop's: {', '.join(TASKS)}) or "
            "module:EnvId"
        ) from e
    except TypeError as e:  # an env constructor rejecting a keyword
        raise EvalError(f"{env_id} does not accept env_kwargs {dict(env_kwargs)}: {e}; fix env_kwargs") from e


def _render(envs: Any, ids: list[int]) -> list[Any]:
    if isinstance(envs, SyncVectorEnv):  # only the envs being recorded
        return [envs.envs[i].render() for i in ids]
    frames = envs.render()
    return [frames[i] for i in ids]


def _numeric_infos(infos: Mapping[str, Any], i: int, skip: set[str], prefix: str = "") -> dict[str, float]:
    """Env ``i``'s numeric scalar info values (nested dicts as ``outer/inner``)."""
    out: dict[str, float] = {}
    for k, v in infos.items():
        if k.startswith("_") or prefix + k in skip:
            continue
        if isinstance(v, Mapping):
            out.update(_numeric_infos(v, i, skip, f"{prefix}{k}/"))
            continue
        mask = infos.get(f"_{k}")
        arr = np.asarray(v) if isinstance(v, np.ndarray) else None
        if arr is None or arr.ndim != 1 or arr.dtype.kind not in "biuf" or mask is None or not mask[i]:
            continue
        out[prefix + k] = float(arr[i])
    return out


def _time_limit(envs: Any) -> int | None:
    try:
        spec = envs.get_attr("spec")[0]
    except Exception:  # an env without a spec attribute
        return None
    return getattr(spec, "max_episode_steps", None)


# -- evaluation -----------------------------------------------------------------------------------------------
def evaluate(
    policy: ChunkPolicy,
    env_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    episodes: int = 10,
    num_envs: int = 1,
    seed: int = 0,
    obs_map: Mapping[str, Any] | str | ObsMap | None = None,
    device: Any = None,
    videos: int = 0,
    video_dir: Path | None = None,
    max_steps: int | None = None,
    success_key: str = "is_success",
    vectorization: str = "sync",
    progress: bool = True,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` in ``num_envs`` copies of ``gym.make(env_id, **env_kwargs)``.

    Episode ``k`` resets with seed ``seed + k``. ``obs_map`` says where the policy's features come from in the
    env's observation (see :mod:`realloop.policies.obs_map`). ``videos=N`` records the first N episodes as
    MP4 files in ``video_dir`` (``render_mode="rgb_array"`` is added to the env kwargs). ``max_steps`` ends
    episodes early (default: the env's own time limit). Success is ``info[success_key]`` true at any step.
    """
    if episodes < 1:
        raise EvalError(f"episodes must be at least 1, not {episodes}")
    if max_steps is not None and max_steps < 1:
        raise EvalError(f"max_steps must be at least 1 (or None for the env's time limit), not {max_steps}")
    num_envs = max(1, min(int(num_envs), episodes))  # never more envs than episodes
    videos = max(0, min(int(videos), episodes))
    kwargs = dict(env_kwargs or {})
    if videos:
        if video_dir is None:
            raise EvalError("videos > 0 needs a video_dir to write them to")
        if kwargs.setdefault("render_mode", "rgb_array") != "rgb_array":
            raise EvalError(f"videos need render_mode='rgb_array', env_kwargs asks for {kwargs['render_mode']!r}")
        video_dir = Path(video_dir)
        video_dir.mkdir(parents=True, exist_ok=True)
    mapping = load_obs_map(obs_map)

    start = time.perf_counter()
    envs = make_vector_env(env_id, kwargs, num_envs, vectorization)
    episode_list: list[dict[str, Any] | None] = [None] * episodes
    recording: list[_Video] = []
    bar = tqdm(total=episodes, desc=f"eval {env_id}", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        space = envs.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise EvalError(f"{env_id} has a {type(space).__name__} action space; realloop's policies act in a Box")
        if tuple(space.shape) != (policy.action_dim,):
            raise EvalError(
                f"the policy's actions have shape ({policy.action_dim},) but {env_id}'s action space has shape "
                f"{tuple(space.shape)}: evaluate in the env (and control mode) the policy was trained for"
            )
        if max_steps is None and _time_limit(envs) is None:
            raise EvalError(f"{env_id} has no time limit (max_episode_steps); pass max_steps so episodes end")
        if mapping is None:
            mapping = default_obs_map(policy, envs.single_observation_space)
        where = f"{mapping.name} on {env_id}'s observation" if mapping else f"{env_id}'s observation"
        fps = float(envs.metadata.get("render_fps") or 30)
        low, high = space.low, space.high
        agent = PolicyAgent(policy, num_envs, device, seed)

        first = [_Episode(k, seed + k) for k in range(num_envs)]
        running: list[_Episode | None] = list(first)
        next_episode = num_envs
        obs, _ = envs.reset(seed=[e.seed for e in first])

        def start_videos(ids: list[int]) -> None:
            starting = [(i, ep) for i in ids if (ep := running[i]) is not None and ep.index < videos]
            for (_, ep), frame in zip(starting, _render(envs, [i for i, _ in starting]), strict=True):
                assert video_dir is not None  # checked above: videos > 0 needs one
                ep.video = video = _Video(video_dir, ep.index, fps)
                recording.append(video)
                video.add(frame)

        start_videos(list(range(num_envs)))
        skip = {success_key, "final_obs", "final_info"}
        finished, successes, reported, steps = 0, 0, 0, 0
        checked = False
        while finished < episodes:
            batch = mapping(obs) if mapping is not None else obs
            if not checked:
                check_mapped(batch, policy, num_envs, where)
                checked = True
            actions = agent.step(batch)
            if actions.shape != (num_envs, *space.shape):
                raise EvalError(f"the policy gave actions of shape {actions.shape[1:]}; {env_id} takes {space.shape}")
            obs, rewards, terminated, truncated, infos = envs.step(np.clip(actions, low, high).astype(space.dtype))

            rec = [(i, ep.video) for i, ep in enumerate(running) if ep is not None and ep.video is not None]
            for (_, clip), frame in zip(rec, _render(envs, [i for i, _ in rec]), strict=True):
                clip.add(frame)
            done = np.zeros(num_envs, dtype=bool)
            for i, ep in enumerate(running):
                if ep is None:  # idle after the last episode was handed out; must be reset to be stepped again
                    done[i] = bool(terminated[i] or truncated[i])
                    continue
                ep.ret += float(rewards[i])
                ep.length += 1
                steps += 1
                if success_key in infos and infos[f"_{success_key}"][i]:
                    ep.success = bool(ep.success) or bool(infos[success_key][i])
                ep.info.update(_numeric_infos(infos, i, skip))
                if not (terminated[i] or truncated[i] or (max_steps is not None and ep.length >= max_steps)):
                    continue
                done[i] = True
                video = None
                if ep.video is not None:
                    video = str(ep.video.finish(ep.success))
                    recording.remove(ep.video)
                episode_list[ep.index] = ep.result(video)
                finished += 1
                if ep.success is not None:
                    reported += 1
                    successes += ep.success
                bar.update(1)
                bar.set_postfix(success=f"{successes}/{reported}" if reported else "n/a", refresh=False)
                running[i] = _Episode(next_episode, seed + next_episode) if next_episode < episodes else None
                next_episode += 1
            if done.any() and finished < episodes:
                ids = [int(i) for i in np.flatnonzero(done)]
                reset_seeds = [ep.seed if done[i] and ep is not None else None for i, ep in enumerate(running)]
                obs, _ = envs.reset(seed=reset_seeds, options={"reset_mask": done})
                agent.reset(ids)
                start_videos(ids)
    finally:
        for v in recording:
            v.abort()
        bar.close()
        envs.close()
    seconds = time.perf_counter() - start

    per_episode = [e for e in episode_list if e is not None]
    returns = np.array([e["return"] for e in per_episode], dtype=np.float64)
    outcomes = [e["success"] for e in per_episode if e["success"] is not None]
    info_keys = sorted({k for e in per_episode for k in e["info"]})
    info_metrics = {k: float(np.mean([e["info"][k] for e in per_episode if k in e["info"]])) for k in info_keys}
    return EvalResult(
        env=env_id, episodes=len(per_episode),
        success_rate=float(np.mean(outcomes)) if outcomes else None,
        mean_return=float(returns.mean()), std_return=float(returns.std()),
        mean_length=float(np.mean([e["length"] for e in per_episode])), info_metrics=info_metrics,
        per_episode=per_episode, seconds=round(seconds, 3), steps_per_s=round(steps / max(seconds, 1e-9), 1),
        videos=[e["video"] for e in per_episode if e["video"]], success_key=success_key, seed=int(seed),
        num_envs=num_envs,
    )  # fmt: skip


# -- the training env of a checkpoint -------------------------------------------------------------------------
def _section(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EvalError(f"{where} is a {type(value).__name__}, not a mapping; the checkpoint's metadata is corrupted")
    return value


def env_kwargs_from_checkpoint(meta: Mapping[str, Any], where: str = "policy.json") -> tuple[str, dict[str, Any]]:
    """The env id and ``gym.make`` kwargs of the env the checkpoint's training data was recorded in (or, for a
    realloop-finetune checkpoint, its ``env`` entry: the env the learner acted in).

    From the dataset attributes realloop-collect writes: the control mode, the cameras the policy sees (its
    ``observation.images.<cam>`` features) at their image size, the task's randomisation when the data was
    randomised, and the task's env settings (max_episode_steps, ...). ``meta`` is the checkpoint's policy.json
    (``where``: its path, for errors); the id must be one of realloop's tasks and the kwargs plain data that task
    takes (:func:`~realloop.policies.checkpoint.check_env_id`), else ``UnsafeConfigError``.
    """
    from realloop.policies.checkpoint import check_env_id, check_env_kwargs

    if meta.get("env") is not None:  # the env a learner acted in (realloop-finetune), id and kwargs as given
        env = _section(meta["env"], f"{where} (env)")
        given = dict(_section(env.get("kwargs"), f"{where} (env.kwargs)"))
        return check_env_id(env.get("id"), f"{where} (env.id)"), check_env_kwargs(given, f"{where} (env.kwargs)")
    dataset = meta.get("dataset") or {}
    attrs = dataset.get("attributes") or {}
    env_id = attrs.get("env_id")
    if not env_id:
        raise EvalError(
            f"the checkpoint's dataset ({dataset.get('path', 'unknown path')}) does not record the env it came from "
            "(no env_id attribute); name the env to evaluate in with env=<gymnasium id>"
        )
    # the dataset's attributes, copied unchecked into the checkpoint: checked before gym.make sees them
    env_id = check_env_id(env_id, f"{where} (dataset.attributes.env_id)")
    collect = _section(attrs.get("collect_config"), f"{where} (dataset.attributes.collect_config)")
    task = _section(collect.get("task"), f"{where} (dataset.attributes.collect_config.task)")
    kwargs: dict[str, Any] = dict(_section(task.get("env"), f"{where} (dataset.attributes.collect_config.task.env)"))
    if attrs.get("control_mode"):
        kwargs["control_mode"] = attrs["control_mode"]
    features = meta.get("features") or {}
    cameras = [k[len(IMAGES) :] for k in features if k.startswith(IMAGES)]
    if cameras:
        kwargs["cameras"] = cameras
        shape = features[f"{IMAGES}{cameras[0]}"].get("shape")
        kwargs["image_size"] = list(shape[:2]) if shape else list(collect.get("image_size") or [96, 96])
    if collect.get("randomize") and task.get("randomize"):
        kwargs["randomize"] = task["randomize"]
    return env_id, check_env_kwargs(kwargs, f"{where} (env kwargs from dataset.attributes)")


# -- the CLI --------------------------------------------------------------------------------------------------
# what configs/eval.yaml's defaults cannot say about its keys (realloop.configs.schema)
CONFIG_OPEN = ("env_kwargs", "obs_map")
CONFIG_TYPES = {
    "checkpoint": "str|null",
    "max_steps": "int|null",
    "num_inference_steps": "int|null",
    "n_action_steps": "int|null",
    "out": "str|null",
    "progress": "bool|str",
}
CONFIG_BOUNDS = {
    "episodes": (1, None),
    "num_envs": (1, None),
    "seed": (0, None),
    "videos": (0, None),
    "max_steps": (1, None),
    "num_inference_steps": (1, None),
    "n_action_steps": (1, None),
}
CONFIG_CHOICES = {"vectorization": ("sync", "async"), "progress": ("auto", True, False)}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The eval config with hydra-style overrides, without running hydra's app (for scripts and tests); a key
    it does not have or a bad value raises :class:`~realloop.configs.schema.ConfigError` (one line)."""
    return compose_checked(
        "eval", overrides, open=CONFIG_OPEN, types=CONFIG_TYPES, bounds=CONFIG_BOUNDS, choices=CONFIG_CHOICES
    )


def _slug(env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", env_id)


def run(cfg: DictConfig | Mapping[str, Any]) -> tuple[EvalResult, Path]:
    """Evaluate the checkpoint of an eval config (configs/eval.yaml); returns the result and the JSON's path."""
    from realloop.policies.base import set_inference
    from realloop.policies.checkpoint import load_policy
    from realloop.policies.train import pick_device

    c: dict[str, Any] = to_plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    if not c.get("checkpoint"):
        raise EvalError("no checkpoint given: pass checkpoint=<run folder of realloop-train or a checkpoint folder>")
    try:
        device = pick_device(str(c.get("device") or "auto"))
    except RuntimeError as e:  # CUDA asked for but absent
        raise EvalError(str(e)) from e
    loaded = load_policy(c["checkpoint"], device)
    policy = loaded.policy
    try:
        set_inference(policy, c.get("num_inference_steps"), c.get("n_action_steps"))
    except ValueError as e:
        raise EvalError(str(e)) from e

    from realloop.sim.envs import TASKS

    env_id = str(c.get("env") or "auto")
    kwargs: dict[str, Any] = {}
    recorded = (loaded.meta.get("env") or {}).get("id") or (
        ((loaded.meta.get("dataset") or {}).get("attributes") or {}).get("env_id")
    )
    # the training env, as it was recorded (checked: it comes from a file); any other id the user typed is theirs,
    # a 'module:Env' one included, and gets no kwargs from the checkpoint
    if env_id == "auto" or (env_id == recorded and env_id in TASKS):
        env_id, kwargs = env_kwargs_from_checkpoint(loaded.meta, str(loaded.path / "policy.json"))
    kwargs.update(c.get("env_kwargs") or {})

    out = Path(c["out"]) if c.get("out") else loaded.path / "eval" / f"{_slug(env_id)}.json"
    video_dir = out.parent / out.stem
    if int(c.get("videos") or 0) > 0 and video_dir.is_dir():
        for old in video_dir.iterdir():  # a previous run's videos would mix with these
            if VIDEO_NAME.fullmatch(old.name):
                old.unlink()
    progress = c.get("progress", "auto")
    result = evaluate(
        policy, env_id, env_kwargs=kwargs, episodes=int(c["episodes"]), num_envs=int(c["num_envs"]),
        seed=int(c["seed"]), obs_map=c.get("obs_map"), device=device, videos=int(c.get("videos") or 0),
        video_dir=video_dir, max_steps=c.get("max_steps"), success_key=str(c.get("success_key") or "is_success"),
        vectorization=str(c.get("vectorization") or "sync"),
        progress=sys.stderr.isatty() if progress == "auto" else bool(progress),
    )  # fmt: skip
    report = {
        "checkpoint": str(loaded.path), "step": loaded.meta.get("step"), "policy": loaded.meta.get("policy_name"),
        "config": c, "env_id": env_id, "env_kwargs": kwargs, "result": result.to_dict(),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return result, out


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="eval")
def _app(cfg: DictConfig) -> None:
    try:
        result, out = run(cfg)
    except (ValueError, FileNotFoundError, gym.error.Error) as e:  # EvalError, ObsMapError, CheckpointError, ...
        print(f"realloop-eval: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyError as e:  # e.g. a policy feature the env's observation lacks
        print(f"realloop-eval: error: {e.args[0] if e.args else e}", file=sys.stderr)
        sys.exit(2)
    print(result.line())
    print(f"results: {out}" + (f", videos: {out.parent / out.stem}" if result.videos else ""))


def _check_obs_map_arg(argv: list[str]) -> str | None:
    """Why an ``obs_map=`` argument cannot work, if it cannot: hydra reads configs/obs_map/ as a config group, so
    ``obs_map=<value>`` must name a file there or be an inline mapping (hydra would fail with a traceback-like
    report otherwise)."""
    from realloop.policies.obs_map import OBS_MAP_DIR

    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+") != "obs_map" or value.strip().startswith("{") or value in ("", "null"):
            continue
        if not (OBS_MAP_DIR / f"{value}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in OBS_MAP_DIR.glob("*.yaml"))) or "none"
            return (
                f"obs_map={value} is not a file in configs/obs_map/ (it has: {known}); put the YAML file there and "
                "pass its name, or give the map inline: obs_map={observation.state: {source: agent_pos}}"
            )
    return None


def main() -> None:
    """Console entry point (hydra parses ``key=value`` overrides from sys.argv)."""
    problem = _check_obs_map_arg(sys.argv[1:])
    if problem:
        print(f"realloop-eval: error: {problem}", file=sys.stderr)
        sys.exit(2)
    exit_on_config_error("realloop-eval", compose_config)
    _app()


if __name__ == "__main__":
    main()
