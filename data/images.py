"""Image framing shared by training and deployment: a camera frame fitted to a policy's image size."""

from __future__ import annotations

import cv2
import numpy as np


def fit_image(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``img`` (H x W x C) centre-cropped to the aspect ratio of ``shape`` (H, W, ...) and resized to it.

    Training (``image_size``) and the policy runner frame images with this one rule, so a policy sees at run time
    what it saw in training: a wider frame loses its sides, not its top and bottom (a sim camera rendered at the
    training size keeps its vertical field of view)."""
    h, w = img.shape[:2]
    th, tw = int(shape[0]), int(shape[1])
    if (h, w) == (th, tw):
        return img
    if w * th > tw * h:  # too wide: crop the sides
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        img = img[:, x0 : x0 + cw]
    elif w * th < tw * h:  # too tall: crop top and bottom
        ch = max(1, round(w * th / tw))
        y0 = (h - ch) // 2
        img = img[y0 : y0 + ch]
    out = cv2.resize(np.ascontiguousarray(img), (tw, th), interpolation=cv2.INTER_AREA)
    return out if out.ndim == img.ndim else out[..., None]  # OpenCV drops a single channel axis
