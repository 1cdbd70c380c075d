"""The actor-critic networks: ensemble layers against separate layers, the target subset, the tanh-Gaussian
density, the DrQ shift, the observation encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from realloop.policies.rl.networks import (
    EnsembleLinear,
    EnsembleQ,
    FeatureEncoder,
    TanhGaussianActor,
    random_shift,
    tanh_gaussian_log_prob,
)


def test_ensemble_linear_equals_separate_linear_layers() -> None:
    torch.manual_seed(0)
    ens = EnsembleLinear(3, 5, 4)
    layers = []
    for e in range(3):
        layer = nn.Linear(5, 4)
        with torch.no_grad():
            layer.weight.copy_(ens.weight[e].T)
            layer.bias.copy_(ens.bias[e, 0])
        layers.append(layer)
    shared = torch.randn(7, 5)
    expected = torch.stack([layer(shared) for layer in layers])
    torch.testing.assert_close(ens(shared), expected)
    per_member = torch.randn(3, 7, 5)
    torch.testing.assert_close(ens(per_member), torch.stack([layers[e](per_member[e]) for e in range(3)]))
    members = torch.tensor([2, 0])
    torch.testing.assert_close(ens(shared, members), expected[members])
    # each member drawn on its own, like nn.Linear's init
    assert not torch.equal(ens.weight[0], ens.weight[1])
    assert ens.weight.abs().max() <= 1 / np.sqrt(5)


def test_q_ensemble_members_differ_and_the_target_is_the_min_over_exactly_m_members() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(6, 2, num_members=10, hidden_dims=(32, 32))
    features, action = torch.randn(64, 6), torch.rand(64, 2) * 2 - 1
    all_q = q(features, action)
    assert all_q.shape == (10, 64)
    for i in range(10):
        for j in range(i + 1, 10):
            assert not torch.allclose(all_q[i], all_q[j], atol=1e-3), f"members {i} and {j} agree"
    subsets = set()
    below_global_min = 0
    for _ in range(30):
        values, members = q.min_over_subset(features, action, 2)
        assert members.shape == (2,) and len(set(members.tolist())) == 2
        torch.testing.assert_close(values, all_q[members].min(dim=0).values)
        subsets.add(tuple(sorted(members.tolist())))
        below_global_min += int((values > all_q.min(dim=0).values + 1e-6).any())
    assert len(subsets) > 5  # drawn afresh each time
    assert below_global_min > 0  # a subset's min is not the ensemble's
    values, members = q.min_over_subset(features, action, 10)
    torch.testing.assert_close(values, all_q.min(dim=0).values)


def test_layer_norm_sits_after_each_hidden_linear() -> None:
    torch.manual_seed(0)
    q = EnsembleQ(4, 1, num_members=2, hidden_dims=(16, 8))
    assert q.norms is not None and [n.weight.shape for n in q.norms] == [(2, 1, 16), (2, 1, 8)]
    plain = EnsembleQ(4, 1, num_members=2, hidden_dims=(16, 8), layer_norm=False)
    assert plain.norms is None
    # LayerNorm bounds each hidden layer's output whatever the input's scale; without it Q grows with the input
    x = torch.randn(5, 4) * 1000
    assert q(x, torch.zeros(5, 1)).abs().max() < 10
    assert plain(x, torch.zeros(5, 1)).abs().max() > 10


def test_tanh_gaussian_log_prob_matches_torch_distributions_and_integrates_to_one() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(256, 3), torch.rand(256, 3) * 2 - 1.5
    u = mean + log_std.exp() * torch.randn(256, 3)
    u = u.clamp(-4, 4)  # torch's atanh inverse is accurate here
    reference = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    expected = reference.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), expected, rtol=1e-4, atol=1e-4)

    # numerically: the density of a = tanh(u) over (-1, 1) integrates to 1
    a = torch.linspace(-1 + 1e-7, 1 - 1e-7, 200_001, dtype=torch.float64)
    density = tanh_gaussian_log_prob(
        torch.atanh(a)[:, None], torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[np.log(0.5)]])
    ).exp()
    assert abs(torch.trapezoid(density, a).item() - 1.0) < 1e-3


def test_actor_actions_stay_in_bounds_with_finite_log_probs() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 2, hidden_dims=(16,))
    with torch.no_grad():
        actor.mean.bias.fill_(40.0)  # far into tanh's saturation
    action, log_prob = actor.sample(torch.randn(128, 4))
    assert action.shape == (128, 2) and log_prob.shape == (128,)
    assert bool((action.abs() <= 1).all()) and bool(torch.isfinite(log_prob).all())
    torch.testing.assert_close(actor.mode(torch.zeros(1, 4)), torch.tanh(actor(torch.zeros(1, 4))[0]))
    log_std = actor(torch.randn(128, 4))[1]
    assert bool((log_std >= -5).all()) and bool((log_std <= 2).all())


def test_random_shift_moves_each_image_by_at_most_pad_pixels() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 12, 10)
    shifted = random_shift(images, pad=2)
    assert shifted.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for i in range(6):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(shifted[i], padded[i, :, dy : dy + 12, dx : dx + 10])
        ]
        assert found, f"image {i} is not a shifted copy"
        offsets.add(found[0])
    assert len(offsets) > 1
    torch.testing.assert_close(random_shift(images, pad=0), images)


def test_feature_encoder_normalises_state_and_reads_uint8_images_as_unit_floats() -> None:
    torch.manual_seed(0)
    shapes = {"observation.state": (3,), "observation.images.wrist": (3, 16, 16)}
    stats = {"observation.state": {"mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 0.5], "min": [0] * 3, "max": [1] * 3}}
    enc = FeatureEncoder(shapes, stats, image_encoder="small", image_feature_dim=8)
    assert enc.out_dim == 3 + 8
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    state = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 3.5]])
    out = enc({"observation.state": state, "observation.images.wrist": images})
    torch.testing.assert_close(out[:, :3], torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0]]))
    as_float = enc({"observation.state": state, "observation.images.wrist": images.float() / 255})
    torch.testing.assert_close(out, as_float)
    assert any("normalizer" in k for k in enc.state_dict())  # the statistics travel with the weights
    with pytest.raises(KeyError, match=r"observation\.images\.wrist"):
        enc({"observation.state": state})


def test_feature_encoder_widens_statistics_narrower_than_the_floor() -> None:
    shapes = {"observation.state": (3,)}
    # the second input barely moved in the data (std 1e-4, range 2e-4): at scale 1e4 a 1 cm move online would
    # become 100; with the floor it becomes 1
    stats = {
        "observation.state": {
            "mean": [0.0, 1.0, 0.0],
            "std": [0.5, 1e-4, 0.02],
            "min": [-1.0, 0.9999, 0.0],
            "max": [1.0, 1.0001, 0.1],
        }
    }
    state = torch.tensor([[0.5, 1.01, 0.05]])
    floored = FeatureEncoder(shapes, stats, "mean_std", std_floor=0.01)
    torch.testing.assert_close(floored({"observation.state": state}), torch.tensor([[1.0, 1.0, 2.5]]))
    raw = FeatureEncoder(shapes, stats, "mean_std")
    torch.testing.assert_close(raw({"observation.state": state}), torch.tensor([[1.0, 100.0, 2.5]]))
    # min_max: a range narrower than 2 * floor is widened about its centre
    box = FeatureEncoder(shapes, stats, "min_max", std_floor=0.01)
    torch.testing.assert_close(box({"observation.state": state}), torch.tensor([[0.5, 1.0, 0.0]]))
