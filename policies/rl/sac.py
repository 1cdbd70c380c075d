"""Soft actor-critic (Haarnoja et al. 2018) with the RLPD recipe (Ball et al. 2023): a LayerNorm critic ensemble,
targets from the minimum over a random subset of it (REDQ), several critic steps per batch (update-to-data
ratio), an auto-tuned entropy temperature; optionally a behaviour-cloning term for demonstrations, and Cal-QL's
conservative penalty (Nakamoto et al. 2023) for offline pretraining followed by online fine-tuning.

A gripper can be a discrete action beside the continuous ones, chosen by a grasp critic (HIL-SERL, Luo et al.
2024; ``SACConfig.grasp_dim``).

The losses, each in one place: :meth:`SACLearner.td_target`, :meth:`SACLearner.critic_loss`,
:meth:`SACLearner.conservative_penalty`, :meth:`SACLearner.actor_loss`, :meth:`SACLearner.temperature_loss`,
:meth:`SACLearner.grasp_loss`; :meth:`SACLearner.update` runs them.

Why Cal-QL for offline -> online (and not IQL): IQL never queries actions outside the data while pretraining, so
its actor is an advantage-weighted copy of the demonstrations and its critic must be re-learnt for SAC-style
fine-tuning; Cal-QL trains the same SAC actor and critic offline, with a penalty that keeps Q of unseen actions low
but never below the demonstrations' Monte Carlo returns, so fine-tuning continues the same objective without the
"unlearning dip" of plain CQL (whose pessimistic Q first has to recover online).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from realloop.policies.rl.learner import Batch, Learner, Observation
from realloop.policies.rl.networks import (
    EnsembleQ,
    FeatureEncoder,
    TanhGaussianActor,
    Temperature,
    grasp_critic,
    random_shift,
    to_unit_float,
)


@dataclass(frozen=True)
class SACConfig:
    """The learner's hyper-parameters; the defaults are RLPD's (its ``rlpd_config`` for state observations).

    Attributes:
        num_critics: E, the critic ensemble size (RLPD 10; plain SAC 2).
        num_min_critics: M, the target is the minimum over M members drawn at random each critic step (2; M = E
            is the minimum over all).
        utd: G, the update-to-data ratio: :meth:`SACLearner.update` splits a batch of G*B transitions into G
            minibatches, takes one critic step on each, then one actor and one temperature step on the last.
        hidden_dims: hidden widths of the actor's and each critic's MLP.
        critic_layer_norm: LayerNorm after each hidden Linear of the critics, before the ReLU (RLPD).
        actor_q: how the actor's objective reduces the ensemble: ``mean`` (RLPD, REDQ) or ``min`` (SAC's
            clipped double Q).
        tau: Polyak rate of the target critic (and target encoder) after every critic step.
        actor_lr, critic_lr, temperature_lr: Adam learning rates (the critic's also trains the encoder).
        init_temperature: the entropy temperature alpha at the start.
        target_entropy: the entropy the temperature steers to; None: -|A|/2 (RLPD's choice; SAC's paper: -|A|).
        backup_entropy: subtract alpha * log pi(a'|s') in the TD target (soft backup); off for sparse rewards,
            where it would hand out entropy bonuses larger than the reward.
        bc_weight: weight of a behaviour-cloning term in the actor loss: MSE(tanh(actor mean), action) over the
            batch's offline transitions (the demonstrations; online ones are the policy's own), as in DDPGfD and
            TD3+BC (0: off); with a grasp critic, also the weight of its large-margin term (``grasp_margin``).
        action_penalty: weight of the mean squared deterministic action tanh(mean), in [-1, 1] units, in the actor
            loss: it pulls the actor toward the middle of its range, which for a residual actor is the frozen
            policy's action (a correction of 0). Without it the actor follows the critic's early errors to
            corrections that add up over steps. 0: off.
        bc_decay_updates: > 0: the BC weight (``bc_weight``, also the grasp margin's) falls linearly to 0 over this
            many learner updates, as DAPG decays its demonstration term: the demonstrations give the head start,
            then the critic alone steers, instead of a few demonstrations being fitted ever closer (0: constant).
        bc_q_filter: clone a demonstration's action only where the critic rates it above the policy's own
            (Q(s, a_demo) > Q(s, a ~ pi(s)), Nair et al. 2018), so the term fades where the policy has become better.
        bc_successes: the behaviour cloning (``bc_weight``) also clones the online transitions of episodes that
            succeeded (the batch's ``succeeded``): self-imitation of the policy's own successes, so the anchor
            grows with what the policy has learnt to do instead of staying on the few demonstrations.
        obs_normalization: ``identity`` (RLPD's and SAC's raw state), ``mean_std`` or ``min_max`` for the state keys
            that ``obs_stats`` covers. Statistics of demonstrations are narrow: a joint they never move has a std
            near 1e-3, so online exploration would move that input by hundreds of std: ``obs_std_floor`` widens
            narrower statistics to it.
        obs_std_floor: the smallest std (``mean_std``) or half range (``min_max``) a state input is normalised
            by, in its own units (0.01: a centimetre, or 0.6 degree).
        image_encoder: ``small`` (a CPU-sized conv net) or ``resnet18``.
        image_feature_dim: features per camera.
        augment_pad: DrQ random shift of images by up to this many pixels, in updates only (0: off).
        action_chunk: H, the actor and the critic work on chunks of H actions (Q-chunking, Li et al. 2025): the
            actor outputs H actions at once, which the env runs open loop, and Q(s, a_t..a_t+H-1) bootstraps H steps
            later (the batch's action is (B, H, A), its reward the discounted sum over the chunk). 1: single steps.
        cql_weight: alpha of the conservative penalty (:meth:`SACLearner.conservative_penalty`); 0: off (SAC,
            RLPD). Needs the batch's ``mc_return`` when ``calibrated``.
        cql_actions: actions sampled per state and per kind (uniform, policy at s, policy at s') for the penalty.
        calibrated: Cal-QL: the policy actions' Q-values in the penalty are first raised to the Monte Carlo return
            (False: plain CQL(H)).
        grasp_dim: an action dim (an index into the learner's action; -1: the last) that is a gripper with two
            states, its lower and its upper bound, chosen by a grasp critic: a DQN over the two states (double Q,
            the target the minimum of two members) beside the actor-critic, which then acts on the other dims
            (HIL-SERL). A continuous actor commands in-between openings that the demonstrations never use and the
            critic must rate without data. The batch's gripper value counts as the nearer state. None: every dim
            continuous. Needs ``action_chunk`` 1.
        grasp_epsilon: while exploring, the grasp state is drawn uniformly with this probability, else the grasp
            critic's best.
        grasp_margin: the grasp critic's behaviour cloning, DQfD's large-margin loss (Hester et al. 2018) over the
            offline transitions when ``bc_weight`` > 0: ``max_g [Q(s, g) + margin (g != g_demo)] - Q(s, g_demo)``,
            zero once the demonstrated state is the critic's best by ``margin``.
    """

    num_critics: int = 10
    num_min_critics: int = 2
    utd: int = 1
    hidden_dims: tuple[int, ...] = (256, 256)
    critic_layer_norm: bool = True
    actor_q: str = "mean"
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    init_temperature: float = 1.0
    target_entropy: float | None = None
    backup_entropy: bool = True
    bc_weight: float = 0.0
    bc_decay_updates: int = 0
    bc_q_filter: bool = False
    bc_successes: bool = False
    action_penalty: float = 0.0
    obs_normalization: str = "identity"
    obs_std_floor: float = 0.01
    image_encoder: str = "small"
    image_feature_dim: int = 64
    augment_pad: int = 4
    action_chunk: int = 1
    cql_weight: float = 0.0
    cql_actions: int = 10
    calibrated: bool = True
    grasp_dim: int | None = None
    grasp_epsilon: float = 0.05
    grasp_margin: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.num_min_critics <= self.num_critics:
            raise ValueError(
                f"num_min_critics must be in [1, num_critics={self.num_critics}], got {self.num_min_critics}"
            )
        if self.utd < 1:
            raise ValueError(f"utd must be at least 1, got {self.utd}")
        if self.actor_q not in ("mean", "min"):
            raise ValueError(f"actor_q must be 'mean' or 'min', got {self.actor_q!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if self.cql_weight < 0 or self.cql_actions < 1:
            raise ValueError(f"cql_weight must be >= 0 and cql_actions >= 1, got {self.cql_weight}, {self.cql_actions}")
        if self.action_chunk < 1:
            raise ValueError(f"action_chunk must be at least 1, got {self.action_chunk}")
        if min(self.bc_weight, self.augment_pad, self.bc_decay_updates, self.obs_std_floor, self.action_penalty) < 0:
            raise ValueError(
                "bc_weight, bc_decay_updates, augment_pad, obs_std_floor and action_penalty must not be negative"
            )
        if self.grasp_dim is not None and self.action_chunk > 1:
            raise ValueError("a grasp critic (grasp_dim) chooses one step's gripper state: use action_chunk=1")
        if not 0.0 <= self.grasp_epsilon <= 1.0 or self.grasp_margin < 0:
            raise ValueError(f"grasp_epsilon must be in [0, 1] and grasp_margin >= 0, got {self.grasp_epsilon}, "
                             f"{self.grasp_margin}")  # fmt: skip

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SACConfig:
        """``rlpd`` (the defaults) or ``sac`` (two critics without LayerNorm, clipped double Q for the actor:
        the original SAC), with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    "rlpd": {},
    "sac": {"num_critics": 2, "num_min_critics": 2, "critic_layer_norm": False, "actor_q": "min"},
}


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters get no gradient inside the block (the critic, while the actor's loss uses it)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class SACLearner(Learner):
    """SAC/RLPD on observation dicts (state vectors and camera images) with continuous actions.

    Args:
        obs_shapes: observation key -> per-sample shape; ``observation.images.<cam>`` keys are (C, H, W) uint8
            images, the others (D,) vectors (see :class:`~realloop.policies.rl.networks.FeatureEncoder`).
        action_low, action_high: the action bounds in env units, (A,). The learner works in [-1, 1]: ``act``
            returns env units, ``update`` maps the batch's env-unit actions into [-1, 1] (clipped).
        config: hyper-parameters (default: :class:`SACConfig`, RLPD's); ``overrides`` replace fields of it.
        obs_stats: fixed normalisation statistics of the state keys (``realloop.data.stats.load_stats`` form);
            they become buffers of the encoder, saved with the weights.
        device: where the modules live and the updates run.

    Modules: ``encoder`` (shared: the critic's loss trains it, the actor sees its features detached),
    ``encoder_target`` and ``critic_target`` (Polyak copies), ``actor``, ``critic`` (an E-member ensemble),
    ``temperature``; with ``grasp_dim``, ``grasp_critic`` and ``grasp_critic_target`` (which see the encoder's
    features detached). Randomness (exploration noise, target subsets, image shifts) comes from torch's global
    generator, so seed it with ``torch.manual_seed`` before building.

    The batch's ``online`` flag is not used here: how online and offline data mix is the replay buffer's choice
    (RLPD samples them half and half).
    """

    def __init__(
        self,
        obs_shapes: Mapping[str, Sequence[int]],
        action_low: Sequence[float] | np.ndarray,
        action_high: Sequence[float] | np.ndarray,
        config: SACConfig | None = None,
        obs_stats: Mapping[str, Mapping[str, Any]] | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> None:
        self.config = cfg = dataclasses.replace(config or SACConfig(), **overrides)
        self.device = torch.device(device)
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32))
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32))
        if low.ndim != 1 or low.shape != high.shape or not bool((high > low).all()):
            raise ValueError(f"action bounds must be two (A,) vectors with high > low, got {low} and {high}")
        self.action_low, self.action_high = low.to(self.device), high.to(self.device)
        self.action_dim = int(low.shape[0])
        self.grasp_dim: int | None = None
        if cfg.grasp_dim is not None:
            if self.action_dim < 2 or not -self.action_dim <= cfg.grasp_dim < self.action_dim:
                raise ValueError(
                    f"grasp_dim={cfg.grasp_dim} is no dim of the {self.action_dim}-D action, or leaves the actor none"
                )
            self.grasp_dim = cfg.grasp_dim % self.action_dim
        self.continuous_dims = [i for i in range(self.action_dim) if i != self.grasp_dim]
        self.chunk = cfg.action_chunk
        # what the actor outputs and the critic takes: a flat chunk of the continuous dims
        self.action_width = self.chunk * len(self.continuous_dims)
        self.target_entropy = -self.action_width / 2 if cfg.target_entropy is None else float(cfg.target_entropy)

        self.encoder = FeatureEncoder(
            obs_shapes, obs_stats, cfg.obs_normalization, cfg.image_encoder, cfg.image_feature_dim, cfg.obs_std_floor
        )
        width = self.encoder.out_dim
        self.actor = TanhGaussianActor(width, self.action_width, cfg.hidden_dims)
        self.critic = EnsembleQ(width, self.action_width, cfg.num_critics, cfg.hidden_dims, cfg.critic_layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.temperature = Temperature(cfg.init_temperature)
        if self.grasp_dim is not None:
            self.grasp_critic = grasp_critic(width, cfg.hidden_dims, cfg.critic_layer_norm)
            self.grasp_critic_target = copy.deepcopy(self.grasp_critic).requires_grad_(False)
        for module in self.modules().values():
            # Always in training mode: nothing here behaves differently in eval mode (GroupNorm, no dropout, the
            # image encoders' own crop and colour jitter off); augmentation is explicit, in updates only.
            module.to(self.device)
        self._optimizers = {
            "critic": torch.optim.Adam([*self.critic.parameters(), *self.encoder.parameters()], lr=cfg.critic_lr),
            "actor": torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr),
            "temperature": torch.optim.Adam(self.temperature.parameters(), lr=cfg.temperature_lr),
        }
        if self.grasp_dim is not None:
            self._optimizers["grasp_critic"] = torch.optim.Adam(self.grasp_critic.parameters(), lr=cfg.critic_lr)
        self.updates = 0  # calls of update()
        self.critic_steps = 0  # utd per update

    # -- the seam ------------------------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {
            "encoder": self.encoder,
            "encoder_target": self.encoder_target,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "temperature": self.temperature,
        }
        if self.grasp_dim is not None:
            modules.update(grasp_critic=self.grasp_critic, grasp_critic_target=self.grasp_critic_target)
        return modules

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    def extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates, "critic_steps": self.critic_steps}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.updates, self.critic_steps = int(state["updates"]), int(state["critic_steps"])

    def _acting_modules(self) -> tuple[str, ...]:
        return ("encoder", "actor") if self.grasp_dim is None else ("encoder", "actor", "grasp_critic")

    def actor_weights(self) -> dict[str, Tensor]:
        """The encoder (normaliser and image encoders), the actor and the grasp critic when there is one, as
        ``encoder.*``, ``actor.*`` and ``grasp_critic.*``."""
        return {
            f"{name}.{k}": v.detach().cpu().clone()
            for name in self._acting_modules()
            for k, v in self.modules()[name].state_dict().items()
        }

    def load_actor_weights(self, weights: Mapping[str, Tensor]) -> None:
        names = self._acting_modules()
        unknown = sorted(k for k in weights if not k.startswith(tuple(f"{n}." for n in names)))
        if unknown:
            raise KeyError(f"actor weights hold keys of none of {names}: {unknown[:5]}")
        for name in names:
            prefix = f"{name}."
            own = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            self.modules()[name].load_state_dict(own, strict=True)

    @torch.no_grad()
    def act(self, obs: Observation, explore: bool) -> np.ndarray:
        features = self.encoder(self._observation(obs, augment=False))
        action = self.actor.sample(features)[0] if explore else self.actor.mode(features)
        if self.grasp_dim is not None:
            state = self.grasp_critic(features).mean(dim=0).argmax(dim=-1)
            if explore and self.config.grasp_epsilon > 0:
                drawn = torch.rand(state.shape, device=state.device) < self.config.grasp_epsilon
                state = torch.where(drawn, torch.randint_like(state, 2), state)
            full = torch.empty(action.shape[0], self.action_dim, device=action.device)
            full[:, self.continuous_dims] = action
            full[:, self.grasp_dim] = state.float() * 2.0 - 1.0  # the lower or the upper bound
            action = full
        return self._env_action(action).cpu().numpy()

    def update(self, batch: Batch) -> dict[str, float]:
        """G = ``utd`` critic steps on the G minibatches of ``batch`` (its size must divide by G), each followed by
        the Polyak update of the targets, then one actor and one temperature step on the last minibatch. Minibatch i
        takes rows i, i + G, i + 2G, ...: the replay buffer puts the offline rows first, so each minibatch keeps the
        batch's offline/online mix (RLPD's symmetric sampling holds for every critic step and for the actor's)."""
        b = self._prepare(batch)
        n, g = int(b["reward"].shape[0]), self.config.utd
        if n % g:
            raise ValueError(f"the batch of {n} transitions does not split into utd={g} equal minibatches")
        for i in range(g):
            mb = {k: _take(v, slice(i, None, g)) for k, v in b.items()}  # strided: each keeps the batch's mix
            encoded = self.encode(mb)  # once for both critics: images are the costly part
            loss, critic_metrics = self.critic_loss(mb, encoded)
            if self.grasp_dim is not None:
                grasp, grasp_metrics = self.grasp_loss(mb, encoded)
            self._step("critic", loss)
            if self.grasp_dim is not None:
                self._step("grasp_critic", grasp)
                critic_metrics.update(grasp_metrics)
            self._update_targets()
            self.critic_steps += 1
        loss, actor_metrics = self.actor_loss(mb)
        self._step("actor", loss)
        temperature_loss = self.temperature_loss(actor_metrics["entropy"])
        self._step("temperature", temperature_loss)
        self.updates += 1
        metrics = {**critic_metrics, **actor_metrics, "temperature_loss": temperature_loss.detach()}
        metrics["temperature"] = self.temperature().detach()
        return {k: float(v) for k, v in metrics.items()}

    # -- the losses (batches as _prepare makes them: tensors on the device, actions in [-1, 1]) ---------------------
    def encode(self, mb: Mapping[str, Any]) -> dict[str, Tensor]:
        """The encodings a critic step needs: ``features`` of s (with gradient, for the critic's step),
        ``next_features`` of s' (no gradient, for the actions at s') and ``next_target_features`` (the target
        encoder's, for the target critics)."""
        features = self.encoder(mb["observation"])
        with torch.no_grad():
            next_features = self.encoder(mb["next_observation"])
            next_target_features = self.encoder_target(mb["next_observation"])
        return {"features": features, "next_features": next_features, "next_target_features": next_target_features}

    @torch.no_grad()
    def td_target(self, mb: Mapping[str, Any], encoded: Mapping[str, Tensor] | None = None) -> Tensor:
        """``r + discount * (min over M random target critics of Q(s', a') [- alpha log pi(a'|s')])``,
        a' ~ pi(s'): (B,). ``discount`` is the batch's (0 after a terminal step: the target is the reward).
        ``encoded``: :meth:`encode` of the batch, when the caller has it."""
        encoded = self.encode(mb) if encoded is None else encoded
        next_action, next_log_prob = self.actor.sample(encoded["next_features"])
        next_q, _ = self.critic_target.min_over_subset(
            encoded["next_target_features"], next_action, self.config.num_min_critics
        )
        if self.config.backup_entropy:
            next_q = next_q - self.temperature() * next_log_prob
        return mb["reward"] + mb["discount"] * next_q

    def critic_loss(
        self, mb: Mapping[str, Any], encoded: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Every member's squared TD error against the one shared target, averaged over members and batch; its
        gradient trains the critic and the encoder. ``encoded``: :meth:`encode` of the batch."""
        encoded = self.encode(mb) if encoded is None else encoded
        target = self.td_target(mb, encoded)
        features, next_features = encoded["features"], encoded["next_features"]
        q = self.critic(features, mb["action"])  # (E, B)
        loss = ((q - target) ** 2).mean()
        metrics = {"critic_loss": loss.detach(), "q": q.detach().mean(), "target_q": target.mean()}
        if self.config.cql_weight > 0:
            penalty = self.conservative_penalty(mb, features, q, next_features)
            loss = loss + self.config.cql_weight * penalty
            metrics["cql_penalty"] = penalty.detach()
        return loss, metrics

    def conservative_penalty(
        self, mb: Mapping[str, Any], features: Tensor, q_data: Tensor, next_features: Tensor
    ) -> Tensor:
        """CQL(H) (Kumar et al. 2020): ``logsumexp`` over sampled actions of Q(s, .) minus Q(s, a_data), per member,
        averaged. The actions: N uniform in [-1, 1], N from the policy at s and N from the policy at s' (CQL's
        choice), each Q-value less the log-density it was drawn with (importance sampling). Cal-QL (``calibrated``):
        the policy actions' Q-values are first raised to the batch's Monte Carlo return, the value of the policy
        that collected the data, so the penalty never pushes Q below it (NaN returns, of online episodes still in
        progress, bound nothing). ``next_features``: the encoder's features of s' (no gradient)."""
        n, b, width = self.config.cql_actions, q_data.shape[1], self.action_width
        rep = features.repeat_interleave(n, dim=0)  # (B*N, F); the critic's gradient reaches the encoder
        with torch.no_grad():
            pi, pi_log_prob = self.actor.sample(rep.detach())
            pi_next, pi_next_log_prob = self.actor.sample(next_features.repeat_interleave(n, dim=0))
        uniform = torch.rand(b * n, width, device=rep.device) * 2.0 - 1.0
        q_uniform = self.critic(rep, uniform).view(-1, b, n) - width * math.log(0.5)
        q_pi = self.critic(rep, pi).view(-1, b, n)
        q_pi_next = self.critic(rep, pi_next).view(-1, b, n)
        if self.config.calibrated:
            bound = torch.nan_to_num(mb["mc_return"], nan=-torch.inf).view(1, b, 1)
            q_pi, q_pi_next = torch.maximum(q_pi, bound), torch.maximum(q_pi_next, bound)
        sampled = torch.cat(
            [q_uniform, q_pi - pi_log_prob.view(1, b, n), q_pi_next - pi_next_log_prob.view(1, b, n)], dim=-1
        )
        return (torch.logsumexp(sampled, dim=-1) - q_data).mean()

    def actor_loss(self, mb: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """``E[alpha log pi(a|s) - Q(s, a)]``, a ~ pi(s) reparameterised, Q the ensemble's mean (or min), plus
        ``bc_weight`` times the squared error of tanh(mean) to the demonstrations' actions (the offline ones, with
        ``bc_successes`` also the online ones of successful episodes; with ``bc_q_filter`` only those the critic
        rates above the policy's action), plus ``action_penalty`` times the mean square of tanh(mean). Trains the
        actor only."""
        with torch.no_grad():
            # SAC from pixels (SAC-AE, DrQ): the encoder is shared; the critic's gradient alone trains it and the
            # actor sees its features detached, so the policy gradient cannot distort the representation.
            features = self.encoder(mb["observation"])
        action, log_prob = self.actor.sample(features)
        with _frozen(self.critic):
            qs = self.critic(features, action)
        q = qs.mean(dim=0) if self.config.actor_q == "mean" else qs.min(dim=0).values
        loss = (self.temperature().detach() * log_prob - q).mean()
        metrics = {"actor_loss": loss.detach(), "entropy": -log_prob.detach().mean()}
        if self.config.action_penalty > 0:
            size = self.actor.mode(features).square().mean()
            loss = loss + self.config.action_penalty * size
            metrics["action_size"] = size.detach()
        if self.config.bc_weight > 0:
            demo = mb["demo"]
            if self.config.bc_q_filter:
                with torch.no_grad():
                    q_demo = self.critic(features, mb["action"])
                    q_demo = q_demo.mean(dim=0) if self.config.actor_q == "mean" else q_demo.min(dim=0).values
                cloned = demo & (q_demo > q.detach())
            else:
                cloned = demo
            bc = (self._bc_error(features, mb["action"]) * cloned).sum() / demo.sum().clamp(min=1)
            weight = self.bc_weight()
            loss = loss + weight * bc
            metrics["bc_weight"] = torch.tensor(weight)
            metrics["bc_loss"] = bc.detach()
            metrics["bc_cloned"] = cloned.float().sum() / demo.sum().clamp(min=1)
            metrics["bc_rows"] = demo.float().mean()
        return loss, metrics

    def clone(self, batch: Batch) -> dict[str, float]:
        """One actor step of behaviour cloning alone on every transition of ``batch``: the squared error of
        tanh(mean) to its actions; with a grasp critic, also one step of its large-margin loss toward the batch's
        grasp states. Distils another policy (whose actions the batch holds) into the actor; the critic, the encoder
        and the temperature are left as they are. A non-finite loss is refused before the step.

        This is how imitation checkpoints warm-start a learner (realloop-finetune's ``init=<realloop-train
        checkpoint>``): their policies map an observation *history* through their own encoder to a normalised
        action *chunk*, so no layer of theirs corresponds to this actor's; they act, and the actor learns from what
        they did. A full learner state loads with ``realloop.policies.rl.state.load_learner_state``."""
        mb = self._prepare(batch)
        with torch.no_grad():
            features = self.encoder(mb["observation"])
        loss = self._bc_error(features, mb["action"]).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the cloning loss is {float(loss)}; the batch holds non-finite values")
        self._step("actor", loss)
        metrics = {"clone_loss": float(loss.detach())}
        if self.grasp_dim is not None:
            margin = self._grasp_margin(self.grasp_critic(features), mb["grasp"]).mean()
            self._step("grasp_critic", margin)
            metrics["clone_grasp_margin"] = float(margin.detach())
        return metrics

    def bc_weight(self) -> float:
        """The behaviour-cloning weight now: ``bc_weight``, decayed over ``bc_decay_updates`` when set."""
        c = self.config
        if c.bc_decay_updates <= 0:
            return c.bc_weight
        return c.bc_weight * max(0.0, 1.0 - self.updates / c.bc_decay_updates)

    def _bc_error(self, features: Tensor, action: Tensor) -> Tensor:
        """Per transition, the mean squared error of the actor's deterministic action to ``action`` ([-1, 1])."""
        return (self.actor.mode(features) - action).pow(2).mean(dim=-1)

    def grasp_loss(
        self, mb: Mapping[str, Any], encoded: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Double DQN for the gripper: each member's squared error of Q(s, g), g the batch's grasp state, to
        ``r + discount * min over members of Q_target(s', g')``, g' the online critic's best state at s' (its
        members' mean); with ``cql_weight``, plus the discrete conservative penalty ``logsumexp_g Q(s, g) - Q(s, g
        data)`` (Cal-QL: the Q-values raised to the Monte Carlo return first). Trains the grasp critic only.
        ``encoded``: :meth:`encode` of the batch (its features are used without their gradient)."""
        encoded = self.encode(mb) if encoded is None else encoded
        features = encoded["features"].detach()
        with torch.no_grad():
            best = self.grasp_critic(encoded["next_features"]).mean(dim=0).argmax(dim=-1, keepdim=True)  # (B, 1)
            next_q = self.grasp_critic_target(encoded["next_target_features"]).min(dim=0).values
            target = mb["reward"] + mb["discount"] * next_q.gather(-1, best).squeeze(-1)
        q_all = self.grasp_critic(features)  # (members, B, 2)
        index = mb["grasp"].view(1, -1, 1).expand(q_all.shape[0], -1, 1)
        q = q_all.gather(-1, index).squeeze(-1)
        loss = ((q - target) ** 2).mean()
        metrics = {"grasp_loss": loss.detach(), "grasp_q": q.detach().mean()}
        if self.config.bc_weight > 0:
            demo = mb["demo"]
            margin = (self._grasp_margin(q_all, mb["grasp"]) * demo).sum() / demo.sum().clamp(min=1)
            loss = loss + self.bc_weight() * margin
            metrics["grasp_margin"] = margin.detach()
        if self.config.cql_weight > 0:
            if self.config.calibrated:
                bound = torch.nan_to_num(mb["mc_return"], nan=-torch.inf).view(1, -1, 1)
                q_all = torch.maximum(q_all, bound)
            penalty = (torch.logsumexp(q_all, dim=-1) - q).mean()
            loss = loss + self.config.cql_weight * penalty
            metrics["grasp_cql_penalty"] = penalty.detach()
        return loss, metrics

    def _grasp_margin(self, q_all: Tensor, grasp: Tensor) -> Tensor:
        """Per transition (the members' mean), DQfD's large-margin loss of Q-values ``q_all`` (members, B, 2) toward
        the grasp states ``grasp`` (B,): ``max_g [Q(s, g) + margin (g != grasp)] - Q(s, grasp)``."""
        index = grasp.view(1, -1, 1).expand(q_all.shape[0], -1, 1)
        margin = torch.full_like(q_all, self.config.grasp_margin).scatter_(-1, index, 0.0)
        return ((q_all + margin).max(dim=-1).values - q_all.gather(-1, index).squeeze(-1)).mean(dim=0)

    def temperature_loss(self, entropy: Tensor) -> Tensor:
        """``alpha * (entropy - target_entropy)``: alpha grows while the policy's entropy is below the target."""
        return self.temperature() * (entropy.detach() - self.target_entropy)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _step(self, name: str, loss: Tensor) -> None:
        opt = self._optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def _update_targets(self) -> None:
        tau = self.config.tau
        pairs = [(self.critic_target, self.critic), (self.encoder_target, self.encoder)]
        if self.grasp_dim is not None:
            pairs.append((self.grasp_critic_target, self.grasp_critic))
        for target, online in pairs:
            for t, p in zip(target.parameters(), online.parameters(), strict=True):
                t.lerp_(p, tau)

    def _observation(self, obs: Observation, augment: bool) -> dict[str, Tensor]:
        out = {k: torch.as_tensor(v).to(self.device) for k, v in obs.items() if k in self.encoder.shapes}
        if augment and self.config.augment_pad > 0:
            for k in self.encoder.image_keys:
                out[k] = random_shift(to_unit_float(out[k]), self.config.augment_pad)
        return out

    def _prepare(self, batch: Batch) -> dict[str, Any]:
        """The batch as tensors on the device, images shifted (once per batch), actions in [-1, 1]; with a grasp
        critic, ``action`` holds the continuous dims and ``grasp`` the gripper's nearer state (0 lower, 1 upper)."""

        def vector(key: str) -> Tensor:
            return torch.as_tensor(batch[key], dtype=torch.float32).to(self.device)  # type: ignore[literal-required]

        action = 2.0 * (vector("action") - self.action_low) / (self.action_high - self.action_low) - 1.0
        if self.chunk > 1:
            if action.ndim != 3 or action.shape[1] != self.chunk:
                raise ValueError(f"action_chunk={self.chunk} needs (B, {self.chunk}, A) actions, got {action.shape}")
            action = action.flatten(1)
        grasp = {}
        if self.grasp_dim is not None:
            grasp = {"grasp": (action[:, self.grasp_dim] > 0).long()}
            action = action[:, self.continuous_dims]
        return {
            "observation": self._observation(batch["observation"], augment=True),
            "next_observation": self._observation(batch["next_observation"], augment=True),
            "action": action.clamp(-1.0, 1.0),
            **grasp,
            "reward": vector("reward"),
            "discount": vector("discount"),
            "demo": self._demo_rows(batch),
            **({"mc_return": vector("mc_return")} if "mc_return" in batch else {}),
        }

    def _demo_rows(self, batch: Batch) -> Tensor:
        """(B,) bool: the transitions behaviour cloning imitates: offline ones, and with ``bc_successes`` the
        online ones of successful episodes."""
        demo = ~torch.as_tensor(batch["online"], dtype=torch.bool).reshape(-1)
        if self.config.bc_successes and "succeeded" in batch:
            demo |= torch.as_tensor(batch["succeeded"], dtype=torch.bool).reshape(-1)
        return demo.to(self.device)

    def _env_action(self, action: Tensor) -> Tensor:
        """[-1, 1] actor outputs -> env units: (B, A), or (B, H, A) chunks."""
        if self.chunk > 1:
            action = action.unflatten(-1, (self.chunk, self.action_dim))
        scaled = self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)
        return torch.minimum(torch.maximum(scaled, self.action_low), self.action_high)


def _take(value: Any, index: slice) -> Any:
    """``value[index]`` for a tensor, or for each tensor of a dict of them."""
    if isinstance(value, dict):
        return {k: v[index] for k, v in value.items()}
    return value[index]
