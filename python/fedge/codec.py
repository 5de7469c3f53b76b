"""Tensor payload encodings and chunked transfer, as docs/protocol.md defines them.

Every number is little-endian. A payload is its tensors back to back in manifest order, no
padding. Receivers dequantize to float32 and refuse a scale that is negative or not finite,
and a value that dequantizes to a non-finite float.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fedge.v1 import transfer_pb2

FLOAT32 = transfer_pb2.TENSOR_ENCODING_FLOAT32
INT8_PER_CHANNEL = transfer_pb2.TENSOR_ENCODING_INT8_PER_CHANNEL
INT4_BLOCK32 = transfer_pb2.TENSOR_ENCODING_INT4_BLOCK32
FIXED_POINT_U32 = transfer_pb2.TENSOR_ENCODING_FIXED_POINT_U32
INT8_STOCHASTIC_CHUNKED = transfer_pb2.TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED

#: Encodings a task's weights may arrive in.
TASK_ENCODINGS = (FLOAT32, INT8_PER_CHANNEL, INT4_BLOCK32)
#: Encodings an update may be sent in.
UPDATE_ENCODINGS = (FLOAT32, INT8_STOCHASTIC_CHUNKED)

STOCHASTIC_CHUNK = 256  # values per scale in INT8_STOCHASTIC_CHUNKED
Q4_BLOCK = 32           # values per block in INT4_BLOCK32
Q4_BLOCK_BYTES = 18     # fp16 scale + 16 bytes of nibbles
MAX_CHUNK_BYTES = 1 << 20


class PayloadError(ValueError):
    """A payload, manifest or tensor that breaks the protocol; the message names the tensor."""


def encoding_name(encoding: int) -> str:
    try:
        return transfer_pb2.TensorEncoding.Name(encoding)
    except ValueError:
        return f"TensorEncoding({encoding})"


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        if d < 0:
            raise PayloadError(f"negative dimension in shape {list(shape)}")
        n *= int(d)
    return n


def rows_of(shape: Sequence[int]) -> Tuple[int, int]:
    """(rows, row length) of a tensor for the per-row encodings: shape[0] rows for rank >= 2,
    one row for a vector or a scalar."""
    n = _numel(shape)
    if len(shape) >= 2:
        r = int(shape[0])
        return r, (n // r if r > 0 else 0)
    return 1, n


def encoded_bytes(shape: Sequence[int], encoding: int) -> int:
    """Bytes of a tensor of `shape` in `encoding`."""
    n = _numel(shape)
    if encoding in (FLOAT32, FIXED_POINT_U32):
        return 4 * n
    if encoding == INT8_PER_CHANNEL:
        r, _ = rows_of(shape)
        return 4 * r + n
    if encoding == INT4_BLOCK32:
        r, length = rows_of(shape)
        return Q4_BLOCK_BYTES * r * (-(-length // Q4_BLOCK))
    if encoding == INT8_STOCHASTIC_CHUNKED:
        return 4 * (-(-n // STOCHASTIC_CHUNK)) + n
    raise PayloadError(f"unknown encoding {encoding_name(encoding)}")


def _check_finite(name: str, x: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise PayloadError(f"tensor {name}: {what} {bad} is not finite")


def _check_scales(name: str, scales: np.ndarray, unit: str) -> None:
    bad = ~np.isfinite(scales) | (scales < 0)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise PayloadError(f"tensor {name}: the scale of {unit} {i} is {scales[i]!r}, "
                           "not a finite number >= 0")


def decode_tensor(name: str, data: bytes, shape: Sequence[int], encoding: int) -> np.ndarray:
    """Decodes one tensor's bytes into a float32 array of `shape`."""
    expected = encoded_bytes(shape, encoding)
    if len(data) != expected:
        raise PayloadError(f"tensor {name}: {len(data)} bytes, {encoding_name(encoding)} of "
                           f"shape {list(shape)} takes {expected}")
    n = _numel(shape)
    if encoding == FLOAT32:
        out = np.frombuffer(data, dtype="<f4").astype(np.float32)
        _check_finite(name, out, "value")
    elif encoding == INT8_PER_CHANNEL:
        r, length = rows_of(shape)
        scales = np.frombuffer(data, dtype="<f4", count=r).astype(np.float32)
        _check_scales(name, scales, "row")
        q = np.frombuffer(data, dtype=np.int8, offset=4 * r, count=n).astype(np.float32)
        out = (q.reshape(r, length) * scales[:, None]).astype(np.float32).reshape(-1)
        _check_finite(name, out, "value")
    elif encoding == INT4_BLOCK32:
        r, length = rows_of(shape)
        blocks_per_row = -(-length // Q4_BLOCK)
        raw = np.frombuffer(data, dtype=np.uint8).reshape(r * blocks_per_row, Q4_BLOCK_BYTES)
        d = raw[:, :2].copy().view("<f2").astype(np.float32).reshape(-1)
        if not np.all(np.isfinite(d)):  # d = a/-8 carries a's sign: only finiteness is checked
            i = int(np.flatnonzero(~np.isfinite(d))[0])
            raise PayloadError(f"tensor {name}: row {i // blocks_per_row} block "
                               f"{i % blocks_per_row} has scale {d[i]!r}")
        nib = raw[:, 2:]
        q = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.float32)  # q[i], q[i+16]
        vals = ((q - 8.0) * d[:, None]).astype(np.float32)
        out = vals.reshape(r, blocks_per_row * Q4_BLOCK)[:, :length].reshape(-1)
        _check_finite(name, out, "value")
    elif encoding == INT8_STOCHASTIC_CHUNKED:
        chunks = -(-n // STOCHASTIC_CHUNK)
        scales = np.frombuffer(data, dtype="<f4", count=chunks).astype(np.float32)
        _check_scales(name, scales, "chunk")
        q = np.frombuffer(data, dtype=np.int8, offset=4 * chunks, count=n).astype(np.float32)
        out = (q * np.repeat(scales, STOCHASTIC_CHUNK)[:n]).astype(np.float32)
        _check_finite(name, out, "value")
    else:
        raise PayloadError(f"tensor {name}: cannot decode {encoding_name(encoding)}")
    return out.reshape(tuple(int(d) for d in shape))


def _int8_scale(max_abs: np.ndarray) -> np.ndarray:
    """max|x|/127 in float32, one step smaller where 127 times it would overflow."""
    s = (max_abs.astype(np.float32) / np.float32(127.0)).astype(np.float32)
    with np.errstate(over="ignore"):
        over = ~np.isfinite(np.float32(127.0) * s)
    if np.any(over):
        s[over] = np.nextafter(s[over], np.float32(0.0))
    return s


def encode_tensor(name: str, x: np.ndarray, encoding: int,
                  rng: Optional[np.random.Generator] = None) -> bytes:
    """Encodes a float tensor (its shape decides the rows of the per-row encodings).
    INT8_STOCHASTIC_CHUNKED draws its rounding from `rng`."""
    shape = np.shape(x)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    _check_finite(name, x, "value")
    if encoding == INT8_PER_CHANNEL:
        r, length = rows_of(shape)
        m = x.reshape(r, length)
        scales = _int8_scale(np.abs(m).max(axis=1) if length else np.zeros(r, np.float32))
        s = scales.astype(np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, m.astype(np.float64) / np.where(s > 0, s, 1.0), 0.0)
        # std::round: halves away from zero.
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8)
        return scales.astype("<f4").tobytes() + q.tobytes()
    if encoding == INT4_BLOCK32:
        r, length = rows_of(shape)
        per_row = -(-length // Q4_BLOCK)
        padded = np.zeros((r, per_row * Q4_BLOCK), dtype=np.float32)
        padded[:, :length] = x.reshape(r, length)
        blocks = padded.reshape(-1, Q4_BLOCK)
        idx = np.argmax(np.abs(blocks), axis=1) if blocks.size else np.zeros(0, np.int64)
        a = blocks[np.arange(blocks.shape[0]), idx] if blocks.size else np.zeros(0, np.float32)
        d = (a / np.float32(-8.0)).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            # nearbyint: halves to even (numpy's rint), in float32 as the C++ does.
            v = np.rint((blocks / np.where(d == 0, 1, d)[:, None]).astype(np.float32)) + 8
        q = np.where(d[:, None] == 0, 8, np.clip(v, 0, 15)).astype(np.uint8)
        nibbles = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
        out = np.concatenate([d.astype("<f2").view(np.uint8).reshape(-1, 2), nibbles], axis=1)
        return out.tobytes()
    if encoding == FLOAT32:
        return x.astype("<f4").tobytes()
    if encoding == INT8_STOCHASTIC_CHUNKED:
        if rng is None:
            rng = np.random.default_rng()
        n = x.size
        chunks = -(-n // STOCHASTIC_CHUNK)
        padded = np.zeros(chunks * STOCHASTIC_CHUNK, dtype=np.float32)
        padded[:n] = x
        scales = _int8_scale(np.abs(padded.reshape(chunks, STOCHASTIC_CHUNK)).max(axis=1)
                             if chunks else np.zeros(0, np.float32))
        s = np.repeat(scales, STOCHASTIC_CHUNK)[:n].astype(np.float64)
        u = rng.random(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(s > 0, np.floor(x.astype(np.float64) / np.where(s > 0, s, 1.0) + u), 0.0)
        q = np.clip(v, -127, 127).astype(np.int8)
        return scales.astype("<f4").tobytes() + q.tobytes()
    raise PayloadError(f"tensor {name}: cannot encode {encoding_name(encoding)}")


def crc32(data: bytes) -> int:
    """CRC-32 (ISO-HDLC, zlib's crc32) of a whole payload."""
    return zlib.crc32(data) & 0xFFFFFFFF


def chunks(payload: bytes, chunk_bytes: int = MAX_CHUNK_BYTES,
           start: int = 0) -> Iterator[transfer_pb2.DataChunk]:
    """DataChunks of payload[start:], each at most chunk_bytes (capped at 1 MiB)."""
    step = max(1, min(int(chunk_bytes), MAX_CHUNK_BYTES))
    view = memoryview(payload)
    for off in range(start, len(payload), step):
        yield transfer_pb2.DataChunk(offset=off, data=bytes(view[off:off + step]))


class Assembler:
    """Reassembles a chunked payload: each chunk must start where the last ended, never
    past the announced total; the trailer checks the total and the CRC-32."""

    def __init__(self, total_bytes: int, limit: int):
        if total_bytes < 0 or total_bytes > limit:
            raise PayloadError(f"payload announces {total_bytes} bytes; this receiver takes "
                               f"0 to {limit}")
        self.total = total_bytes
        self._buf = bytearray()

    def add(self, chunk: transfer_pb2.DataChunk) -> None:
        if chunk.offset != len(self._buf):
            raise PayloadError(f"chunk at offset {chunk.offset}, expected {len(self._buf)}")
        if not chunk.data:
            raise PayloadError(f"empty chunk at offset {chunk.offset}")
        if len(self._buf) + len(chunk.data) > self.total:
            raise PayloadError(f"chunk at offset {chunk.offset} runs past the announced "
                               f"{self.total} bytes")
        self._buf += chunk.data

    def finish(self, trailer: transfer_pb2.PayloadTrailer) -> bytes:
        if len(self._buf) != self.total:
            raise PayloadError(f"trailer after {len(self._buf)} of {self.total} bytes")
        got = crc32(self._buf)
        if got != trailer.crc32:
            raise PayloadError(f"CRC-32 {got:08x} differs from the trailer's {trailer.crc32:08x}")
        return bytes(self._buf)


def decode_section(manifest: transfer_pb2.TensorManifest, payload: bytes,
                   allowed: Iterable[int] = TASK_ENCODINGS) -> Dict[str, np.ndarray]:
    """Decodes the tensors a manifest describes (offsets from the start of `payload`),
    checking that they tile it exactly, in order."""
    allowed = tuple(allowed)
    out: Dict[str, np.ndarray] = {}
    at = 0
    for t in manifest.tensors:
        if t.encoding not in allowed:
            raise PayloadError(f"tensor {t.name}: encoding {encoding_name(t.encoding)} is not "
                               f"one of {[encoding_name(e) for e in allowed]}")
        if len(t.shape) > 8:
            raise PayloadError(f"tensor {t.name}: rank {len(t.shape)} is over 8")
        size = encoded_bytes(t.shape, t.encoding)
        if t.offset != at or t.byte_size != size:
            raise PayloadError(f"tensor {t.name}: offset {t.offset} and {t.byte_size} bytes; "
                               f"expected offset {at} and {size} bytes")
        if t.name in out:
            raise PayloadError(f"tensor {t.name} appears twice in the manifest")
        out[t.name] = decode_tensor(t.name, payload[at:at + size], t.shape, t.encoding)
        at += size
    if at != len(payload):
        raise PayloadError(f"the manifest covers {at} bytes of a {len(payload)}-byte section")
    return out


def section_bytes(manifest: transfer_pb2.TensorManifest) -> int:
    return sum(encoded_bytes(t.shape, t.encoding) for t in manifest.tensors)


def encode_update(reference: transfer_pb2.TensorManifest, delta: Mapping[str, np.ndarray],
                  encoding: int, rng: Optional[np.random.Generator] = None
                  ) -> Tuple[transfer_pb2.TensorManifest, bytes]:
    """Encodes Δ in the task manifest's order and shapes: (the update's manifest, payload)."""
    if encoding not in UPDATE_ENCODINGS:
        raise PayloadError(f"updates travel as FLOAT32 or INT8_STOCHASTIC_CHUNKED, not "
                           f"{encoding_name(encoding)}")
    missing = [t.name for t in reference.tensors if t.name not in delta]
    extra = sorted(set(delta) - {t.name for t in reference.tensors})
    if missing or extra:
        raise PayloadError(f"the update must hold exactly the task's tensors; missing "
                           f"{missing}, unexpected {extra}")
    manifest = transfer_pb2.TensorManifest()
    parts: List[bytes] = []
    at = 0
    for t in reference.tensors:
        x = np.asarray(delta[t.name])
        if tuple(x.shape) != tuple(t.shape):
            raise PayloadError(f"tensor {t.name}: shape {list(x.shape)}, the task's is "
                               f"{list(t.shape)}")
        data = encode_tensor(t.name, x, encoding, rng)
        info = manifest.tensors.add(name=t.name, encoding=encoding, offset=at,
                                    byte_size=len(data))
        info.shape.extend(t.shape)
        parts.append(data)
        at += len(data)
    return manifest, b"".join(parts)
