"""PolicyAgent: runs a learned ChunkPolicy step by step in one or many environments.

It keeps each environment's observation history (the first observation of an episode fills the whole
history, as the training windows repeat the edge frame), turns gymnasium observations (numpy, images
``H x W x C`` uint8) into the policy's tensors, and executes action chunks: a new chunk is predicted for an
environment when its queue of actions is empty.

    agent = PolicyAgent(policy, num_envs=8)
    actions = agent.step(batched_obs)            # (8, action_dim); call agent.reset([i]) when env i resets

For the policy runner node it is also a :class:`realloop.policies.base.Policy` (one environment):
``observe(obs)`` every control step, ``action_chunk(obs)`` when the node needs a new chunk, ``refine(action)`` for
each action it runs (one robot, numpy; the model's own ``ChunkPolicy.predict_action_chunk`` takes batched
tensors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from realloop.policies.chunk_policy import ChunkPolicy


class PolicyAgent:
    """See the module doc. ``seed`` seeds the sampling noise of stochastic policies (diffusion)."""

    def __init__(
        self, policy: ChunkPolicy, num_envs: int = 1, device: str | torch.device | None = None, seed: int | None = None
    ) -> None:
        self.policy = policy.eval()
        self.device = torch.device(device) if device is not None else policy.device
        self.policy.to(self.device)
        self.num_envs = int(num_envs)
        self.generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        self.history: list[list[dict[str, np.ndarray]]] = [[] for _ in range(self.num_envs)]
        self.queues: list[list[np.ndarray]] = [[] for _ in range(self.num_envs)]
        self._observed = False

    # -- episode bookkeeping ----------------------------------------------------------------------------------
    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        """Forget the history and pending actions of ``env_ids`` (default: all)."""
        for i in range(self.num_envs) if env_ids is None else env_ids:
            self.history[i] = []
            self.queues[i] = []
        self._observed = False

    def _frame(self, obs: Mapping[str, np.ndarray], i: int | None) -> dict[str, np.ndarray]:
        """One environment's observation as the policy's per-step arrays (images to C x H x W floats)."""
        out = {}
        for k in self.policy.obs_keys:
            if k not in obs:
                raise KeyError(
                    f"the environment's observation lacks {k!r} (it has {sorted(obs)}); the policy sees "
                    f"{self.policy.obs_keys}. Map the environment's observation to these features (obs_map)"
                )
            x = np.asarray(obs[k] if i is None else obs[k][i])
            if self.policy.features[k].is_image:
                if x.ndim == 2:
                    x = x[..., None]
                x = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)
                if np.issubdtype(np.asarray(obs[k]).dtype, np.integer):
                    x /= 255.0
            else:
                x = x.astype(np.float32, copy=False).reshape(-1)
            expected = self.policy.obs_shapes[k]
            if x.shape != expected:
                raise ValueError(f"observation {k!r} has shape {x.shape} per step, the policy expects {expected}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"observation {k!r} contains NaN or inf; refusing to act on it")
            out[k] = x
        return out

    def _push(self, i: int, frame: dict[str, np.ndarray]) -> None:
        h = self.history[i]
        if not h:
            h.extend([frame] * self.policy.n_obs_steps)
        else:
            h.append(frame)
            del h[: len(h) - self.policy.n_obs_steps]

    def _predict(self, env_ids: Sequence[int]) -> np.ndarray:
        """Raw action chunks ``(len(env_ids), n_action_steps, action_dim)`` from the stored histories."""
        return self._run(self._batch(env_ids))

    def _batch(self, env_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """The stored histories of ``env_ids`` as the policy's input tensors (copies: later steps may change them)."""
        return {
            k: torch.from_numpy(np.stack([np.stack([f[k] for f in self.history[i]]) for i in env_ids])).to(self.device)
            for k in self.policy.obs_keys
        }

    def _run(self, batch: dict[str, torch.Tensor], noise: torch.Tensor | None = None) -> np.ndarray:
        with torch.inference_mode():
            out = self.policy.predict_action_chunk(batch, generator=self.generator, noise=noise)
        return _finite(out)

    # -- vectorised environments ------------------------------------------------------------------------------
    def step(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Actions ``(num_envs, action_dim)`` for batched observations (each array ``(num_envs, ...)``)."""
        for i in range(self.num_envs):
            self._push(i, self._frame(obs, i))
        need = [i for i in range(self.num_envs) if not self.queues[i]]
        if need:
            for i, chunk in zip(need, self._predict(need), strict=True):
                self.queues[i] = list(chunk)
        actions = np.stack([self.queues[i].pop(0) for i in range(self.num_envs)])
        return self._refine(range(self.num_envs), actions)

    def _refine(self, env_ids: Sequence[int], actions: np.ndarray) -> np.ndarray:
        """The actions to run: a policy that refines actions corrects the chunk's for the current observation."""
        if not self.policy.refines_actions:
            return actions
        frames = {
            k: torch.from_numpy(np.stack([self.history[i][-1][k] for i in env_ids])).to(self.device)
            for k in self.policy.obs_keys
        }
        with torch.inference_mode():
            refined = self.policy.refine_action(frames, torch.as_tensor(actions, device=self.device))
        return _finite(refined)

    @property
    def obs_keys(self) -> list[str]:
        """The observation features the policy sees."""
        return list(self.policy.obs_keys)

    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        """``observation.images.<cam>`` -> the ``(H, W, C)`` frames the policy was trained on."""
        return {k: tuple(self.policy.features[k].shape) for k in self.policy.image_keys}

    # -- the Policy protocol (one environment) -------------------------------------------------------------------
    def observe(self, obs: Mapping[str, np.ndarray]) -> None:
        """Record this control step's observation (unbatched)."""
        self._push(0, self._frame(obs, None))
        self._observed = True

    def refine(self, action: np.ndarray) -> np.ndarray:
        """The action ``(action_dim,)`` to run at this step, for the chunk's action at it and the step's observation
        (given to ``observe``): the chunk's, or a residual policy's correction of it."""
        return self._refine([0], np.asarray(action, dtype=np.float32)[None])[0]

    def action_chunk(self, obs: Mapping[str, np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """Actions ``(n_action_steps, action_dim)`` from now, for this step's (unbatched) observation; ``noise``
        (``(horizon, action_dim)``) is a diffusion policy's initial noise instead of a draw."""
        return self.prepare_chunk(obs, noise)()

    def prepare_chunk(self, obs: Mapping[str, np.ndarray], noise: np.ndarray | None = None) -> Callable[[], np.ndarray]:
        """``action_chunk`` in two parts: the observation history is captured now, and the returned call
        runs the model. The call may run on another thread while this agent observes the next steps (the policy
        runner predicts ahead of need this way); one call at a time, as they share the sampling generator."""
        if not self._observed:
            self._push(0, self._frame(obs, None))
        self._observed = False
        batch = self._batch([0])
        z = None if noise is None else torch.as_tensor(noise, dtype=torch.float32, device=self.device)[None]
        return lambda: self._run(batch, z)[0]


def _finite(actions: torch.Tensor) -> np.ndarray:
    """The policy's actions as float32 numpy; NaN or inf refused (a broken checkpoint must not move a robot)."""
    out = actions.float().cpu().numpy()
    if not np.all(np.isfinite(out)):
        raise FloatingPointError("the policy produced NaN or inf actions; the checkpoint is broken")
    return out
