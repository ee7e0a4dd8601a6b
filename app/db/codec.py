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


def encode_rows(
    task_names: Sequence[str], features: np.ndarray, labels: np.ndarray
) -> tuple[list[bytes], list[str]]:
    """Encode ``n`` comparisons: feature blobs and :func:`content_hash` digests.

    ``features`` has shape ``(n, d)`` and ``labels`` shape ``(n,)``. The result
    equals ``[encode_array(row) for row in features]`` and
    ``[content_hash(task, blob, label) ...]``, computed from one buffer that
    contains each row's features followed by its label, so the per-row Python
    work is a slice and one hash update. Negative zeros in features and labels
    are stored and hashed as 0.0.
    """
    count, dimension = features.shape
    record = np.empty((count, dimension + 1), dtype=FLOAT_DTYPE)
    record[:, :dimension] = features
    record[:, dimension] = labels
    # Adding 0.0 turns -0.0 into 0.0 (IEEE 754, round to nearest) and leaves
    # every other value as it is, so a row sent with -0.0 stores and hashes
    # like the same row sent with 0.0.
    record += 0.0
    buffer = record.tobytes()
    view = memoryview(buffer)
    width = record.itemsize * (dimension + 1)
    feature_width = width - record.itemsize
    starts = range(0, count * width, width)

    blobs = [buffer[start : start + feature_width] for start in starts]
    prefixes = {
        name: hashlib.sha256(name.encode("utf-8") + b"\x00") for name in set(task_names)
    }
    hashes = []
    for name, start in zip(task_names, starts, strict=True):
        digest = prefixes[name].copy()
        digest.update(view[start : start + width])
        hashes.append(digest.hexdigest())
    return blobs, hashes
