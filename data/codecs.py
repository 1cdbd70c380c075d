"""A zarr v3 array-to-bytes codec that stores each chunk as one image file (JPEG, PNG or WebP).

Image streams are chunked one frame per chunk inside a shard, so that reading any frame decodes exactly one
image and never a video. The codec is registered with zarr as ``realloop.image`` (also through the
``zarr.codecs`` entry point, so any process with realloop installed reads the data with plain zarr).

Frames are RGB (``H x W x 3``) or single channel (``H x W`` or ``H x W x 1``) ``uint8``. OpenCV does the
encoding; it works in BGR order, so the codec swaps channels on the way in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

CODEC_NAME = "realloop.image"
FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
LOSSLESS_FORMATS = ("png",)
PNG_DEFAULT_LEVEL = 1


class ImageDecodeError(ValueError):
    """An image chunk could not be decoded (truncated or corrupted bytes)."""


def default_quality(fmt: str) -> int:
    return PNG_DEFAULT_LEVEL if fmt == "png" else 90


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """Encode a chunk of shape ``(1, H, W[, C])`` uint8 as one image.

    ``format`` is ``jpeg`` (lossy, default), ``png`` (lossless) or ``webp`` (lossy);
    ``quality`` is the JPEG/WebP quality 1-100 (default 90) or the PNG compression level 0-9 (default 1:
    higher levels cost 2x the CPU for ~5% smaller camera frames).
    """

    is_fixed_size = False

    format: str = "jpeg"
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown image format {self.format!r}; choose one of {sorted(FORMATS)}")
        if self.quality is None:
            object.__setattr__(self, "quality", default_quality(self.format))
        hi = 9 if self.format == "png" else 100
        lo = 0 if self.format == "png" else 1
        if not lo <= self._quality() <= hi:
            raise ValueError(f"quality {self.quality} out of range {lo}..{hi} for {self.format}")

    def _quality(self) -> int:
        """``quality``, which __post_init__ has filled in."""
        assert self.quality is not None
        return int(self.quality)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> ImageCodec:
        _, config = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        kwargs: dict[str, Any] = dict(config or {})  # JSON values: __post_init__ checks them
        return cls(**kwargs)

    def to_dict(self) -> dict[str, JSON]:
        return {"name": CODEC_NAME, "configuration": {"format": self.format, "quality": self._quality()}}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{CODEC_NAME} stores uint8 images, not {dtype}")

    def _params(self) -> list[int]:
        if self.format == "jpeg":
            return [cv2.IMWRITE_JPEG_QUALITY, self._quality()]
        if self.format == "webp":
            return [cv2.IMWRITE_WEBP_QUALITY, self._quality()]
        return [cv2.IMWRITE_PNG_COMPRESSION, self._quality()]

    def encode_frame(self, frame: np.ndarray) -> bytes:
        """Encode one ``H x W[ x C]`` uint8 frame (RGB order) to image bytes."""
        if frame.ndim == 3 and frame.shape[2] == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(FORMATS[self.format], np.ascontiguousarray(frame), self._params())
        if not ok:
            raise ValueError(f"OpenCV could not encode a {frame.shape} frame as {self.format}")
        return buf.tobytes()

    @staticmethod
    def decode_frame(data: bytes | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Decode image bytes to an array of ``shape`` (RGB order)."""
        flag = cv2.IMREAD_COLOR if len(shape) == 3 and shape[2] == 3 else cv2.IMREAD_GRAYSCALE
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        if img is None:
            raise ImageDecodeError(f"corrupted image chunk ({len(data)} bytes could not be decoded)")
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.size != int(np.prod(shape)):
            raise ImageDecodeError(f"decoded image has shape {img.shape}, expected {shape}")
        return img.reshape(shape)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        shape = tuple(chunk_spec.shape)
        frame = self.decode_frame(chunk_bytes.as_numpy_array(), shape[1:])
        # numpy's ndarray stubs do not satisfy zarr's NDArrayLike protocol (an ndarray is what zarr itself passes)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(frame.reshape(shape))  # type: ignore[arg-type]

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        arr = chunk_array.as_numpy_array()
        if arr.shape[0] != 1:
            raise ValueError(f"{CODEC_NAME} needs one frame per chunk, got a chunk of shape {arr.shape}")
        return chunk_spec.prototype.buffer.from_bytes(self.encode_frame(arr[0]))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("image sizes are data dependent")


register_codec(CODEC_NAME, ImageCodec)
