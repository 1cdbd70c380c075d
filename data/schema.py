"""The dataset's feature schema: what each stream holds, stored in the root attributes.

Feature names follow LeRobot's convention: ``observation.state``, ``observation.images.<camera>``,
``action``, ``next.reward``, ``next.done``. A feature whose name starts with ``observation.images.`` is an
image stream (uint8, ``H x W x 3`` or ``H x W``) stored with an image codec; every other feature is a
numeric stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from realloop.data.codecs import FORMATS, default_quality

FORMAT_NAME = "realloop.episodes"
FORMAT_VERSION = 1
IMAGE_PREFIX = "observation.images."
SOURCES = ("teleop", "policy", "intervention", "scripted", "sim")


class SchemaError(ValueError):
    """A feature description or a sample does not fit the schema."""


@dataclass(frozen=True)
class Feature:
    """One stream of the dataset.

    ``shape`` is the shape of one sample (``()`` for a scalar); ``names`` names the entries of the last axis
    (joint names for a state vector); ``units`` is free text (``rad``, ``m/s``); ``rate_hz`` is the nominal
    rate, for information only (the timestamps are the truth). Image features take ``image_format``
    (``jpeg``, ``png`` lossless, ``webp``) and ``image_quality``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    units: str | None = None
    rate_hz: float | None = None
    image_format: str | None = None
    image_quality: int | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.name.startswith(IMAGE_PREFIX)

    @property
    def camera(self) -> str | None:
        return self.name[len(IMAGE_PREFIX) :] if self.is_image else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["names"] = list(self.names) if self.names is not None else None
        return {k: v for k, v in d.items() if v not in (None, "", {})}

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Feature:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "name"}
        known["shape"] = tuple(int(s) for s in d.get("shape", ()))
        if d.get("names") is not None:
            known["names"] = tuple(d["names"])
        return make_feature(name, **known)


def make_feature(name: str, **kw: Any) -> Feature:
    """Build and validate a feature; images default to uint8 JPEG at quality 90."""
    if not name or name.startswith(("/", ".")) or "/" in name:
        raise SchemaError(f"feature name {name!r} is not valid: use dotted names like 'observation.state'")
    kw["shape"] = tuple(int(s) for s in kw.get("shape", ()))
    if name.startswith(IMAGE_PREFIX):
        kw.setdefault("dtype", "uint8")
        kw["image_format"] = kw.get("image_format") or "jpeg"
        if kw["image_format"] not in FORMATS:
            raise SchemaError(f"{name}: image_format {kw['image_format']!r} unknown; use one of {sorted(FORMATS)}")
        kw["image_quality"] = int(kw.get("image_quality") or default_quality(kw["image_format"]))
        shape = kw["shape"]
        if np.dtype(kw["dtype"]) != np.uint8 or not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))):
            raise SchemaError(
                f"{name}: image features are uint8 with shape (H, W, 3), (H, W, 1) or (H, W); got {kw['dtype']} {shape}"
            )
    else:
        if "dtype" not in kw:
            raise SchemaError(f"{name}: give a dtype (e.g. 'float32')")
        if kw.get("image_format"):
            raise SchemaError(f"{name}: image_format is only for features named '{IMAGE_PREFIX}<camera>'")
    dt = np.dtype(kw["dtype"])
    if dt.kind not in "biuf":
        raise SchemaError(f"{name}: dtype {dt} is not supported; use bool, int, uint or float types")
    kw["dtype"] = dt.name
    if kw.get("names") is not None:
        kw["names"] = tuple(str(n) for n in kw["names"])
        if not kw["shape"] or len(kw["names"]) != kw["shape"][-1]:
            raise SchemaError(
                f"{name}: {len(kw['names'])} names given for a last axis of size "
                f"{kw['shape'][-1] if kw['shape'] else 'none (scalar)'}"
            )
    return Feature(name=name, **kw)


def parse_features(features: Mapping[str, Any] | Sequence[Feature]) -> dict[str, Feature]:
    """Accept ``{name: {dtype, shape, ...}}``, ``{name: Feature}`` or a list of Features."""
    out: dict[str, Feature] = {}
    items = features.items() if isinstance(features, Mapping) else ((f.name, f) for f in features)
    for name, spec in items:
        if isinstance(spec, Feature):
            if spec.name != name:
                raise SchemaError(f"feature {spec.name!r} listed under the key {name!r}")
            out[name] = spec
        else:
            out[name] = Feature.from_dict(name, spec)
    if not out:
        raise SchemaError("a dataset needs at least one feature")
    return out


def check_sample(feature: Feature, value: Any) -> np.ndarray:
    """Return ``value`` as an array of the feature's dtype, or raise SchemaError naming the mismatch."""
    arr = np.asarray(value)
    if arr.shape != feature.shape:
        raise SchemaError(
            f"{feature.name}: sample of shape {arr.shape}, the schema says {feature.shape}"
            + (" (resize the camera image or change the feature's shape)" if feature.is_image else "")
        )
    target = np.dtype(feature.dtype)
    if feature.is_image and arr.dtype != np.uint8:
        raise SchemaError(f"{feature.name}: images must be uint8 (0-255), got {arr.dtype}")
    if arr.dtype != target and not np.can_cast(arr.dtype, target, casting="same_kind"):
        raise SchemaError(f"{feature.name}: sample of dtype {arr.dtype} cannot be stored as {target}")
    return arr.astype(target, copy=False)
