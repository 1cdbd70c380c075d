"""The networks of the actor-critic learners: a critic ensemble computed as batched matrix products, a
tanh-squashed Gaussian actor, and the observation encoder they share.

- :class:`EnsembleLinear` / :class:`EnsembleLayerNorm`: E independent layers held as stacked (E, ...) weights and
  applied with one ``torch.baddbmm`` (no Python loop over members); ``members`` selects a subset (the target
  critics of a REDQ/RLPD backup) by indexing the weights, so only that subset is computed.
- :class:`EnsembleQ`: E Q-functions ``Q_e(features, action)``, each an MLP with LayerNorm after every hidden
  Linear (then ReLU), as in RLPD (Ball et al. 2023): LayerNorm bounds the Q-values away from the data, which is
  what lets a high update-to-data ratio work without pessimism terms. Without an action input and with K outputs
  it is a Q-function over K discrete actions (the grasp critic).
- :class:`TanhGaussianActor`: ``a = tanh(u)``, ``u ~ N(mean, std)``; its log-density carries the tanh Jacobian.
- :class:`FeatureEncoder`: an observation dict -> one flat feature vector: normalised state vectors and, per
  camera, :class:`~realloop.policies.encoders.ImageEncoder` features of uint8 images read as [0, 1].
- :func:`random_shift`: DrQ's augmentation (pad by replication, random crop back to size).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realloop.policies.encoders import IMAGE_PREFIX, ImageEncoder, random_crop, split_observation_keys
from realloop.policies.normalize import Normalizer

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the actor's std lies in [e^-5, e^2] (SpinUp / DrQ's squashing)


class EnsembleLinear(nn.Module):
    """E independent Linear layers: weight (E, in, out), bias (E, 1, out), each member initialised like
    ``nn.Linear`` (uniform in +-1/sqrt(in)), independently.

    forward: x (B, in), shared by every member, or (E', B, in), one slice per member -> (E', B, out), where E' is E,
    or ``len(members)`` when ``members`` (indices into the ensemble) selects a subset.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_members, self.in_features, self.out_features = num_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        if x.ndim == 2:
            x = x.expand(weight.shape[0], *x.shape)
        return torch.baddbmm(bias, x, weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with each member's own scale and shift, (E, 1, features) each.

    forward: (E', B, features) -> same shape; ``members`` as in :class:`EnsembleLinear`."""

    def __init__(self, num_members: int, features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, features))

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return F.layer_norm(x, x.shape[-1:]) * weight + bias


class EnsembleQ(nn.Module):
    """E Q-functions of (features, action), computed together.

    Each member: ``[features, action] -> (Linear -> LayerNorm -> ReLU) x len(hidden_dims) -> Linear -> Q`` (no
    LayerNorm when ``layer_norm`` is False: plain SAC).

    forward: features (B, F), action (B, A) -> (E', B); ``members`` as in :class:`EnsembleLinear`. With
    ``action_dim`` 0 and ``outputs`` K > 1, a Q-function over K discrete actions: features (B, F), action None ->
    (E', B, K).
    """

    def __init__(
        self,
        feature_dim: int,
        action_dim: int,
        num_members: int,
        hidden_dims: Sequence[int] = (256, 256),
        layer_norm: bool = True,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        if num_members < 1 or outputs < 1:
            raise ValueError(f"a critic ensemble needs at least one member and output, got {num_members}, {outputs}")
        self.num_members, self.outputs = num_members, outputs
        widths = [feature_dim + action_dim, *hidden_dims]
        self.hidden = nn.ModuleList(EnsembleLinear(num_members, i, o) for i, o in itertools.pairwise(widths))
        self.norms = nn.ModuleList(EnsembleLayerNorm(num_members, o) for o in hidden_dims) if layer_norm else None
        self.out = EnsembleLinear(num_members, widths[-1], outputs)

    def forward(self, features: Tensor, action: Tensor | None = None, members: Tensor | None = None) -> Tensor:
        x = features if action is None else torch.cat([features, action], dim=-1)
        for i, linear in enumerate(self.hidden):
            x = linear(x, members)
            if self.norms is not None:
                x = self.norms[i](x, members)
            x = F.relu(x)
        out = self.out(x, members)
        return out.squeeze(-1) if self.outputs == 1 else out

    def min_over_subset(self, features: Tensor, action: Tensor, size: int) -> tuple[Tensor, Tensor]:
        """The minimum over ``size`` members drawn at random without replacement (the REDQ/RLPD target;
        ``size`` = E is clipped double-Q over the whole ensemble): ((B,) values, (size,) member indices)."""
        members = torch.randperm(self.num_members, device=features.device)[:size]
        return self(features, action, members).min(dim=0).values, members


GRASP_STATES = 2  # the grasp critic's discrete actions: the gripper at its lower or its upper bound
GRASP_MEMBERS = 2  # its ensemble: double Q, the target the minimum of the two


def grasp_critic(feature_dim: int, hidden_dims: Sequence[int], layer_norm: bool = True) -> EnsembleQ:
    """The grasp critic of a learner with a discrete gripper (``SACConfig.grasp_dim``): Q of features over the
    gripper's two states, GRASP_MEMBERS members. forward: features (B, F) -> (members, B, GRASP_STATES)."""
    return EnsembleQ(feature_dim, 0, GRASP_MEMBERS, hidden_dims, layer_norm, outputs=GRASP_STATES)


def tanh_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log-density of ``a = tanh(u)`` for ``u ~ N(mean, exp(log_std))``, per sample (summed over the last dim).

    ``log p(a) = log N(u) - sum log(1 - tanh(u)^2)``, with ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``,
    which stays finite where tanh(u) rounds to +-1."""
    normal = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (normal - log_det).sum(dim=-1)


class TanhGaussianActor(nn.Module):
    """A tanh-squashed diagonal Gaussian policy over actions in [-1, 1]: an MLP (Linear, ReLU) then a mean and a
    log-std head; the log-std is squashed into [LOG_STD_MIN, LOG_STD_MAX].

    forward: features (B, F) -> (mean (B, A), log_std (B, A)), both before the tanh.
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden_dims: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = feature_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.mean = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(features)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(self.log_std(h)) + 1.0)
        return self.mean(h), log_std

    def sample(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """A reparameterised sample (gradients flow through it) and its log-density: ((B, A) in (-1, 1), (B,))."""
        mean, log_std = self(features)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)

    def mode(self, features: Tensor) -> Tensor:
        """The deterministic action tanh(mean), (B, A)."""
        return torch.tanh(self(features)[0])


def random_shift(images: Tensor, pad: int = 4) -> Tensor:
    """DrQ's augmentation: each image of (B, C, H, W) padded by ``pad`` pixels (edge replicated) and cropped back to
    (H, W) at a random offset, i.e. shifted by up to +-pad pixels, independently per sample."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return random_crop(padded, (h, w))


class Temperature(nn.Module):
    """SAC's entropy temperature alpha, learnt as its log so it stays positive. forward: () -> alpha."""

    def __init__(self, initial: float = 1.0) -> None:
        super().__init__()
        if initial <= 0:
            raise ValueError(f"the initial temperature must be positive, got {initial}")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


class FeatureEncoder(nn.Module):
    """An observation dict (one step, batched) -> a flat feature vector.

    ``shapes`` maps each observation key to its per-sample shape: ``observation.images.<cam>`` keys are (C, H, W)
    images, every other key a (D,) state vector. The features are [state vectors in sorted key order, normalised;
    image features of the cameras in sorted key order].

    State vectors are normalised with fixed statistics (``stats``, the form of ``realloop.data.stats.load_stats``:
    ``{key: {"mean", "std", "min", "max", ...}}``) by ``normalization`` (``mean_std``, ``min_max`` or
    ``identity``; one mode for all, or per key); the maps are buffers (:class:`~realloop.policies.normalize.
    Normalizer`), saved with the weights. Without ``stats`` the state passes unchanged. ``std_floor`` widens
    statistics narrower than it (the std for ``mean_std``, half the range for ``min_max``), so an input the data
    held nearly still is not scaled up by hundreds when it moves online.

    Images arrive as uint8 (read as [0, 1]) or as floats already in [0, 1]; each camera has its own
    :class:`~realloop.policies.encoders.ImageEncoder` (``image_encoder``: ``small`` or ``resnet18``) without its
    crop: augmentation (:func:`random_shift`) is the learner's, applied once per batch.

    forward: {key: (B, *shape)} -> (B, out_dim). Keys not in ``shapes`` are ignored.
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        normalization: str | Mapping[str, str] = "mean_std",
        image_encoder: str = "small",
        image_feature_dim: int = 64,
        std_floor: float = 0.0,
    ) -> None:
        super().__init__()
        self.shapes, self.image_keys, self.state_keys = split_observation_keys(shapes)
        if stats is None:
            modes = dict.fromkeys(self.state_keys, "identity")
        elif isinstance(normalization, str):
            modes = dict.fromkeys(self.state_keys, normalization)
        else:
            modes = {k: normalization.get(k, "identity") for k in self.state_keys}
        self.normalizer = Normalizer({k: self.shapes[k] for k in self.state_keys}, modes)
        if stats is not None:
            self.normalizer.set_stats(widen_stats(stats, std_floor))
        self.image_encoders = nn.ModuleDict()
        for key in self.image_keys:
            if _module_name(key) in self.image_encoders:
                raise ValueError(f"camera keys collide as module name {_module_name(key)!r}: rename {key!r}")
            self.image_encoders[_module_name(key)] = ImageEncoder(
                self.shapes[key], None, image_feature_dim, image_encoder
            )
        self.out_dim = sum(self.shapes[k][0] for k in self.state_keys) + image_feature_dim * len(self.image_keys)

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        missing = [k for k in self.shapes if k not in obs]
        if missing:
            raise KeyError(f"the observation lacks {missing}; the learner was built for {sorted(self.shapes)}")
        parts = [self.normalizer.normalize(k, obs[k].float()) for k in self.state_keys]
        for key in self.image_keys:
            parts.append(self.image_encoders[_module_name(key)](to_unit_float(obs[key])))
        return torch.cat(parts, dim=-1)


def widen_stats(stats: Mapping[str, Mapping[str, Any]], floor: float) -> dict[str, dict[str, Any]]:
    """``stats`` with every std at least ``floor`` and every [min, max] at least ``2 * floor`` wide (about its
    centre)."""
    out: dict[str, dict[str, Any]] = {}
    for key, s in stats.items():
        s = dict(s)
        if "std" in s:
            s["std"] = np.maximum(np.asarray(s["std"], dtype=np.float64), floor)
        if "min" in s and "max" in s:
            lo, hi = np.asarray(s["min"], dtype=np.float64), np.asarray(s["max"], dtype=np.float64)
            centre, half = (lo + hi) / 2.0, np.maximum((hi - lo) / 2.0, floor)
            s["min"], s["max"] = centre - half, centre + half
        out[key] = s
    return out


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images as float32 in [0, 1]; float images unchanged."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def _module_name(key: str) -> str:
    return key[len(IMAGE_PREFIX) :].replace(".", "_")  # module names cannot contain dots
