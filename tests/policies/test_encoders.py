"""The observation encoders: the GroupNorm ResNet-18 trunk, spatial softmax keypoints, cropping, and the
observation-dict encoder's layout, sharing and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from realloop.policies.encoders import (
    ImageEncoder,
    ObservationEncoder,
    ResNet18GN,
    SpatialSoftmax,
    center_crop,
    random_crop,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def resnet18_trunk_params(in_channels: int) -> int:
    """Parameter count of torchvision's resnet18 without fc, from its architecture (norm layers: 2 per channel)."""
    total = in_channels * 64 * 7 * 7 + 2 * 64
    c_in = 64
    for i, c in enumerate((64, 128, 256, 512)):
        for j in range(2):
            block_in = c_in if j == 0 else c
            total += block_in * c * 9 + c * c * 9 + 2 * 2 * c
            if j == 0 and i > 0:
                total += c_in * c + 2 * c  # 1x1 downsample conv + its norm
        c_in = c
    return total


def test_resnet18gn_has_no_batchnorm_and_resnet18_parameter_count():
    net = ResNet18GN()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)
    # torchvision resnet18 has 11,689,512 parameters, of which fc (512 * 1000 + 1000) is 513,000.
    assert resnet18_trunk_params(3) == 11_689_512 - 513_000
    assert n_params(net) == resnet18_trunk_params(3)
    assert n_params(ResNet18GN(1)) == resnet18_trunk_params(1)


@pytest.mark.parametrize(("size", "expected"), [(84, (3, 3)), (96, (3, 3)), (128, (4, 4)), (100, (4, 4))])
def test_resnet18gn_output_shape(size, expected):
    out = ResNet18GN()(torch.rand(2, 3, size, size))
    assert out.shape == (2, 512, *expected)


def test_resnet18gn_one_channel_input():
    out = ResNet18GN(in_channels=1)(torch.rand(2, 1, 64, 96))
    assert out.shape == (2, 512, 2, 3)
    assert torch.isfinite(out).all()


def _identity_softmax(channels: int, h: int, w: int) -> SpatialSoftmax:
    pool = SpatialSoftmax(channels, h, w, num_keypoints=channels)
    with torch.no_grad():
        pool.keypoint_conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        pool.keypoint_conv.bias.zero_()
    return pool


def test_spatial_softmax_finds_bright_pixels():
    h, w = 5, 7
    pool = _identity_softmax(2, h, w)
    features = torch.zeros(1, 2, h, w)
    features[0, 0, 1, 5] = 50.0  # keypoint 0 at row 1, column 5
    features[0, 1, 4, 0] = 50.0  # keypoint 1 at row 4, column 0
    out = pool(features)
    assert out.shape == (1, 4)
    expected = torch.tensor([[-1 + 2 * 5 / (w - 1), -1 + 2 * 1 / (h - 1), -1.0, 1.0]])  # [x0, y0, x1, y1]
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_spatial_softmax_uniform_features_give_the_center_and_bad_shape_raises():
    pool = _identity_softmax(3, 4, 6)
    torch.testing.assert_close(pool(torch.zeros(2, 3, 4, 6)), torch.zeros(2, 6), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="SpatialSoftmax expects"):
        pool(torch.zeros(2, 3, 4, 5))


def _position_images(b: int, c: int, h: int, w: int) -> torch.Tensor:
    # Each pixel's value encodes its (row, column), so a crop reveals where it came from.
    pos = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    return pos.expand(b, c, h, w) + torch.arange(c, dtype=torch.float32).reshape(1, c, 1, 1) * 10_000


def test_random_crop_takes_an_independent_valid_crop_per_sample():
    b, c, h, w, ch, cw = 64, 2, 12, 10, 7, 4
    images = _position_images(b, c, h, w)
    crops = random_crop(images, (ch, cw), generator=torch.Generator().manual_seed(0))
    assert crops.shape == (b, c, ch, cw)
    offsets = set()
    for i in range(b):
        top, left = divmod(int(crops[i, 0, 0, 0]), w)
        torch.testing.assert_close(crops[i], images[i, :, top : top + ch, left : left + cw], rtol=0, atol=0)
        offsets.add((top, left))
    assert len(offsets) > 10  # 6 * 7 = 42 possible offsets for 64 samples
    assert {t for t, _ in offsets} == set(range(h - ch + 1))
    assert {left for _, left in offsets} == set(range(w - cw + 1))


def test_center_crop_location():
    images = _position_images(1, 1, 10, 9)
    crop = center_crop(images, (3, 4))
    assert crop.shape == (1, 1, 3, 4)
    top, left = divmod(int(crop[0, 0, 0, 0]), 9)
    assert (top, left) == (3, 2)  # odd margins (7 and 5) round down
    with pytest.raises(ValueError, match="larger"):
        center_crop(images, (11, 5))


def test_image_encoder_train_crops_differ_eval_is_center_crop():
    torch.manual_seed(0)
    enc = ImageEncoder((3, 72, 72), crop=(64, 64), feature_dim=16)
    image = torch.rand(1, 3, 72, 72)
    batch = image.expand(8, -1, -1, -1)

    enc.train()
    train_features = enc(batch)
    assert train_features.shape == (8, 16)
    assert not torch.allclose(train_features, train_features[:1].expand_as(train_features))

    enc.eval()
    with torch.no_grad():
        eval_features = enc(batch)
        torch.testing.assert_close(eval_features, eval_features[:1].expand_as(eval_features))
        torch.testing.assert_close(enc(batch), eval_features)
        # An uncropped encoder on 64x64 images with the same weights, fed the center crops, agrees.
        plain = ImageEncoder((3, 64, 64), crop=None, feature_dim=16).eval()
        plain.load_state_dict(enc.state_dict())
        torch.testing.assert_close(plain(image[:, :, 4:68, 4:68]), eval_features[:1])


def test_image_encoder_color_jitter_is_a_per_channel_gain_and_shift_in_training_only():
    torch.manual_seed(0)
    enc = ImageEncoder((3, 16, 16), crop=None, feature_dim=8, backbone="small", color_jitter=0.3)
    seen: list[torch.Tensor] = []
    enc.backbone.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
    image = torch.randn(1, 3, 16, 16)
    batch = image.expand(64, -1, -1, -1)

    enc.train()
    enc(batch)
    x, y = image.flatten(2), seen[-1].flatten(2)  # (1, 3, 256), (64, 3, 256)
    gain = ((y - y.mean(-1, keepdim=True)) * (x - x.mean(-1, keepdim=True))).sum(-1) / (
        (x - x.mean(-1, keepdim=True)) ** 2
    ).sum(-1)
    shift = y.mean(-1) - gain * x.mean(-1)
    torch.testing.assert_close(y, gain[..., None] * x + shift[..., None], rtol=1e-4, atol=1e-4)  # affine per channel
    assert gain.sub(1).abs().max() <= 0.3 + 1e-5 and shift.abs().max() <= 0.3 + 1e-5
    assert gain.std() > 0.05 and shift.std() > 0.05  # drawn per sample and channel
    assert not torch.allclose(gain[:, 0], gain[:, 1])

    enc.eval()
    with torch.no_grad():
        enc(batch)
    torch.testing.assert_close(seen[-1], batch)
    with pytest.raises(ValueError, match="color_jitter"):
        ImageEncoder((3, 16, 16), color_jitter=1.5)


def test_image_encoder_gradient_reaches_conv1_and_shape_checks():
    enc = ImageEncoder((1, 40, 48), crop=(32, 40), feature_dim=8)
    assert enc.feature_map_shape == (512, 1, 2)
    enc(torch.rand(3, 1, 40, 48)).sum().backward()
    grad = enc.backbone.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ImageEncoder expects"):
        enc(torch.rand(3, 1, 32, 40))
    with pytest.raises(ValueError, match="does not fit"):
        ImageEncoder((3, 40, 48), crop=(41, 40))


SHAPES = {
    "observation.state": (3,),
    "observation.environment_state": (2,),
    "observation.images.wrist": (3, 40, 40),
    "observation.images.front": (3, 40, 40),
}


def _obs(b: int, n: int, shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.rand(b, n, *s) for k, s in shapes.items()}


def test_observation_encoder_dims_and_layout():
    torch.manual_seed(0)
    enc = ObservationEncoder(SHAPES, crop=(32, 32), image_feature_dim=16).eval()
    assert enc.out_dim_per_step == 3 + 2 + 2 * 16
    assert enc.out_dim(2) == 2 * enc.out_dim_per_step
    obs = _obs(4, 2, SHAPES)
    obs["action"] = torch.rand(4, 8, 2)  # other batch keys are ignored
    with torch.no_grad():
        out = enc(obs)
    assert out.shape == (4, enc.out_dim(2))
    d = enc.out_dim_per_step
    for step in range(2):
        # Low-dim features come first, in sorted key order, then the cameras (sorted: front, wrist).
        torch.testing.assert_close(out[:, step * d : step * d + 2], obs["observation.environment_state"][:, step])
        torch.testing.assert_close(out[:, step * d + 2 : step * d + 5], obs["observation.state"][:, step])
        front = enc.image_encoders["front"](obs["observation.images.front"][:, step])
        wrist = enc.image_encoders["wrist"](obs["observation.images.wrist"][:, step])
        torch.testing.assert_close(out[:, step * d + 5 : step * d + 21], front)
        torch.testing.assert_close(out[:, step * d + 21 : step * d + 37], wrist)


def test_observation_encoder_history_is_step_major():
    torch.manual_seed(0)
    enc = ObservationEncoder(SHAPES, image_feature_dim=8).eval()
    obs = _obs(2, 3, SHAPES)
    changed = {k: v.clone() for k, v in obs.items()}
    changed["observation.images.wrist"][:, 1] = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        diff = (enc(obs) - enc(changed)).abs().amax(0)
    d = enc.out_dim_per_step
    # Only step 1's wrist-camera slot moves.
    assert diff[:d].max() == 0 and diff[2 * d :].max() == 0
    assert diff[d : d + 5 + 8].max() == 0
    assert diff[d + 5 + 8 : 2 * d].max() > 0


def test_observation_encoder_shared_vs_per_camera_parameters():
    per_camera = ObservationEncoder(SHAPES, crop=(32, 32), image_feature_dim=16)
    shared = ObservationEncoder(SHAPES, crop=(32, 32), image_feature_dim=16, share_image_encoder=True)
    one = ImageEncoder((3, 40, 40), crop=(32, 32), feature_dim=16)
    assert n_params(per_camera) == 2 * n_params(one)
    assert n_params(shared) == n_params(one)
    assert shared.out_dim_per_step == per_camera.out_dim_per_step

    shared.eval()
    obs = _obs(2, 2, SHAPES)
    obs["observation.images.wrist"] = obs["observation.images.front"].clone()
    with torch.no_grad():
        out = shared(obs)
    d = shared.out_dim_per_step
    # Same encoder, same images -> the two camera slots are equal.
    torch.testing.assert_close(out[:, 5:21], out[:, 21:37])
    torch.testing.assert_close(out[:, d + 5 : d + 21], out[:, d + 21 : d + 37])


def test_observation_encoder_low_dim_only_and_errors():
    enc = ObservationEncoder({"observation.state": (4,)})
    obs = {"observation.state": torch.rand(2, 3, 4)}
    torch.testing.assert_close(enc(obs), obs["observation.state"].reshape(2, 12))
    assert n_params(enc) == 0

    mixed = {"observation.images.a": (3, 40, 40), "observation.images.b": (3, 32, 40)}
    with pytest.raises(ValueError, match=r"\(3, 40, 40\).*\(3, 32, 40\)"):
        ObservationEncoder(mixed, share_image_encoder=True)
    assert ObservationEncoder(mixed, image_feature_dim=4).out_dim_per_step == 8
    with pytest.raises(ValueError, match="1-D"):
        ObservationEncoder({"observation.state": (2, 3)})
    with pytest.raises(ValueError, match="C, H, W"):
        ObservationEncoder({"observation.images.a": (40, 40)})
    with pytest.raises(KeyError, match="missing"):
        enc({"observation.other": torch.rand(2, 3, 4)})
    with pytest.raises(ValueError, match="expected"):
        enc({"observation.state": torch.rand(2, 3, 5)})


def test_small_conv_trunk_is_a_fraction_of_resnet18_and_keeps_a_fine_feature_map() -> None:
    from realloop.policies.encoders import SmallConvGN

    small = SmallConvGN(3)
    out = small(torch.zeros(2, 3, 84, 84))
    assert out.shape == (2, 32, 21, 21)  # stride 4: a 21x21 map for the keypoints
    assert n_params(small) < n_params(ResNet18GN(3)) / 50
    enc = ImageEncoder((3, 96, 96), crop=(84, 84), feature_dim=32, backbone="small")
    assert enc.feature_map_shape == (32, 21, 21)
    enc.eval()
    assert enc(torch.rand(4, 3, 96, 96)).shape == (4, 32)
    obs = ObservationEncoder({"observation.images.front": (3, 96, 96)}, crop=(84, 84), image_encoder="small")
    assert isinstance(obs.image_encoders["front"].backbone, SmallConvGN)
    with pytest.raises(ValueError, match="unknown image encoder 'resnet'"):
        ImageEncoder((3, 96, 96), backbone="resnet")
