"""Binary encoding of feature vectors and fitted arrays.

Every array is stored as little-endian float64 bytes (``<f8``), C order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

FLOAT_DTYPE = np.dtype("<f8")


def encode_array(values: np.ndarray) -> bytes:
    """Encode an array of any shape as little-endian float64 bytes, C order."""
    return np.ascontiguousarray(values, dtype=FLOAT_DTYPE).tobytes()


def decode_array(blob: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode bytes from :func:`encode_array`; reshape when ``shape`` is given."""
    values = np.frombuffer(blob, dtype=FLOAT_DTYPE)
    return values if shape is None else values.reshape(shape)


def decode_rows(blobs: Sequence[bytes], dimension: int) -> np.ndarray:
    """Stack stored feature vectors into an array of shape ``(len(blobs), d)``.

    The blobs are joined once and viewed as float64, so there is no Python
    arithmetic per row.
    """
    if not blobs:
        return np.empty((0, dimension), dtype=np.float64)
    return np.frombuffer(b"".join(blobs), dtype=FLOAT_DTYPE).reshape(-1, dimension)


def content_hash(task: str, features: bytes, label: float) -> str:
    """SHA-256 hex digest identifying the content of one comparison.

    Two rows have the same hash when they have the same task name, the same
    encoded features and the same label (compared as float64).
    """
    digest = hashlib.sha256(task.encode("utf-8"))
    digest.update(b"\x00")
    digest.update(features)
    digest.update(struct.pack("<d", label))
    return digest.hexdigest()
