"""Observation encoders for realloop's policies, in pure torch: two convolutional trunks (a GroupNorm ResNet-18 for
GPUs, a small four-layer GroupNorm conv net that trains on a CPU), a spatial-softmax keypoint head, a per-camera
image encoder with random/center cropping, and an encoder for a whole observation dict with history.

GroupNorm rather than BatchNorm because the diffusion policy trains with small per-step batches and is evaluated
one observation at a time; BatchNorm's running statistics interact badly with that (and with EMA weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

IMAGE_PREFIX = "observation.images."


def _group_norm(channels: int) -> nn.GroupNorm:
    # 16 channels per group, as in the diffusion policy's replacement of ResNet BatchNorms.
    return nn.GroupNorm(num_groups=max(1, channels // 16), num_channels=channels)


class _BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock with GroupNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _group_norm(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18GN(nn.Module):
    """ResNet-18 convolutional trunk (no average pool, no fc) with GroupNorm(channels // 16) everywhere.

    forward: (B, in_channels, H, W) -> (B, 512, ~H/32, ~W/32).
    """

    out_channels = 512

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.norm1 = _group_norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers = []
        channels = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_BasicBlock(channels, width, stride), _BasicBlock(width, width)))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        for m in self.modules():
            # torchvision's initialisation, so training behaves like the usual from-scratch ResNet.
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SmallConvGN(nn.Module):
    """A small conv trunk for CPU training: four 3x3 conv + GroupNorm + ReLU layers, the first two with stride 2.

    forward: (B, in_channels, H, W) -> (B, channels[-1], ~H/4, ~W/4). About 1/27 of ResNet-18's multiply-adds on
    84x84 crops (11 M vs 296 M, torch's flop counter), and it keeps a 21x21 feature map, fine enough for
    spatial-softmax keypoints to place an object.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 32, 32)) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"the small conv trunk has 4 layers: give 4 channel counts, got {list(channels)}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=2 if i < 2 else 1, padding=1, bias=False), _group_norm(c)]
            layers.append(nn.ReLU(inplace=True))
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_channels = int(channels[-1])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


BACKBONES = ("resnet18", "small")


def make_backbone(name: str, in_channels: int) -> nn.Module:
    """A trunk by name: ``resnet18`` (GPUs) or ``small`` (CPUs)."""
    if name == "resnet18":
        return ResNet18GN(in_channels)
    if name == "small":
        return SmallConvGN(in_channels)
    raise ValueError(f"unknown image encoder {name!r}; known: {', '.join(BACKBONES)}")


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map: a 1x1 conv to ``num_keypoints`` channels, a softmax over the spatial positions
    of each, and the expected (x, y) position under it, in [-1, 1] (x along the width, y along the height).

    forward: (B, in_channels, height, width) -> (B, 2 * num_keypoints), laid out [x0, y0, x1, y1, ...].
    """

    grid: Tensor  # a buffer

    def __init__(self, in_channels: int, height: int, width: int, num_keypoints: int = 32) -> None:
        super().__init__()
        self.in_channels, self.height, self.width, self.num_keypoints = in_channels, height, width, num_keypoints
        self.keypoint_conv = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        # (H*W, 2) grid of (x, y); derived from the shape, so not part of the state dict.
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)

    @property
    def out_dim(self) -> int:
        return 2 * self.num_keypoints

    def forward(self, features: Tensor) -> Tensor:
        expected = (self.in_channels, self.height, self.width)
        if features.ndim != 4 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"SpatialSoftmax expects (B, *{expected}), got {tuple(features.shape)}")
        logits = self.keypoint_conv(features).flatten(2)  # (B, K, H*W)
        attention = torch.softmax(logits, dim=-1)
        keypoints = attention @ self.grid.to(attention.dtype)  # (B, K, 2)
        return keypoints.flatten(1)


def random_crop(images: Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """An independent uniformly random ``size`` = (height, width) crop of each image of (B, C, H, W)."""
    b, _, h, w = images.shape
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"crop {size} is larger than the images {(h, w)}")
    rand_device = generator.device if generator is not None else images.device
    tops = torch.randint(0, h - ch + 1, (b,), generator=generator, device=rand_device).to(images.device)
    lefts = torch.randint(0, w - cw + 1, (b,), generator=generator, device=rand_device).to(images.device)
    rows = tops[:, None] + torch.arange(ch, device=images.device)  # (B, ch)
    cols = lefts[:, None] + torch.arange(cw, device=images.device)  # (B, cw)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing over (batch, row, col) of the channels-last view gathers all crops in one op.
    crops = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, ch, cw, C)
    return crops.permute(0, 3, 1, 2).contiguous()


def center_crop(images: Tensor, size: tuple[int, int]) -> Tensor:
    """The centered ``size`` = (height, width) crop of (..., H, W) images."""
    h, w = images.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"crop {size} is larger than the images {(h, w)}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[..., top : top + ch, left : left + cw]


class ImageEncoder(nn.Module):
    """One camera: crop (random per sample in training, centered in eval, none when ``crop`` is None), a trunk
    (``backbone``: ``resnet18`` or ``small``), SpatialSoftmax, Linear, ReLU. ``color_jitter`` > 0 scales each
    channel of each training image by a factor in [1 - j, 1 + j] and shifts it by up to +-j (the images arrive
    normalised, so j is in units of the channel's std): lighting and colour changes the camera will see.

    forward: (B, C, H, W) with (C, H, W) == ``image_shape`` -> (B, feature_dim).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        crop: Sequence[int] | None = None,
        feature_dim: int = 64,
        backbone: str = "resnet18",
        color_jitter: float = 0.0,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        self.image_shape = tuple(int(s) for s in image_shape)
        c, h, w = self.image_shape
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        if self.crop is not None and (self.crop[0] > h or self.crop[1] > w or min(self.crop) < 1):
            raise ValueError(f"crop {crop} does not fit in images of height and width {(h, w)}")
        if not 0.0 <= color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
        self.color_jitter = float(color_jitter)
        self.feature_dim = feature_dim
        self.backbone = make_backbone(backbone, c)
        in_h, in_w = self.crop if self.crop is not None else (h, w)
        with torch.no_grad():
            feature_map = self.backbone(torch.zeros(1, c, in_h, in_w))
        self.feature_map_shape = (int(feature_map.shape[1]), int(feature_map.shape[2]), int(feature_map.shape[3]))
        self.pool = SpatialSoftmax(*self.feature_map_shape)
        self.out = nn.Sequential(nn.Linear(self.pool.out_dim, feature_dim), nn.ReLU())

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"ImageEncoder expects (B, *{self.image_shape}), got {tuple(images.shape)}")
        if self.training and self.color_jitter > 0:
            b, c = images.shape[:2]
            j = self.color_jitter
            gain = 1 + j * (2 * torch.rand(b, c, 1, 1, device=images.device, dtype=images.dtype) - 1)
            shift = j * (2 * torch.rand(b, c, 1, 1, device=images.device, dtype=images.dtype) - 1)
            images = images * gain + shift
        if self.crop is not None:
            images = random_crop(images, self.crop) if self.training else center_crop(images, self.crop)
        return self.out(self.pool(self.backbone(images)))


def split_observation_keys(
    shapes: Mapping[str, Sequence[int]],
) -> tuple[dict[str, tuple[int, ...]], list[str], list[str]]:
    """Per-sample ``shapes`` as int tuples, the image keys (``observation.images.*``, each (C, H, W)) and the vector
    keys (each (D,)), both sorted; a ValueError names a key of the wrong rank."""
    if not shapes:
        raise ValueError("an observation encoder needs at least one observation feature")
    out = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
    images = sorted(k for k in out if k.startswith(IMAGE_PREFIX))
    vectors = sorted(k for k in out if not k.startswith(IMAGE_PREFIX))
    for key in images:
        if len(out[key]) != 3:
            raise ValueError(f"image feature {key!r} must have shape (C, H, W), got {out[key]}")
    for key in vectors:
        if len(out[key]) != 1:
            raise ValueError(
                f"feature {key!r} has shape {out[key]}; non-image features must be 1-D (D,) "
                f"(image keys start with {IMAGE_PREFIX!r})"
            )
    return out, images, vectors


class ObservationEncoder(nn.Module):
    """A whole observation dict with history -> one flat conditioning vector.

    ``shapes`` maps feature keys to per-step shapes: ``observation.images.<cam>`` keys are (C, H, W) images, every
    other key a (D,) vector. Per step the features are [low-dim vectors in sorted key order, image features of the
    cameras in sorted key order]; the steps are then concatenated, oldest first.

    forward: {key: (B, n_obs_steps, *shape)} -> (B, n_obs_steps * out_dim_per_step). Keys not in ``shapes`` are
    ignored.
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        crop: Sequence[int] | None = None,
        image_feature_dim: int = 64,
        share_image_encoder: bool = False,
        image_encoder: str = "resnet18",
        color_jitter: float = 0.0,
    ) -> None:
        super().__init__()
        self.shapes, self.image_keys, self.low_dim_keys = split_observation_keys(shapes)
        self.share_image_encoder = share_image_encoder
        self.image_encoders = nn.ModuleDict()
        if self.image_keys and share_image_encoder:
            image_shapes = {self.shapes[k] for k in self.image_keys}
            if len(image_shapes) != 1:
                listed = ", ".join(f"{k}: {self.shapes[k]}" for k in self.image_keys)
                raise ValueError(
                    f"share_image_encoder needs all cameras to have the same shape, got {listed}; "
                    "resize the cameras to one shape or set share_image_encoder=False"
                )
            self.image_encoders["shared"] = ImageEncoder(
                self.shapes[self.image_keys[0]], crop, image_feature_dim, image_encoder, color_jitter
            )
        else:
            for key in self.image_keys:
                # ModuleDict names cannot contain dots.
                name = key[len(IMAGE_PREFIX) :].replace(".", "_")
                if name in self.image_encoders:
                    raise ValueError(f"camera keys collide as module name {name!r}: rename {key!r}")
                self.image_encoders[name] = ImageEncoder(
                    self.shapes[key], crop, image_feature_dim, image_encoder, color_jitter
                )
        low_dim = sum(self.shapes[k][0] for k in self.low_dim_keys)
        self.out_dim_per_step: int = low_dim + image_feature_dim * len(self.image_keys)

    def out_dim(self, n_obs_steps: int) -> int:
        """Length of the flat vector forward returns for ``n_obs_steps`` steps of history."""
        return n_obs_steps * self.out_dim_per_step

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        missing = [k for k in self.shapes if k not in obs]
        if missing:
            raise KeyError(f"observation is missing {missing}; the encoder was built for {sorted(self.shapes)}")
        first = obs[(self.low_dim_keys + self.image_keys)[0]]
        b, n = first.shape[:2]
        for key, shape in self.shapes.items():
            if tuple(obs[key].shape) != (b, n, *shape):
                raise ValueError(f"obs[{key!r}] has shape {tuple(obs[key].shape)}, expected {(b, n, *shape)}")
        parts = [obs[k] for k in self.low_dim_keys]
        if self.image_keys:
            if self.share_image_encoder:
                # All cameras through the shared encoder in one batch: (n_cams * B * n, C, H, W).
                images = torch.cat([obs[k].flatten(0, 1) for k in self.image_keys])
                features = self.image_encoders["shared"](images).reshape(len(self.image_keys), b, n, -1)
                parts.extend(features.unbind(0))
            else:
                for key, encoder in zip(self.image_keys, self.image_encoders.values(), strict=True):
                    parts.append(encoder(obs[key].flatten(0, 1)).reshape(b, n, -1))
        per_step = torch.cat(parts, dim=-1)  # (B, n, out_dim_per_step)
        return per_step.flatten(1)
