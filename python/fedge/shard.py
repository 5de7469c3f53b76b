"""Shard files (`partition_fmnist`'s output, version 1): one device's labelled examples.

Layout, all integers little-endian: 8 bytes "FEDGESHD", uint32 version (1), uint32
num_examples, uint32 num_classes, uint32 rank, uint32 dims[rank], int32 labels[n], float32
features[n × prod(dims)], then the uint32 CRC-32 (zlib) of every byte before it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Tuple

import numpy as np

MAGIC = b"FEDGESHD"
VERSION = 1


class ShardError(ValueError):
    pass


@dataclass
class Shard:
    features: np.ndarray  # float32, [n, *dims]
    labels: np.ndarray    # int32, [n], each in [0, num_classes)
    num_classes: int

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.features.shape[1:])


def read_shard(path: str) -> Shard:
    """Reads and checks a shard file; errors name the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ShardError(f"shard {path}: {e.strerror}") from e

    def fail(what: str) -> ShardError:
        return ShardError(f"shard {path}: {what}")

    if len(data) < 24 or data[:8] != MAGIC:
        raise fail('bad magic: not a fedge shard file (expected "FEDGESHD")')
    version, n, classes, rank = struct.unpack_from("<4I", data, 8)
    if version != VERSION:
        raise fail(f"unsupported version {version}, this reader knows {VERSION}")
    if rank > 8 or classes < 1:
        raise fail(f"rank {rank} or num_classes {classes} out of bounds")
    if len(data) < 24 + 4 * rank:
        raise fail("truncated header")
    dims = struct.unpack_from(f"<{rank}I", data, 24)
    feature = int(np.prod(dims, dtype=np.int64)) if rank else 1
    at = 24 + 4 * rank
    expected = at + 4 * n + 4 * n * feature + 4
    if len(data) != expected:
        raise fail(f"the header implies {expected} bytes, the file has {len(data)}")
    (crc,) = struct.unpack_from("<I", data, expected - 4)
    if zlib.crc32(data[:expected - 4]) & 0xFFFFFFFF != crc:
        raise fail("CRC-32 mismatch")
    labels = np.frombuffer(data, dtype="<i4", count=n, offset=at).astype(np.int32)
    features = np.frombuffer(data, dtype="<f4", count=n * feature,
                             offset=at + 4 * n).astype(np.float32).reshape((n, *dims))
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise fail(f"a label outside [0, {classes})")
    if not np.all(np.isfinite(features)):
        raise fail("a non-finite feature")
    return Shard(features=features, labels=labels, num_classes=int(classes))
