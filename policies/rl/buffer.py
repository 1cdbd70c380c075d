"""The replay buffer of actor-critic learning: recorded episodes (offline) and the learner's own (online).

>>> buf = ReplayBuffer(["observation.state"], datasets=["demos.zarr"], online_path="run/online.zarr")
>>> buf.add(obs, action, reward, terminated, truncated, next_obs)  # actor thread, one env step
>>> batch = buf.sample(256)  # learner thread: half offline, half online (RLPD)

**Offline part.** Episodes of one or more datasets, read once into memory through the aligned view: the steps are
the ``action`` samples (no ``rate``: collected sim data, one clock), or ``t0, t0 + 1/rate, ...`` up to the last
action (``rate``: robot recordings, as :class:`realloop.data.training.WindowDataset`). Per step: the chosen
observations, the action, the reward (``next.reward`` as recorded, ``rewards="success"`` for 1.0 where
``next.success`` else 0.0, or a callable), and whether the step ended the episode in a terminal state
(``next.terminated``) or cut it short (truncated: the episode's last step when not terminated). The next
observation of the last step is the episode's final observation (the sample recorded after the last action).

**Online part.** A ring of ``capacity`` observation slots filled by :meth:`ReplayBuffer.add` one transition at a
time; the oldest are overwritten first. Every ended episode (terminated or truncated) is committed to the dataset at
``online_path`` (``source: policy``, the buffer's observations, ``action``, ``next.reward``, ``next.success`` when
given, ``next.done``, ``next.terminated`` and the final observation), so a killed run loses at most the episodes in
progress; a buffer opened on that path again reloads the newest episodes that fit into its ring. Several parallel
envs add through their ``env`` index, each with its episode in progress.

**Storage.** Both parts hold observation *slots*: one per step and one more per episode for its final observation
(the online ring's ``capacity`` counts both). A step's slot holds its observation, action, reward, terminated and
truncated flags, and the slot of the next observation. Images are fitted to ``image_size`` with
:func:`realloop.data.images.fit_image` (the policy runner's rule) and kept as uint8, ``(C, H, W)`` (``image_layout=
"chw"``) or ``(H, W, C)``; other observations as float32.

**Batches** (:meth:`ReplayBuffer.sample`), dicts of CPU torch tensors:

- ``observation``: ``{key: (B, *shape) float32}``; images ``(B, C, H, W) uint8`` (0-255: the learner scales them);
- ``action``: ``(B, A) float32``, or ``(B, H, A)`` with ``action_chunk=H`` (then ``action_is_pad``: ``(B, H)`` bool,
  True where the chunk ran past the episode's end and repeats its last action);
- ``reward``: ``(B,) float32``, the discounted sum of the rewards of the ``k`` steps the transition spans;
- ``discount``: ``(B,) float32``, ``gamma**k * (1 - terminated)``: what multiplies the bootstrapped value;
- ``next_observation``: as ``observation``, ``k`` steps later;
- ``online``: ``(B,) bool``, True for transitions of the online ring;
- ``succeeded``: ``(B,) bool``, the transition's episode reached success (``next.success`` at some step; online:
  False until the episode ends);
- ``mc_return``: ``(B,) float32``, the discounted return from the step to its episode's end (Cal-QL's Monte Carlo
  return; NaN for online steps of an episode that has not ended).

A transition spans ``k = n_step`` steps (``action_chunk`` when chunking), fewer where its episode ends (terminated
or truncated) or, online, where the newest step of an episode in progress is reached.

Adding (actor threads) and sampling (learner thread) may run at the same time: the ring is guarded by a lock.
Nothing is pickled; :meth:`ReplayBuffer.state_dict` is plain JSON.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from realloop.data.align import last_at_or_before
from realloop.data.dataset import Dataset
from realloop.data.episode import Episode
from realloop.data.images import fit_image
from realloop.data.schema import IMAGE_PREFIX, Feature

REWARD, SUCCESS, DONE, TERMINATED = "next.reward", "next.success", "next.done", "next.terminated"
NEXT_KEYS = (REWARD, SUCCESS, DONE, TERMINATED)
STATE_VERSION = 1

RewardFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class MissingFieldError(ValueError):
    """A dataset lacks what reinforcement learning needs (a stream, a final observation); the message (one line)
    names the field, the dataset and the fix."""


# ------------------------------------------------------------------------------------------------ observations


@dataclass(frozen=True)
class _ObsSpec:
    """How one observation key is stored: its shape per slot and dtype (uint8 images, float32 otherwise)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def is_image(self) -> bool:
        return self.dtype == np.uint8


class _ObsFormat:
    """Turns observations as recorded or as an env gives them (images ``H x W [x C]`` uint8) into stored rows."""

    def __init__(self, keys: Sequence[str], image_size: tuple[int, int] | None, layout: str) -> None:
        self.keys = list(keys)
        self.image_size = image_size
        self.layout = layout

    def images(self, frames: np.ndarray) -> np.ndarray:
        """``(N, H, W[, C])`` uint8 frames -> ``(N, *stored shape)`` uint8."""
        if frames.ndim == 3:
            frames = frames[..., None]
        if self.image_size is not None and len(frames):
            frames = np.stack([fit_image(f, self.image_size) for f in frames])
        if self.layout == "chw":
            frames = frames.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def rows(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One observation dict (an env's) -> ``{key: (1, *stored shape)}``."""
        out = {}
        for key in self.keys:
            if key not in obs:
                raise KeyError(f"the observation has no {key!r}; it has {sorted(obs)}")
            value = np.asarray(obs[key])
            if key.startswith(IMAGE_PREFIX):
                out[key] = self.images(value[None])
            else:
                out[key] = value.astype(np.float32, copy=False)[None]
        return out


def _specs_of(rows: Mapping[str, np.ndarray]) -> dict[str, _ObsSpec]:
    return {k: _ObsSpec(tuple(v.shape[1:]), np.dtype(v.dtype)) for k, v in rows.items()}


def _check(
    shapes: tuple[Mapping[str, _ObsSpec], tuple[int, ...]],
    rows: Mapping[str, np.ndarray],
    action: np.ndarray,
    where: str,
) -> None:
    """Raise a clear error unless observations ``{key: (N, *shape)}`` and actions ``(N, A)`` have these shapes."""
    specs, action_shape = shapes
    for key, spec in specs.items():
        got = tuple(rows[key].shape[1:])
        if got != spec.shape:
            hint = " (pass image_size=[H, W] to fit every frame to one size)" if spec.is_image else ""
            raise ValueError(f"{key} of {where} has shape {got}, the buffer holds {spec.shape}{hint}")
    if tuple(action.shape[1:]) != action_shape:
        raise ValueError(f"the actions of {where} have shape {action.shape[1:]}, the buffer holds {action_shape}")


# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class _EpisodeData:
    """One episode of T transitions: T + 1 observations (the last one final), T actions, rewards and flags."""

    obs: dict[str, np.ndarray]  # key -> (T + 1, *stored shape)
    action: np.ndarray  # (T, A) float32
    reward: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    succeeded: bool  # the episode reached success at some step

    def __len__(self) -> int:
        return len(self.action)


def _read_episode(
    ep: Episode,
    where: str,
    fmt: _ObsFormat,
    rate: float | None,
    rewards: str | RewardFn,
    terminals: str,
    missing_final: str,
) -> _EpisodeData | None:
    """The transitions of one recorded episode (see the module doc); None when it has none."""
    have = set(ep.stream_names)
    for key in [*fmt.keys, "action"]:
        if key not in have:
            raise MissingFieldError(f"episode {ep.index} of {where} has no stream {key!r} (it has {sorted(have)})")
    keys = [*fmt.keys, "action", *(k for k in NEXT_KEYS if k in have)]
    view = ep.aligned(rate, keys=keys, reference="action")
    n = len(view)
    if n == 0:
        return None

    # observations at the steps, then the final one: the first sample after the last step (with a rate, the one
    # the alignment rule gives a step later when there is one)
    values = {k: ep.stream(k).read() for k in keys if not k.startswith(IMAGE_PREFIX)}  # numeric streams, whole
    numeric = {k: np.asarray(v[view.indices[k]]) for k, v in values.items()}  # at the steps
    obs: dict[str, np.ndarray] = {}
    has_final = True
    for key in fmt.keys:
        stream = ep.stream(key)
        idx = view.indices[key]
        final = int(idx[-1]) + 1
        if rate is not None:
            final = max(final, int(last_at_or_before(stream.timestamps, view.times[-1] + 1.0 / rate)))
        if final >= len(stream):
            has_final, final = False, int(idx[-1])
        rows = np.append(idx, final)
        if stream.feature.is_image:
            used, inverse = np.unique(rows, return_inverse=True)
            obs[key] = fmt.images(stream.take(used))[inverse.reshape(-1)]
        else:
            obs[key] = np.asarray(values[key][rows], dtype=np.float32)
    action = numeric["action"].astype(np.float32)

    def scalars(key: str, fix: str) -> np.ndarray:
        if key not in numeric:
            raise MissingFieldError(f"episode {ep.index} of {where} has no stream {key!r}; {fix}")
        return numeric[key].reshape(n, -1)[:, 0]

    recollect = "collect the data again with realloop-collect (which writes it)"
    if callable(rewards):
        steps = {**numeric, **{f"next.{k}": v[1:] for k, v in obs.items() if k in numeric}}
        reward = np.asarray(rewards(steps), dtype=np.float32).reshape(-1)
        if reward.shape != (n,):
            raise ValueError(f"the rewards function returned {reward.shape[0]} rewards for the {n} steps of {where}")
    elif rewards == "success":
        reward = scalars(SUCCESS, f"{recollect}, or give rewards as a function of the steps").astype(bool)
        reward = reward.astype(np.float32)
    else:
        reward = scalars(REWARD, f"{recollect}, or pass rewards='success' (1.0 where next.success)").astype(np.float32)

    terminated = np.zeros(n, dtype=bool)
    if terminals == "success":
        succeeded = bool(numeric[SUCCESS].reshape(n, -1)[-1, 0]) if SUCCESS in numeric else ep.success is True
        terminated[-1] = succeeded
    else:
        fix = f"{recollect}, or pass terminals='success' (an episode ends in a terminal state when it succeeded)"
        terminated = scalars(TERMINATED, fix).astype(bool)
    truncated = np.zeros(n, dtype=bool)
    truncated[-1] = not terminated[-1]

    if not has_final and truncated[-1]:  # its next observation is unknown: there is nothing to bootstrap from
        if missing_final != "drop":
            raise MissingFieldError(
                f"episode {ep.index} of {where} has no final observation after its last step, which is truncated "
                f"(recorded before the final observation was written): {recollect}, or pass missing_final='drop' "
                "to leave each such last transition out"
            )
        n -= 1  # the last step's observation becomes the final one
        if n == 0:
            return None
        obs = {k: v[:-1] for k, v in obs.items()}
        action, reward, terminated = action[:n], reward[:n], terminated[:n]
        truncated = np.zeros(n, dtype=bool)
        truncated[-1] = not terminated[-1]
    succeeded = bool(np.any(numeric[SUCCESS])) if SUCCESS in numeric else ep.success is True
    return _EpisodeData(obs, action, reward, terminated, truncated, succeeded)


def _returns(reward: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return from each step to the end: ``G_t = r_t + gamma * G_{t+1}``."""
    out = np.empty(len(reward), dtype=np.float32)
    g = 0.0
    for t in range(len(reward) - 1, -1, -1):
        g = float(reward[t]) + gamma * g
        out[t] = g
    return out


# ------------------------------------------------------------------------------------------------ slots


class _Slots:
    """Observation slots (see the module doc). ``step[s]``: slot ``s`` holds a transition; ``succ[s]``: the slot
    of its next observation; ``seq[s]``: when ``s`` was last written (allocation order, for the online ring);
    ``succeeded[s]``: its episode reached success."""

    def __init__(self, size: int, specs: Mapping[str, _ObsSpec], action_shape: tuple[int, ...]) -> None:
        self.specs = dict(specs)
        self.action_shape = action_shape
        self.obs = {k: np.zeros((size, *s.shape), dtype=s.dtype) for k, s in specs.items()}
        self.action = np.zeros((size, *action_shape), dtype=np.float32)
        self.reward = np.zeros(size, dtype=np.float32)
        self.terminated = np.zeros(size, dtype=bool)
        self.truncated = np.zeros(size, dtype=bool)
        self.mc_return = np.full(size, np.nan, dtype=np.float32)
        self.succeeded = np.zeros(size, dtype=bool)
        self.succ = np.full(size, -1, dtype=np.int64)
        self.step = np.zeros(size, dtype=bool)
        self.seq = np.full(size, -1, dtype=np.int64)

    def check(self, rows: Mapping[str, np.ndarray], action: np.ndarray, where: str) -> None:
        """Raise a clear error unless observations ``{key: (N, *shape)}`` and actions ``(N, A)`` fit the slots."""
        _check((self.specs, self.action_shape), rows, action, where)

    def write_episode(self, slots: np.ndarray, ep: _EpisodeData, gamma: float) -> None:
        """Write an episode's T transitions and final observation into ``slots`` (T + 1 of them, in order)."""
        steps, final = slots[:-1], slots[-1]
        for key, values in ep.obs.items():
            self.obs[key][slots] = values
        self.action[steps] = ep.action
        self.reward[steps] = ep.reward
        self.terminated[steps] = ep.terminated
        self.truncated[steps] = ep.truncated
        self.mc_return[steps] = _returns(ep.reward, gamma)
        self.mc_return[final] = np.nan
        self.succeeded[slots] = ep.succeeded
        self.succ[steps] = slots[1:]
        self.succ[final] = -1
        self.step[final] = False
        self.step[steps] = True


def _transitions(slots: _Slots, first: np.ndarray, n_step: int, chunk: int, gamma: float) -> dict[str, Any]:
    """The transitions that start at the step slots ``first``: they span up to ``max(n_step, chunk)`` steps,
    stopping after a terminated or truncated step or where the next slot holds no step (a final observation, or
    the newest observation of an episode in progress)."""
    horizon = max(n_step, chunk)
    batch = len(first)
    ret = np.zeros(batch, dtype=np.float64)  # discounted sum of the rewards so far
    scale = np.ones(batch, dtype=np.float64)  # gamma ** (steps summed so far)
    terminal = np.zeros(batch, dtype=bool)
    live = np.ones(batch, dtype=bool)  # the walk has not reached its episode's end
    actions = np.empty((batch, chunk, *slots.action_shape), dtype=np.float32)
    is_pad = np.zeros((batch, chunk), dtype=bool)
    cur = first.copy()  # the step being summed (ended rows stay on their episode's last step)
    nxt = slots.succ[first]  # the slot of the next observation
    for m in range(horizon):
        if m < chunk:
            actions[:, m] = slots.action[cur]  # past the end: the episode's last action again
            is_pad[:, m] = ~live
        ret += np.where(live, scale * slots.reward[cur], 0.0)
        scale = np.where(live, scale * gamma, scale)
        terminal |= live & slots.terminated[cur]
        following = slots.succ[cur]
        nxt = np.where(live, following, nxt)
        ends = slots.terminated[cur] | slots.truncated[cur] | ~slots.step[following]
        live &= ~ends
        cur = np.where(live, following, cur)
    out = {
        "observation": {k: v[first] for k, v in slots.obs.items()},
        "next_observation": {k: v[nxt] for k, v in slots.obs.items()},
        "action": actions if chunk > 1 else actions[:, 0],
        "reward": ret.astype(np.float32),
        "discount": (scale * ~terminal).astype(np.float32),
        "mc_return": slots.mc_return[first],
        "succeeded": slots.succeeded[first],
    }
    if chunk > 1:
        out["action_is_pad"] = is_pad
    return out


# ------------------------------------------------------------------------------------------------ online ring


@dataclass
class _EnvEpisode:
    """The episode in progress of one env: its newest observation's slot, its steps, and what goes to disk."""

    pending: int = -1  # slot of the env's current observation (the last next_obs), -1: none
    pending_seq: int = -1
    steps: list[tuple[int, int]] = field(default_factory=list)  # (slot, seq) of each step
    rewards: list[float] = field(default_factory=list)
    obs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # as given (for the dataset), T + 1 each
    actions: list[np.ndarray] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    success: list[bool | None] = field(default_factory=list)


class _Ring(_Slots):
    """The online slots: allocated in a ring, the oldest overwritten first. A step's next-observation slot is
    always allocated after the step's own, so it outlives it: every stored step's successor is valid."""

    def __init__(self, capacity: int, specs: Mapping[str, _ObsSpec], action_shape: tuple[int, ...]) -> None:
        super().__init__(capacity, specs, action_shape)
        self.capacity = capacity
        self.head = 0  # the next slot to write
        self.size = 0  # slots written, up to capacity
        self.next_seq = 0

    def allocate(self, count: int = 1) -> np.ndarray:
        slots = (self.head + np.arange(count)) % self.capacity
        self.step[slots] = False
        self.succ[slots] = -1
        self.mc_return[slots] = np.nan
        self.succeeded[slots] = False
        self.seq[slots] = self.next_seq + np.arange(count)
        self.next_seq += count
        self.head = int((self.head + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)
        return slots

    def holds(self, slot: int, seq: int) -> bool:
        """Whether ``slot`` still holds what was written at ``seq`` (and is not the next to be overwritten)."""
        if slot < 0 or self.seq[slot] != seq:
            return False
        return not (self.size == self.capacity and slot == self.head)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` step slots, uniformly."""
        out = np.empty(0, dtype=np.int64)
        for _ in range(8):  # rejection: almost every slot holds a step
            cand = rng.integers(0, self.size, size=2 * count + 8)
            out = np.concatenate([out, cand[self.step[cand]]])
            if len(out) >= count:
                return out[:count]
        steps = np.flatnonzero(self.step[: self.size])
        return rng.choice(steps, size=count)

    @property
    def n_steps(self) -> int:
        return int(np.count_nonzero(self.step[: self.size]))


# ------------------------------------------------------------------------------------------------ the buffer


class ReplayBuffer:
    """Offline episodes from datasets and an online ring backed by a dataset (see the module doc).

    Args:
        obs_keys: the observation features to hold (state vectors and ``observation.images.<camera>``).
        datasets: paths of the offline datasets, read once at construction.
        capacity: observation slots of the online ring (one per step, one more per ended episode).
        online_path: dataset that every ended online episode is committed to, and reloaded from when it
            exists (resume). None: online episodes live in memory only.
        online_ratio: fraction of each batch from the online ring when both parts hold steps (RLPD: 0.5).
        gamma: discount per step.
        n_step: steps per transition (n-step returns, cut at episode ends).
        action_chunk: H > 1 samples chunks of the next H actions; a transition then spans H steps (``n_step``
            must be 1 or H).
        rewards: offline rewards: ``"recorded"`` (``next.reward``), ``"success"`` (1.0 where ``next.success``, else
            0.0), or a function of one episode's steps ``{key: (T, ...)}``, holding the numeric streams aligned to
            the steps (observations, ``action``, ``next.*``) and ``"next." + key`` for each numeric observation one
            step later, that returns the T rewards. Online steps keep the reward given to :meth:`add`.
        terminals: offline terminal steps: ``"recorded"`` (``next.terminated``) or ``"success"`` (an episode's
            last step is terminal when it succeeded: ``next.success`` there, else the episode's success).
        missing_final: an offline episode without a final observation whose last step is truncated:
            ``"error"`` (:class:`MissingFieldError`) or ``"drop"`` (leave that last transition out).
        rate: aligned-view rate (Hz) for the offline datasets (robot recordings); None: the steps are the actions.
        image_size: (H, W) every frame is fitted to (offline and online); None keeps the recorded size.
        image_layout: ``"chw"`` or ``"hwc"``, how frames are held (batches are always ``(B, C, H, W)``).
        online_features: features of a new online dataset; default: from the first episode added (names and
            units taken from the offline datasets' features).
        step_dt: seconds between the stamps of online steps; default: the offline action feature's rate, else 1.
        task: task text of the online episodes.
        seed: seed of the generator :meth:`sample` uses when given none.
        progress: show a progress bar while reading the datasets.
    """

    def __init__(
        self,
        obs_keys: Sequence[str],
        datasets: Sequence[str | os.PathLike[str]] = (),
        *,
        capacity: int = 1_000_000,
        online_path: str | os.PathLike[str] | None = None,
        online_ratio: float = 0.5,
        gamma: float = 0.99,
        n_step: int = 1,
        action_chunk: int = 1,
        rewards: str | RewardFn = "recorded",
        terminals: str = "recorded",
        missing_final: str = "error",
        rate: float | None = None,
        image_size: Sequence[int] | None = None,
        image_layout: str = "chw",
        online_features: Mapping[str, Any] | None = None,
        step_dt: float | None = None,
        task: str = "",
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if not obs_keys:
            raise ValueError("obs_keys is empty: name the observation features to hold")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 slots, got {capacity}")
        if not 0.0 <= online_ratio <= 1.0:
            raise ValueError(f"online_ratio must be in [0, 1], got {online_ratio}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if n_step < 1 or action_chunk < 1:
            raise ValueError(f"n_step and action_chunk must be at least 1, got {n_step} and {action_chunk}")
        if action_chunk > 1 and n_step not in (1, action_chunk):
            raise ValueError(f"with action_chunk={action_chunk} a transition spans the chunk: n_step must be 1 or it")
        if not callable(rewards) and rewards not in ("recorded", "success"):
            raise ValueError(f"rewards must be 'recorded', 'success' or a function, got {rewards!r}")
        if terminals not in ("recorded", "success"):
            raise ValueError(f"terminals must be 'recorded' or 'success', got {terminals!r}")
        if missing_final not in ("error", "drop"):
            raise ValueError(f"missing_final must be 'error' or 'drop', got {missing_final!r}")
        if image_layout not in ("chw", "hwc"):
            raise ValueError(f"image_layout must be 'chw' or 'hwc', got {image_layout!r}")
        if image_size is not None and (len(image_size) != 2 or min(int(v) for v in image_size) < 1):
            raise ValueError(f"image_size must be [height, width] in pixels, got {list(image_size)}")
        self.obs_keys = list(obs_keys)
        self.capacity = int(capacity)
        self.online_ratio = float(online_ratio)
        self.gamma = float(gamma)
        self.n_step = int(n_step)
        self.action_chunk = int(action_chunk)
        self.rate = rate
        self.task = task
        self._fmt = _ObsFormat(
            self.obs_keys, None if image_size is None else (int(image_size[0]), int(image_size[1])), image_layout
        )
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # the ring and the env episodes
        self._disk_lock = threading.Lock()  # the online dataset
        self._envs: dict[int, _EnvEpisode] = {}
        self._ring: _Ring | None = None
        self._added = 0
        self._committed = 0
        self._closed = False

        self.features: dict[str, Feature] = {}  # of the first dataset that has each key
        self.offline: _Slots | None = None
        self._offline_steps = np.empty(0, dtype=np.int64)
        self._robot: dict[str, Any] | None = None
        self._load_offline([Path(p) for p in datasets], rewards, terminals, missing_final, progress)

        self.online_path = None if online_path is None else Path(online_path)
        self._online_features = dict(online_features) if online_features is not None else None
        self._online: Dataset | None = None
        action = self.features.get("action")
        self.step_dt = float(step_dt or (1.0 / action.rate_hz if action is not None and action.rate_hz else 1.0))
        if self.online_path is not None:
            self._open_online()

    # -- offline ------------------------------------------------------------------------------------------------
    def _load_offline(
        self, paths: list[Path], rewards: str | RewardFn, terminals: str, missing_final: str, progress: bool
    ) -> None:
        episodes: list[_EpisodeData] = []
        shapes: tuple[dict[str, _ObsSpec], tuple[int, ...]] | None = None  # the first episode's
        for path in paths:
            with Dataset.open(path, mode="r") as ds:
                missing = [k for k in [*self.obs_keys, "action"] if k not in ds.features]
                if missing:
                    raise MissingFieldError(f"dataset {path} has no features {missing}; it has {sorted(ds.features)}")
                for k in [*self.obs_keys, "action"]:
                    self.features.setdefault(k, ds.features[k])
                self._robot = self._robot or ds.robot
                for ep in tqdm(ds.episodes(), total=len(ds), desc=f"read {path.name}", disable=not progress):
                    data = _read_episode(ep, f"dataset {path}", self._fmt, self.rate, rewards, terminals, missing_final)
                    if data is None:
                        continue
                    shapes = shapes or (_specs_of(data.obs), tuple(data.action.shape[1:]))
                    _check(shapes, data.obs, data.action, f"episode {ep.index} of dataset {path}")
                    episodes.append(data)
        if shapes is None:
            return
        slots = _Slots(sum(len(e) + 1 for e in episodes), *shapes)
        start = 0
        for e in episodes:
            slots.write_episode(np.arange(start, start + len(e) + 1), e, self.gamma)
            start += len(e) + 1
        self.offline = slots
        self._offline_steps = np.flatnonzero(slots.step)

    # -- online dataset ---------------------------------------------------------------------------------------
    def _open_online(self) -> None:
        """Open (resume: reload its newest episodes into the ring) or, with known features, create the dataset."""
        assert self.online_path is not None
        path = self.online_path
        if path.exists() and not path.is_dir():
            raise ValueError(f"online_path {path} is a file, not a dataset (a directory); choose another online_path")
        if path.exists() and any(path.iterdir()):
            ds = Dataset.open(path, mode="a")
            try:
                missing = [k for k in [*self.obs_keys, "action", REWARD, DONE, TERMINATED] if k not in ds.features]
                if missing:
                    raise MissingFieldError(
                        f"online dataset {path} has no features {missing}: it was written by something else; "
                        "choose another online_path"
                    )
                self._reload(ds)
            except BaseException:
                ds.close()
                raise
            self._online = ds
        elif self._online_features is not None:
            self._create_online(self._online_features)

    def _create_online(self, features: Mapping[str, Any]) -> None:
        assert self.online_path is not None
        self.online_path.parent.mkdir(parents=True, exist_ok=True)
        self._online = Dataset.create(
            self.online_path, features, robot=self._robot, attributes={"written_by": "realloop ReplayBuffer"}
        )

    def _reload(self, ds: Dataset) -> None:
        """Put the newest episodes of the online dataset that fit into the ring, oldest first."""
        where = f"online dataset {ds.path}"
        picked: list[_EpisodeData] = []
        used = 0
        for index in reversed(ds.episode_indices):
            data = _read_episode(ds.episode(index), where, self._fmt, None, "recorded", "recorded", "drop")
            if data is None:
                continue
            if used + len(data) + 1 > self.capacity:
                break
            picked.append(data)
            used += len(data) + 1
        for data in reversed(picked):
            ring = self._ring_for(data.obs, data.action, where)
            ring.write_episode(ring.allocate(len(data) + 1), data, self.gamma)
            self._added += len(data)
        self._committed = len(ds)

    def _infer_features(self, ep: _EnvEpisode) -> dict[str, Any]:
        """Features of a new online dataset from an episode's values (names and units from the offline ones)."""
        features: dict[str, Any] = {}
        rate = 1.0 / self.step_dt
        for key in self.obs_keys:
            sample = ep.obs[key][0]
            if key.startswith(IMAGE_PREFIX):
                features[key] = {"shape": list(sample.shape), "rate_hz": rate}
            else:
                features[key] = {"dtype": sample.dtype.name, "shape": list(sample.shape), "rate_hz": rate}
        features["action"] = {"dtype": "float32", "shape": list(ep.actions[0].shape), "rate_hz": rate}
        for key, spec in features.items():
            known = self.features.get(key)
            if known is not None and known.shape == tuple(spec["shape"]):
                spec.update({k: v for k, v in known.to_dict().items() if k in ("names", "units", "image_format")})
        features[REWARD] = {"dtype": "float32", "shape": [], "rate_hz": rate}
        features[SUCCESS] = {"dtype": "bool", "shape": [], "rate_hz": rate}
        features[DONE] = {"dtype": "bool", "shape": [], "rate_hz": rate}
        features[TERMINATED] = {"dtype": "bool", "shape": [], "rate_hz": rate}
        return features

    def _commit(self, env: int, ep: _EnvEpisode) -> None:
        """Write one ended episode to the online dataset (atomically: all of it or nothing)."""
        with self._disk_lock:
            if self._online is None:
                self._create_online(self._online_features or self._infer_features(ep))
            assert self._online is not None
            n = len(ep.actions)
            stamps = np.arange(n + 1) * self.step_dt
            flags = np.zeros(n, dtype=bool)
            flags[-1] = True
            success = ep.success[-1]
            with self._online.begin_episode(task=self.task, source="policy", env=int(env)) as w:
                for key, values in ep.obs.items():
                    w.extend(key, stamps, np.stack(values))
                w.extend("action", stamps[:-1], np.stack(ep.actions))
                w.extend(REWARD, stamps[:-1], np.asarray(ep.rewards, dtype=np.float32))
                w.extend(DONE, stamps[:-1], flags)
                w.extend(TERMINATED, stamps[:-1], np.asarray(ep.terminated, dtype=bool))
                if all(s is not None for s in ep.success) and SUCCESS in self._online.features:
                    w.extend(SUCCESS, stamps[:-1], np.asarray(ep.success, dtype=bool))
                w.commit(success=success)
            self._committed += 1

    # -- online steps -------------------------------------------------------------------------------------------
    def _ring_for(self, rows: Mapping[str, np.ndarray], action: np.ndarray, where: str) -> _Ring:
        """The ring (created on first use with the offline part's shapes, else these), checked against ``rows``."""
        if self._ring is None:
            specs = self.offline.specs if self.offline is not None else _specs_of(rows)
            shape = self.offline.action_shape if self.offline is not None else tuple(action.shape[1:])
            self._ring = _Ring(self.capacity, specs, shape)
        self._ring.check(rows, action, where)
        return self._ring

    def add(
        self,
        obs: Mapping[str, Any],
        action: Any,
        reward: float,
        terminated: bool,
        truncated: bool,
        next_obs: Mapping[str, Any],
        env: int = 0,
        success: bool | None = None,
    ) -> None:
        """Add one env step of env ``env``: ``obs`` (an env's observation dict: images ``H x W x C`` uint8), the
        action taken, the reward, whether the step ended the episode (``terminated``: a terminal state;
        ``truncated``: cut short) and ``next_obs`` (on an ended episode, its final observation). ``success``
        (optional) is recorded as ``next.success``. Within an episode ``obs`` is the previous step's
        ``next_obs``; an ended episode is committed to the online dataset before this returns (raises
        ``DatasetWriteError`` if that fails: the ring keeps the episode)."""
        if self._closed:
            raise RuntimeError("the replay buffer is closed: open a new one (it reloads the online dataset)")
        rows = self._fmt.rows(obs)
        next_rows = self._fmt.rows(next_obs)
        act = np.asarray(action, dtype=np.float32)[None]
        done = bool(terminated or truncated)
        finished: _EnvEpisode | None = None
        with self._lock:
            ring = self._ring_for(rows, act, f"the step added for env {env}")
            ring.check(next_rows, act, f"the next observation added for env {env}")
            ep = self._envs.setdefault(env, _EnvEpisode())
            if ring.holds(ep.pending, ep.pending_seq):
                slot = ep.pending  # holds this observation already (the previous step's next one)
            else:
                slot = int(ring.allocate()[0])
                for key, row in rows.items():
                    ring.obs[key][slot] = row[0]
            nxt = int(ring.allocate()[0])
            for key, row in next_rows.items():
                ring.obs[key][nxt] = row[0]
            ring.action[slot] = act[0]
            ring.reward[slot] = reward
            ring.terminated[slot] = bool(terminated)
            ring.truncated[slot] = bool(truncated) and not terminated
            ring.succ[slot] = nxt
            ring.step[slot] = True  # last: now it can be sampled
            self._added += 1
            ep.steps.append((slot, int(ring.seq[slot])))
            ep.rewards.append(float(reward))
            ep.success.append(success)
            if self.online_path is not None:
                if not ep.obs:
                    ep.obs = {k: [np.array(obs[k])] for k in self.obs_keys}
                for k in self.obs_keys:
                    ep.obs[k].append(np.array(next_obs[k]))
                ep.actions.append(act[0].copy())
                ep.terminated.append(bool(terminated))
            if done:
                self._end_returns(ring, ep)
                finished = self._envs.pop(env)
            else:
                ep.pending, ep.pending_seq = nxt, int(ring.seq[nxt])
        if finished is not None and self.online_path is not None:
            self._commit(env, finished)

    def _end_returns(self, ring: _Ring, ep: _EnvEpisode) -> None:
        """Monte Carlo returns, and whether the episode succeeded, of an ended episode's steps still in the ring."""
        returns = _returns(np.asarray(ep.rewards, dtype=np.float32), self.gamma)
        succeeded = any(bool(s) for s in ep.success)
        for (slot, seq), g in zip(ep.steps, returns, strict=True):
            if ring.seq[slot] == seq:
                ring.mc_return[slot] = g
                ring.succeeded[slot] = succeeded

    def discard_episode(self, env: int = 0) -> None:
        """End env ``env``'s episode in progress without committing it (e.g. after an intervention); its steps
        stay in the ring, the next :meth:`add` of the env starts a new episode."""
        with self._lock:
            self._envs.pop(env, None)

    def batch_observation(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Env observations ``{key: (B, ...)}`` as a batch holds them, for acting on them: images fitted to the
        buffer's image size and ``(B, C, H, W)`` uint8, the other entries float32."""
        chw = _ObsFormat(self.obs_keys, self._fmt.image_size, "chw")
        return {
            k: chw.images(np.asarray(obs[k])) if k.startswith(IMAGE_PREFIX) else np.asarray(obs[k], np.float32)
            for k in self.obs_keys
        }

    # -- sampling -------------------------------------------------------------------------------------------------
    def sample(
        self, batch_size: int, rng: np.random.Generator | None = None, online_ratio: float | None = None
    ) -> dict[str, Any]:
        """A batch of ``batch_size`` transitions (the module doc gives its format): ``online_ratio`` of it from
        the online ring and the rest from the offline episodes, all from whichever part holds steps when the
        other holds none. ``rng`` defaults to the buffer's own generator; ``online_ratio`` to the buffer's."""
        rng = self._rng if rng is None else rng
        ratio = self.online_ratio if online_ratio is None else float(online_ratio)
        n_off = len(self._offline_steps)
        with self._lock:
            ring = self._ring
            n_ring = ring.size if ring is not None else 0
            has_online = ring is not None and n_ring > 0 and bool(ring.step[:n_ring].any())
            if not has_online and n_off == 0:
                raise RuntimeError("the replay buffer is empty: give offline datasets or add online steps first")
            n_online = batch_size if n_off == 0 else (round(ratio * batch_size) if has_online else 0)
            parts = []
            if n_online:
                assert ring is not None
                parts.append(self._gather(ring, ring.draw(n_online, rng), online=True))
        if batch_size - n_online:
            assert self.offline is not None
            first = self._offline_steps[rng.integers(0, n_off, size=batch_size - n_online)]
            parts.insert(0, self._gather(self.offline, first, online=False))
        return _to_torch(_concat(parts))

    def _gather(self, slots: _Slots, first: np.ndarray, online: bool) -> dict[str, Any]:
        out: dict[str, Any] = _transitions(slots, first, self.n_step, self.action_chunk, self.gamma)
        out["online"] = np.full(len(first), online)
        if self._fmt.layout == "hwc":  # batches are (B, C, H, W)
            for obs in (out["observation"], out["next_observation"]):
                for key, spec in slots.specs.items():
                    if spec.is_image:
                        obs[key] = np.ascontiguousarray(obs[key].transpose(0, 3, 1, 2))
        return out

    # -- size and position -------------------------------------------------------------------------------------
    @property
    def offline_steps(self) -> int:
        """Transitions of the offline part."""
        return len(self._offline_steps)

    @property
    def online_steps(self) -> int:
        """Transitions the online ring holds now."""
        with self._lock:
            return self._ring.n_steps if self._ring is not None else 0

    @property
    def online_added(self) -> int:
        """Online transitions added in all (env steps), reloaded ones included; restored by load_state_dict."""
        return self._added

    @property
    def online_episodes(self) -> int:
        """Episodes in the online dataset (committed)."""
        return self._committed

    def __len__(self) -> int:
        return self.offline_steps + self.online_steps

    def state_dict(self) -> dict[str, int]:
        """The online position as plain JSON: transitions added, episodes committed, ring head, slots used."""
        with self._lock:
            ring = self._ring
            return {
                "version": STATE_VERSION,
                "added": self._added,
                "committed_episodes": self._committed,
                "head": ring.head if ring is not None else 0,
                "size": ring.size if ring is not None else 0,
                "capacity": self.capacity,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the position of :meth:`state_dict` (the count of online transitions added). The ring's contents
        come from the online dataset, reloaded at construction; it must hold at least the episodes committed when
        the position was saved."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"replay buffer state version {state.get('version')!r}; this realloop reads {STATE_VERSION}"
            )
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved buffer had capacity {state['capacity']}, this one has {self.capacity}")
        if int(state["committed_episodes"]) > self._committed:
            raise ValueError(
                f"the saved buffer had committed {state['committed_episodes']} online episodes, the online dataset "
                f"{self.online_path} holds {self._committed}: resume with the online_path of that run"
            )
        with self._lock:
            self._added = int(state["added"])

    # -- closing -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the online dataset; episodes in progress are not committed (as after a crash)."""
        with self._lock:
            self._envs.clear()
            self._closed = True
        with self._disk_lock:
            if self._online is not None:
                self._online.close()
                self._online = None

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(obs_keys={self.obs_keys}, offline_steps={self.offline_steps}, "
            f"online_steps={self.online_steps}, capacity={self.capacity}, online_path={self.online_path})"
        )


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, dict):
            out[key] = {k: np.concatenate([p[key][k] for p in parts]) for k in value}
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def _to_torch(batch: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: {kk: torch.from_numpy(vv) for kk, vv in v.items()} if isinstance(v, dict) else torch.from_numpy(v)
        for k, v in batch.items()
    }


__all__ = ["MissingFieldError", "ReplayBuffer"]
