#!/usr/bin/env python3
"""A fedge device written only from docs/protocol.md and proto/*.proto.

It checks that the protocol document is enough to write a device: it does not use the fedge
Python SDK nor any of fedge's C++ code. It generates its gRPC stubs from proto/ at start-up
(Debian's protoc and grpc_python_plugin), registers, long-polls for tasks, decodes the task
payload (FLOAT32, INT8_PER_CHANNEL, INT4_BLOCK32), trains the task's dense/relu/flatten model
with numpy (SGD or Adam, the documented loss and conventions), encodes Δ in the task's update
encoding (FLOAT32 or INT8_STOCHASTIC_CHUNKED), uploads it in chunks with the trailer's CRC-32,
and keeps itself live with UploadStatus calls while it holds a task.

usage: doc_device.py --coordinator HOST:PORT --enrollment-token-file FILE --shard FILE
                     --rounds N [--save-tasks DIR]
"""

from __future__ import annotations

import argparse
import glob
import importlib
import math
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from typing import NoReturn

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
GRPC_PLUGIN = "/usr/bin/grpc_python_plugin"

MIB = 1 << 20

# TensorEncoding values (transfer.proto).
FLOAT32 = 1
INT8_PER_CHANNEL = 2
INT4_BLOCK32 = 3
FIXED_POINT_U32 = 4
INT8_STOCHASTIC_CHUNKED = 5
ENCODING_NAMES = {0: "UNSPECIFIED", FLOAT32: "FLOAT32", INT8_PER_CHANNEL: "INT8_PER_CHANNEL",
                  INT4_BLOCK32: "INT4_BLOCK32", FIXED_POINT_U32: "FIXED_POINT_U32",
                  INT8_STOCHASTIC_CHUNKED: "INT8_STOCHASTIC_CHUNKED"}


class ProtocolError(Exception):
    """Anything the coordinator did (or answered) that the document says it should not."""


def log(msg: str) -> None:
    print(f"doc_device: {msg}", flush=True)


def fail(msg: str) -> NoReturn:
    print(f"doc_device: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Stubs
# ---------------------------------------------------------------------------------------------

def generate_stubs(proto_dir: str, out_dir: str) -> None:
    protos = sorted(glob.glob(os.path.join(proto_dir, "*.proto")))
    if not protos:
        raise RuntimeError(f"no .proto files in {proto_dir}")
    protoc = "/usr/bin/protoc" if os.path.exists("/usr/bin/protoc") else shutil.which("protoc")
    cmd = [protoc, "-I", proto_dir, f"--python_out={out_dir}",
           f"--plugin=protoc-gen-grpc_python={GRPC_PLUGIN}", f"--grpc_python_out={out_dir}"]
    cmd += protos
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"protoc failed ({r.returncode}): {r.stderr.strip()}")


# ---------------------------------------------------------------------------------------------
# CRC, fp16, the fedge Rng (protocol.md "Seeds")
# ---------------------------------------------------------------------------------------------

def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


assert crc32(b"123456789") == 0xCBF43926

M64 = (1 << 64) - 1


def splitmix64(x: int):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    """xoshiro256** seeded through SplitMix64, as protocol.md gives it."""

    def __init__(self, seed: int, stream: int = 0):
        x = (seed ^ (stream * 0xD1B54A32D192ED03)) & M64
        x = splitmix64(x)[1] ^ stream
        self.s = []
        for _ in range(4):
            x, z = splitmix64(x)
            self.s.append(z)

    def next_u64(self) -> int:
        s = self.s
        r = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return r

    def uniform(self) -> float:
        return (self.next_u64() >> 11) * 2.0 ** -53

    def uniform_int(self, n: int) -> int:
        limit = M64 - (M64 % n)
        while True:
            r = self.next_u64()
            if r < limit:
                return r % n

    def shuffle(self, v: list) -> None:
        for i in range(len(v), 1, -1):
            j = self.uniform_int(i)
            v[i - 1], v[j] = v[j], v[i - 1]


def fnv1a_fedge(data: bytes) -> int:
    h = 1469598103934665603  # fedge's (non-standard) offset basis, per protocol.md
    for b in data:
        h ^= b
        h = (h * 1099511628211) & M64
    return h


# ---------------------------------------------------------------------------------------------
# Tensor encodings (protocol.md "Tensor encodings")
# ---------------------------------------------------------------------------------------------

def numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def rows_of(shape):
    """(R, L): R = shape[0] rows of L = n/R values for rank >= 2, one row of n otherwise."""
    n = numel(shape)
    if len(shape) >= 2:
        r = int(shape[0])
        return r, (n // r if r > 0 else 0)
    return 1, n


def encoded_size(shape, encoding: int) -> int:
    n = numel(shape)
    if encoding == FLOAT32:
        return 4 * n
    if encoding == INT8_PER_CHANNEL:
        r, _ = rows_of(shape)
        return 4 * r + n
    if encoding == INT4_BLOCK32:
        r, l = rows_of(shape)
        return 18 * r * ((l + 31) // 32)
    if encoding == INT8_STOCHASTIC_CHUNKED:
        return 4 * ((n + 255) // 256) + n
    raise ProtocolError(f"encoding {ENCODING_NAMES.get(encoding, encoding)} has no size here")


def decode_tensor(name: str, buf: bytes, shape, encoding: int) -> np.ndarray:
    n = numel(shape)
    if len(buf) != encoded_size(shape, encoding):
        raise ProtocolError(f"tensor '{name}': {len(buf)} bytes, expected "
                            f"{encoded_size(shape, encoding)}")
    if encoding == FLOAT32:
        x = np.frombuffer(buf, dtype="<f4").astype(np.float32)
    elif encoding == INT8_PER_CHANNEL:
        r, l = rows_of(shape)
        scales = np.frombuffer(buf[:4 * r], dtype="<f4").astype(np.float32)
        bad = ~np.isfinite(scales) | (scales < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ProtocolError(f"tensor '{name}' row {row} has scale {scales[row]}")
        q = np.frombuffer(buf[4 * r:], dtype=np.int8).astype(np.float32).reshape(r, l)
        x = (q * scales[:, None]).astype(np.float32).reshape(-1)
    elif encoding == INT4_BLOCK32:
        r, l = rows_of(shape)
        nb = (l + 31) // 32
        blocks = np.frombuffer(buf, dtype=np.uint8).reshape(r * nb, 18)
        d = blocks[:, 0:2].copy().view("<f2").astype(np.float32).reshape(-1)
        bad = ~np.isfinite(d)
        if bad.any():
            blk = int(np.flatnonzero(bad)[0])
            raise ProtocolError(f"tensor '{name}' block {blk} has scale {d[blk]}")
        nib = blocks[:, 2:18]
        q = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.float32)  # q[0..31]
        vals = ((q - np.float32(8)) * d[:, None]).astype(np.float32)
        x = vals.reshape(r, nb * 32)[:, :l].reshape(-1)
    else:
        raise ProtocolError(f"tensor '{name}': task encoding "
                            f"{ENCODING_NAMES.get(encoding, encoding)} is not one a device "
                            f"decodes")
    if x.size != n:
        raise ProtocolError(f"tensor '{name}': decoded {x.size} values, expected {n}")
    if not np.all(np.isfinite(x)):
        raise ProtocolError(f"tensor '{name}' decodes to a non-finite value")
    return x.reshape([int(d) for d in shape]) if shape else x.reshape(())


def int8_scale(m: np.ndarray) -> np.ndarray:
    """s = m / 127 in float; one step towards 0 where 127·s overflows."""
    with np.errstate(over="ignore"):
        s = (m.astype(np.float32) / np.float32(127)).astype(np.float32)
        over = ~np.isfinite(np.float32(127) * s)
    if over.any():
        s[over] = np.nextafter(s[over], np.float32(0))
    return s


def encode_stochastic_chunked(x: np.ndarray, rng: Rng | None) -> bytes:
    """INT8_STOCHASTIC_CHUNKED. u from fedge's Rng (as fedge-client) or numpy."""
    v = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    n = v.size
    c = (n + 255) // 256
    scales = np.zeros(c, dtype=np.float32)
    q = np.zeros(n, dtype=np.int8)
    for k in range(c):
        chunk = v[k * 256:(k + 1) * 256]
        m = np.max(np.abs(chunk)) if chunk.size else np.float32(0)
        s = int8_scale(np.array([m], dtype=np.float32))[0]
        scales[k] = s
        if s == 0:
            continue  # q = 0, and no draws for this chunk
        if rng is not None:
            u = np.array([rng.uniform() for _ in range(chunk.size)], dtype=np.float64)
        else:
            u = np.random.default_rng().random(chunk.size)
        qq = np.floor(chunk.astype(np.float64) / np.float64(s) + u)
        q[k * 256:k * 256 + chunk.size] = np.clip(qq, -127, 127).astype(np.int8)
    return scales.astype("<f4").tobytes() + q.tobytes()


def encode_update_tensor(x: np.ndarray, encoding: int, rng: Rng | None) -> bytes:
    if encoding == FLOAT32:
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if encoding == INT8_STOCHASTIC_CHUNKED:
        return encode_stochastic_chunked(x, rng)
    raise ProtocolError(f"update encoding {ENCODING_NAMES.get(encoding, encoding)} is not "
                        f"FLOAT32 or INT8_STOCHASTIC_CHUNKED")


# ---------------------------------------------------------------------------------------------
# Shard files (protocol.md "Shard files")
# ---------------------------------------------------------------------------------------------

def read_shard(path: str):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        raise ValueError(f"{path}: {len(data)} bytes, too short for a shard")
    if data[0:8] != b"FEDGESHD":
        raise ValueError(f"{path}: bad magic {data[0:8]!r}")
    version, n, c, k = struct.unpack_from("<IIII", data, 8)
    if version != 1:
        raise ValueError(f"{path}: shard version {version} (only 1 is known)")
    if n > 10_000_000 or not 1 <= c <= 1 << 20 or k > 8:
        raise ValueError(f"{path}: N {n}, C {c} or rank {k} out of bounds")
    dims = list(struct.unpack_from(f"<{k}I", data, 24)) if k else []
    if any(d < 1 for d in dims):
        raise ValueError(f"{path}: a dimension is 0 ({dims})")
    feat = numel(dims)
    if feat > 1 << 24:
        raise ValueError(f"{path}: {feat} features per example, over 2^24")
    expect = 24 + 4 * k + 4 * n + 4 * n * feat + 4
    if len(data) != expect:
        raise ValueError(f"{path}: {len(data)} bytes, expected {expect}")
    (stored_crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if crc32(data[:-4]) != stored_crc:
        raise ValueError(f"{path}: CRC-32 mismatch")
    off = 24 + 4 * k
    labels = np.frombuffer(data, dtype="<i4", count=n, offset=off).astype(np.int64)
    off += 4 * n
    x = np.frombuffer(data, dtype="<f4", count=n * feat, offset=off).astype(np.float32)
    x = x.reshape(n, feat)
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"{path}: a label outside [0, {c})")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: a non-finite feature")
    return x, labels, c, dims


# ---------------------------------------------------------------------------------------------
# The model (protocol.md "Models"): dense, relu, flatten (+ sigmoid, leaky_relu, scaler)
# ---------------------------------------------------------------------------------------------

class Unsupported(Exception):
    """A task this device cannot take (it declines it)."""


class Mlp:
    def __init__(self, spec):
        self.input_size = numel(spec.input_shape)
        if not spec.input_shape:
            raise Unsupported("model_spec has no input_shape")
        self.ops = []          # (kind, arg)
        self.params = []       # (name, shape) in manifest order
        width = self.input_size
        for i, layer in enumerate(spec.layers):
            name = layer.name or f"layer{i}"
            kind = layer.WhichOneof("kind")
            if kind == "dense":
                d = layer.dense
                if d.spectral_norm:
                    raise Unsupported(f"layer {name}: spectral_norm")
                if d.in_features != width:
                    raise Unsupported(f"layer {name}: in_features {d.in_features}, the input "
                                      f"has {width} values")
                w = f"{name}.weight"
                b = None if d.no_bias else f"{name}.bias"
                self.params.append((w, [d.out_features, d.in_features]))
                if b:
                    self.params.append((b, [d.out_features]))
                self.ops.append(("dense", (w, b)))
                width = d.out_features
            elif kind == "relu":
                self.ops.append(("relu", None))
            elif kind == "flatten":
                pass  # activations are kept flat (row-major memory order): nothing to do
            elif kind == "sigmoid":
                self.ops.append(("sigmoid", None))
            elif kind == "leaky_relu":
                slope = layer.leaky_relu.negative_slope or 0.01
                self.ops.append(("leaky_relu", np.float32(slope)))
            elif kind == "scaler":
                rate = layer.scaler.rate
                if not rate > 0:
                    raise Unsupported(f"layer {name}: scaler rate {rate}")
                self.ops.append(("scaler", np.float32(rate)))
            else:
                raise Unsupported(f"layer {name}: {kind} layers are not supported by this "
                                  f"device (dense/relu/flatten only)")
        self.output_size = width

    def forward(self, w, x):
        caches = []
        h = x
        for kind, arg in self.ops:
            if kind == "dense":
                wn, bn = arg
                caches.append(h)
                h = h @ w[wn].T
                if bn:
                    h = h + w[bn]
            elif kind == "relu":
                caches.append(h)
                h = np.maximum(h, np.float32(0))
            elif kind == "sigmoid":
                h = (np.float32(1) / (np.float32(1) + np.exp(-h))).astype(np.float32)
                caches.append(h)
            elif kind == "leaky_relu":
                caches.append(h)
                h = np.where(h > 0, h, arg * h).astype(np.float32)
            elif kind == "scaler":
                caches.append(None)
                h = h / arg
        return h.astype(np.float32), caches

    def backward(self, w, caches, dlogits):
        grads = {}
        g = dlogits
        for (kind, arg), cache in zip(reversed(self.ops), reversed(caches)):
            if kind == "dense":
                wn, bn = arg
                grads[wn] = (g.T @ cache).astype(np.float32)
                if bn:
                    grads[bn] = g.sum(axis=0).astype(np.float32)
                g = g @ w[wn]
            elif kind == "relu":
                g = g * (cache > 0)
            elif kind == "sigmoid":
                g = g * cache * (np.float32(1) - cache)
            elif kind == "leaky_relu":
                g = np.where(cache > 0, g, arg * g)
            elif kind == "scaler":
                g = g / arg
            g = g.astype(np.float32)
        return grads


def softmax_ce(logits: np.ndarray, labels: np.ndarray):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=1, keepdims=True)
    b = labels.size
    loss_each = -np.log(np.maximum(p[np.arange(b), labels], 1e-300))
    grad = p.copy()
    grad[np.arange(b), labels] -= 1.0
    grad /= b  # gradient of the batch mean
    correct = int(np.sum(np.argmax(logits, axis=1) == labels))  # argmax: first maximum
    return float(loss_each.sum()), correct, grad.astype(np.float32)


def preprocess(x: np.ndarray, prep) -> np.ndarray:
    kind = prep.kind  # 0 UNSPECIFIED, 1 UNIT_RANGE, 2 STANDARDIZE
    if kind in (0, 1):
        return x
    if kind == 2:
        mean = prep.mean if prep.HasField("mean") else 0.2860
        std = prep.std if prep.HasField("std") else 0.3530
        if not std > 0:
            raise Unsupported(f"preprocessing std {std}")
        mean_f = np.float32(mean)
        inv_f = np.float32(1.0 / np.float64(np.float32(std)))
        return ((x - mean_f) * inv_f).astype(np.float32)
    raise Unsupported(f"preprocessing kind {kind}")


def train(model: Mlp, received: dict, x: np.ndarray, y: np.ndarray, header, client_id: str):
    """Local training as protocol.md "Training" describes fedge-client's. Returns Δ, metrics."""
    t = header.training
    epochs = t.epochs if t.HasField("epochs") else 1
    batch = t.batch_size if t.HasField("batch_size") else 64
    lr = t.learning_rate if t.HasField("learning_rate") else 0.01
    beta = t.momentum
    nesterov = t.nesterov
    wd = t.weight_decay
    max_steps = t.max_steps
    optimizer = t.optimizer  # 0/1 SGD, 2 ADAM
    if epochs <= 0 or batch <= 0 or not lr > 0:
        raise Unsupported(f"impossible training settings (epochs {epochs}, batch {batch}, "
                          f"lr {lr})")
    if optimizer not in (0, 1, 2):
        raise Unsupported(f"optimizer {optimizer}")
    mu = header.fedprox_mu

    w = {k: v.copy() for k, v in received.items()}
    state_v = {k: np.zeros_like(v) for k, v in w.items()}
    state_m = {k: np.zeros_like(v) for k, v in w.items()}
    names = [n for n, _ in model.params]

    h = fnv1a_fedge(client_id.encode())
    g = Rng((t.shuffle_seed ^ h) & M64, header.round)
    shuffle_seed2 = g.next_u64()
    update_encoding_seed = g.next_u64()

    n = x.shape[0]
    steps = 0
    last_loss = 0.0
    last_acc = 0.0
    t0 = time.monotonic()
    done = False
    for e in range(epochs):
        order = list(range(n))
        Rng(shuffle_seed2, e).shuffle(order)
        order = np.array(order, dtype=np.int64)
        ep_loss = 0.0
        ep_correct = 0
        ep_seen = 0
        for start in range(0, n, batch):
            if max_steps > 0 and steps + 1 > max_steps:
                done = True
                break
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            logits, caches = model.forward(w, xb)
            loss_sum, correct, dlogits = softmax_ce(logits, yb)
            ep_loss += loss_sum
            ep_correct += correct
            ep_seen += idx.size
            grads = model.backward(w, caches, dlogits)
            steps += 1
            for k in names:
                gr = grads[k]
                if mu > 0:
                    gr = gr + np.float32(mu) * (w[k] - received[k])
                d = (gr + np.float32(wd) * w[k]).astype(np.float32)
                if optimizer == 2:
                    b1 = t.adam_beta1 if t.HasField("adam_beta1") else 0.9
                    b2 = t.adam_beta2 if t.HasField("adam_beta2") else 0.999
                    eps = t.adam_epsilon if t.HasField("adam_epsilon") else 1e-8
                    state_m[k] = (b1 * state_m[k] + (1 - b1) * d).astype(np.float32)
                    state_v[k] = (b2 * state_v[k] + (1 - b2) * d * d).astype(np.float32)
                    step_lr = lr / (1 - b1 ** steps)
                    denom = np.sqrt(state_v[k]) / math.sqrt(1 - b2 ** steps) + eps
                    w[k] = (w[k] - step_lr * state_m[k] / denom).astype(np.float32)
                elif beta > 0:
                    state_v[k] = (np.float32(beta) * state_v[k] + d).astype(np.float32)
                    upd = d + np.float32(beta) * state_v[k] if nesterov else state_v[k]
                    w[k] = (w[k] - np.float32(lr) * upd).astype(np.float32)
                else:
                    w[k] = (w[k] - np.float32(lr) * d).astype(np.float32)
        if ep_seen:
            last_loss = ep_loss / ep_seen
            last_acc = ep_correct / ep_seen
        if done:
            break
    seconds = time.monotonic() - t0
    delta = {k: (w[k] - received[k]).astype(np.float32) for k in names}
    return delta, dict(train_loss=last_loss, train_accuracy=last_acc, steps=steps,
                       train_seconds=seconds), update_encoding_seed


# ---------------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------------

RETRYABLE = None  # filled in once grpc is imported


class Device:
    def __init__(self, args, pb, grpc):
        self.args, self.grpc = args, grpc
        self.cpb, self.jpb, self.tpb, self.cgrpc = pb
        self.channel = grpc.insecure_channel(args.coordinator, options=[
            ("grpc.max_receive_message_length", 64 * MIB),
            ("grpc.max_send_message_length", 64 * MIB)])
        self.stub = self.cgrpc.CoordinatorStub(self.channel)
        self.client_id = ""
        self.session = ""
        self.device_key = ""
        self.max_message_bytes = 8 * MIB
        self.chunk_bytes = MIB
        self.liveness_ms = 60_000
        with open(args.enrollment_token_file) as f:
            self.token = f.read().strip()
        self.x, self.y, self.classes, self.dims = read_shard(args.shard)
        self.answered: set[str] = set()

    # -- calls with back-off ---------------------------------------------------------------

    def backoff_sleep(self, attempt: int) -> None:
        delay = min(30.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.5)
        time.sleep(delay)

    def retryable(self, code) -> bool:
        c = self.grpc.StatusCode
        return code in (c.UNAVAILABLE, c.DEADLINE_EXCEEDED, c.RESOURCE_EXHAUSTED, c.ABORTED,
                        c.INTERNAL, c.UNKNOWN, c.CANCELLED)

    def register(self) -> None:
        profile = self.jpb.DeviceProfile(num_examples=int(self.x.shape[0]),
                                         platform="doc-device", client_version="doc-device/1",
                                         compute_class=self.jpb.COMPUTE_CLASS_HIGH)
        req = self.cpb.RegisterRequest(enrollment_token=self.token, profile=profile,
                                       previous_client_id=self.client_id,
                                       device_key=self.device_key)
        deadline = time.time() + 120
        attempt = 0
        while True:
            try:
                r = self.stub.Register(req, timeout=30)
                break
            except self.grpc.RpcError as e:
                if self.retryable(e.code()) and time.time() < deadline:
                    self.backoff_sleep(min(attempt, 3))
                    attempt += 1
                    continue
                raise ProtocolError(f"Register failed: {e.code().name}: {e.details()}")
        if not r.client_id.startswith("c-") or len(r.session_token) != 64:
            raise ProtocolError(f"Register answered an unexpected id {r.client_id!r} or a "
                                f"session token of {len(r.session_token)} characters")
        if self.client_id and r.client_id != self.client_id:
            raise ProtocolError(f"re-registration as {self.client_id} gave {r.client_id}")
        if not self.client_id and len(r.device_key) != 64:
            raise ProtocolError("a new id came without a 64-character device key")
        self.client_id = r.client_id
        self.session = r.session_token
        if r.device_key:
            self.device_key = r.device_key
        self.max_message_bytes = r.max_message_bytes or 8 * MIB
        self.chunk_bytes = r.chunk_bytes or MIB
        self.liveness_ms = r.liveness_timeout_ms or 60_000
        log(f"registered as {self.client_id} (liveness {self.liveness_ms} ms, chunk "
            f"{self.chunk_bytes}, max message {self.max_message_bytes})")

    # -- liveness --------------------------------------------------------------------------

    def start_heartbeat(self, task_id: str):
        stop = threading.Event()
        period = max(0.2, self.liveness_ms / 3000.0)

        def beat():
            while not stop.wait(period):
                try:
                    self.stub.UploadStatus(self.cpb.UploadStatusRequest(
                        client_id=self.client_id, session_token=self.session,
                        task_id=task_id), timeout=10)
                except self.grpc.RpcError as e:
                    log(f"heartbeat UploadStatus: {e.code().name}: {e.details()}")

        th = threading.Thread(target=beat, daemon=True)
        th.start()
        return stop, th

    @staticmethod
    def stop_heartbeat(beat) -> None:
        if beat is not None:
            stop, th = beat
            stop.set()
            th.join(timeout=15)

    # -- tasks -----------------------------------------------------------------------------

    def expected_params(self, header):
        model = Mlp(header.model_spec)
        if model.input_size != self.x.shape[1]:
            raise Unsupported(f"the model takes {model.input_size} values per example, the "
                              f"shard has {self.x.shape[1]}")
        if model.output_size != self.classes:
            raise Unsupported(f"the model has {model.output_size} outputs, the shard "
                              f"{self.classes} classes")
        return model

    def check_manifest(self, model: Mlp, header):
        """The task manifest must agree with the spec's own parameters (protocol.md)."""
        tensors = header.manifest.tensors
        if len(tensors) != len(model.params):
            raise ProtocolError(f"task manifest lists {len(tensors)} tensors, the model has "
                                f"{len(model.params)}")
        offset = 0
        encodings = set()
        for t, (name, shape) in zip(tensors, model.params):
            if t.name != name or list(t.shape) != shape:
                raise ProtocolError(f"task manifest names {t.name} {list(t.shape)}, the model "
                                    f"{name} {shape}")
            if t.encoding not in (FLOAT32, INT8_PER_CHANNEL, INT4_BLOCK32):
                raise ProtocolError(f"tensor {name}: task encoding "
                                    f"{ENCODING_NAMES.get(t.encoding, t.encoding)}")
            size = encoded_size(shape, t.encoding)
            if t.offset != offset or t.byte_size != size:
                raise ProtocolError(f"tensor {name}: offset {t.offset} size {t.byte_size}, "
                                    f"expected {offset} and {size}")
            offset += size
            encodings.add(t.encoding)
        if header.total_bytes != offset:
            raise ProtocolError(f"total_bytes {header.total_bytes}, the manifest adds up to "
                                f"{offset}")
        return encodings

    def decline(self, header, reason: str) -> None:
        hdr = self.cpb.UpdateHeader(client_id=self.client_id, session_token=self.session,
                                    job_id=header.job_id, round=header.round,
                                    task_id=header.task_id, refusal=reason[:256])
        try:
            self.stub.UploadUpdate(iter([self.cpb.UpdateChunk(header=hdr)]), timeout=30)
        except self.grpc.RpcError as e:
            log(f"decline answered {e.code().name}: {e.details()}")

    def fetch_task(self):
        """Long-polls until a task arrives; returns (header, payload bytes)."""
        attempt = 0
        while True:
            req = self.cpb.FetchTaskRequest(client_id=self.client_id,
                                            session_token=self.session, wait_seconds=20)
            call = self.stub.FetchTask(req, timeout=120)
            header = None
            payload = bytearray()
            trailer = None
            retry_ms = None
            beat = None
            try:
                for msg in call:
                    kind = msg.WhichOneof("kind")
                    if kind == "idle":
                        if header is not None or retry_ms is not None:
                            raise ProtocolError("FetchTask sent `idle` after another message")
                        retry_ms = max(0, msg.idle.retry_after_ms)
                    elif kind == "header":
                        if header is not None or retry_ms is not None:
                            raise ProtocolError("FetchTask sent a second header or a header "
                                                "after `idle`")
                        header = msg.header
                        if header.task_id in self.answered:
                            raise ProtocolError(f"task {header.task_id} handed out again after "
                                                f"the device answered it")
                        try:
                            model = self.expected_params(header)
                            self.unsupported_features(header)
                        except Unsupported as e:
                            call.cancel()
                            self.decline(header, f"doc_device: {e}")
                            raise ProtocolError(f"task {header.task_id} declined: {e}")
                        encodings = self.check_manifest(model, header)
                        if header.total_bytes > 1 << 31:
                            raise ProtocolError(f"task of {header.total_bytes} bytes")
                        # Live from the task's header to the upload's answer (Liveness).
                        beat = self.start_heartbeat(header.task_id)
                    elif kind == "data":
                        if header is None or trailer is not None:
                            raise ProtocolError("a data chunk outside header..trailer")
                        c = msg.data
                        if c.offset != len(payload):
                            raise ProtocolError(f"chunk at offset {c.offset}, expected "
                                                f"{len(payload)}")
                        if not c.data:
                            raise ProtocolError(f"empty chunk at offset {c.offset}")
                        if len(payload) + len(c.data) > header.total_bytes:
                            raise ProtocolError(f"chunks past the announced "
                                                f"{header.total_bytes} bytes")
                        payload += c.data
                    elif kind == "trailer":
                        if header is None or trailer is not None:
                            raise ProtocolError("a trailer without a header, or twice")
                        trailer = msg.trailer
                    else:
                        raise ProtocolError(f"FetchTask sent an empty TaskChunk ({kind})")
            except ProtocolError:
                self.stop_heartbeat(beat)
                call.cancel()
                raise
            except self.grpc.RpcError as e:
                self.stop_heartbeat(beat)
                code = e.code()
                if code == self.grpc.StatusCode.UNAUTHENTICATED:
                    log("session gone (UNAUTHENTICATED): registering again")
                    self.register()
                    continue
                if self.retryable(code) and attempt < 8:
                    log(f"FetchTask {code.name}: {e.details()}; retrying")
                    self.backoff_sleep(attempt)
                    attempt += 1
                    continue
                raise ProtocolError(f"FetchTask failed: {code.name}: {e.details()}")
            attempt = 0
            if retry_ms is not None:
                time.sleep(retry_ms / 1000.0)
                continue
            if header is None:
                raise ProtocolError("FetchTask ended OK with neither `idle` nor a header")
            if trailer is None or len(payload) != header.total_bytes or \
                    crc32(bytes(payload)) != trailer.crc32:
                self.stop_heartbeat(beat)
            if trailer is None:
                raise ProtocolError(f"task {header.task_id}: the stream ended without a "
                                    f"trailer")
            if len(payload) != header.total_bytes:
                raise ProtocolError(f"task {header.task_id}: {len(payload)} bytes, "
                                    f"{header.total_bytes} announced")
            if crc32(bytes(payload)) != trailer.crc32:
                raise ProtocolError(f"task {header.task_id}: CRC-32 {crc32(bytes(payload)):08x} "
                                    f"!= trailer's {trailer.crc32:08x}")
            return header, model, encodings, bytes(payload), beat

    def unsupported_features(self, header) -> None:
        if header.secure_aggregation.num_participants > 0:
            raise Unsupported("secure aggregation is not implemented by this device")
        if header.HasField("fed_cg"):
            raise Unsupported("FedCG is not implemented by this device")
        if header.HasField("teacher_spec") and (header.teacher_spec.layers or
                                                header.teacher_manifest.tensors):
            raise Unsupported("distillation teachers are not implemented by this device")
        if header.training.compute_mode not in (0, 1):
            raise Unsupported(f"compute_mode {header.training.compute_mode}")
        if header.update_encoding not in (0, FLOAT32, INT8_STOCHASTIC_CHUNKED):
            raise Unsupported(f"update encoding {header.update_encoding}")

    # -- uploads ---------------------------------------------------------------------------

    def upload(self, header, model: Mlp, delta: dict, metrics: dict, enc_seed: int) -> int:
        encoding = header.update_encoding or FLOAT32
        manifest = self.tpb.TensorManifest()
        parts = []
        offset = 0
        for idx, (name, shape) in enumerate(model.params):
            rng = Rng(enc_seed, idx) if encoding == INT8_STOCHASTIC_CHUNKED else None
            buf = encode_update_tensor(delta[name], encoding, rng)
            if len(buf) != encoded_size(shape, encoding):
                raise AssertionError(f"{name}: encoded {len(buf)} bytes")
            manifest.tensors.add(name=name, shape=shape, encoding=encoding, offset=offset,
                                 byte_size=len(buf))
            offset += len(buf)
            parts.append(buf)
        payload = b"".join(parts)
        crc = crc32(payload)
        chunk = max(1, min(MIB, self.chunk_bytes, self.max_message_bytes // 2))
        upd_header = self.cpb.UpdateHeader(
            client_id=self.client_id, session_token=self.session, job_id=header.job_id,
            round=header.round, task_id=header.task_id, manifest=manifest,
            total_bytes=len(payload), num_examples=int(self.x.shape[0]),
            metrics=self.cpb.ClientTrainMetrics(**metrics))

        def stream(resume: int):
            h = self.cpb.UpdateHeader()
            h.CopyFrom(upd_header)
            h.session_token = self.session
            h.resume_offset = resume
            yield self.cpb.UpdateChunk(header=h)
            for off in range(resume, len(payload), chunk):
                yield self.cpb.UpdateChunk(data=self.tpb.DataChunk(
                    offset=off, data=payload[off:off + chunk]))
            yield self.cpb.UpdateChunk(trailer=self.tpb.PayloadTrailer(crc32=crc))

        resume = 0
        attempt = 0
        transfer_retries = 0
        code_ = self.grpc.StatusCode
        while True:
            try:
                r = self.stub.UploadUpdate(stream(resume), timeout=300)
            except self.grpc.RpcError as e:
                code = e.code()
                if code == code_.ALREADY_EXISTS:
                    log(f"task {header.task_id}: an earlier upload was accepted already")
                    return len(payload)
                if code == code_.UNAUTHENTICATED and attempt < 3:
                    self.register()
                    attempt += 1
                    continue
                if code == code_.DATA_LOSS and transfer_retries < 2:
                    transfer_retries += 1
                    resume = 0
                    continue
                if self.retryable(code) and attempt < 8:
                    if header.deadline_unix_ms and time.time() * 1000 > header.deadline_unix_ms:
                        raise ProtocolError(f"upload of {header.task_id}: {code.name} and the "
                                            f"round's deadline passed")
                    self.backoff_sleep(attempt)
                    attempt += 1
                    try:
                        st = self.stub.UploadStatus(self.cpb.UploadStatusRequest(
                            client_id=self.client_id, session_token=self.session,
                            task_id=header.task_id), timeout=10)
                        resume = st.bytes_received if 0 <= st.bytes_received < len(payload) \
                            else 0
                    except self.grpc.RpcError:
                        resume = 0
                    continue
                raise ProtocolError(f"UploadUpdate of {header.task_id} failed: {code.name}: "
                                    f"{e.details()}")
            if r.round != header.round:
                raise ProtocolError(f"UploadUpdate answered round {r.round}, the task's is "
                                    f"{header.round}")
            if r.bytes_received != len(payload):
                raise ProtocolError(f"UploadUpdate answered {r.bytes_received} bytes received, "
                                    f"the payload has {len(payload)}")
            return r.bytes_received

    # -- one task --------------------------------------------------------------------------

    def run_task(self, number: int) -> None:
        header, model, encodings, payload, beat = self.fetch_task()
        try:
            received = {}
            for t, (name, shape) in zip(header.manifest.tensors, model.params):
                received[name] = decode_tensor(name, payload[t.offset:t.offset + t.byte_size],
                                               shape, t.encoding)
            if self.args.save_tasks:
                base = os.path.join(self.args.save_tasks, f"{header.job_id}-r{header.round}")
                with open(base + ".payload", "wb") as f:
                    f.write(payload)
                np.savez(base + ".npz", **received)
            x = preprocess(self.x, header.preprocessing)
            delta, metrics, enc_seed = train(model, received, x, self.y, header,
                                             self.client_id)
            norm = math.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2))
                                 for d in delta.values()))
            if not all(np.all(np.isfinite(d)) for d in delta.values()) or not math.isfinite(
                    metrics["train_loss"]):
                self.decline(header, "doc_device: training diverged")
                raise ProtocolError(f"task {header.task_id}: training diverged")
            clip = header.privacy.clip_norm
            if clip > 0 and norm > clip:
                for k in delta:
                    delta[k] = (delta[k].astype(np.float64) * (clip / norm)).astype(np.float32)
            metrics["update_norm"] = norm
            metrics["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            sent = self.upload(header, model, delta, metrics, enc_seed)
        finally:
            self.stop_heartbeat(beat)
        self.answered.add(header.task_id)
        enc_name = "+".join(ENCODING_NAMES[e] for e in sorted(encodings))
        log(f"round {number} task {header.task_id} decoded {len(received)} tensors "
            f"({enc_name}), uploaded {sent} bytes")

    def leave(self) -> None:
        try:
            self.stub.Leave(self.cpb.LeaveRequest(client_id=self.client_id,
                                                  session_token=self.session, reason="done"),
                            timeout=30)
        except self.grpc.RpcError as e:
            raise ProtocolError(f"Leave failed: {e.code().name}: {e.details()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator", required=True, help="HOST:PORT of the devices' listener")
    ap.add_argument("--enrollment-token-file", required=True)
    ap.add_argument("--shard", required=True)
    ap.add_argument("--rounds", type=int, required=True, help="tasks to answer, then leave")
    ap.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR)
    ap.add_argument("--save-tasks", default="",
                    help="optional: keep each task's raw payload (<job>-r<round>.payload) and "
                         "decoded tensors (<job>-r<round>.npz) in this directory")
    args = ap.parse_args()
    if args.rounds < 0:
        fail("--rounds must be >= 0")

    tmp = tempfile.mkdtemp(prefix="doc_device_stubs_")
    try:
        try:
            generate_stubs(args.proto_dir, tmp)
        except (RuntimeError, OSError) as e:
            fail(f"generating the stubs: {e}")
        sys.path.insert(0, tmp)
        import grpc
        cpb = importlib.import_module("coordinator_pb2")
        jpb = importlib.import_module("job_pb2")
        tpb = importlib.import_module("transfer_pb2")
        cgrpc = importlib.import_module("coordinator_pb2_grpc")
        try:
            dev = Device(args, (cpb, jpb, tpb, cgrpc), grpc)
        except (OSError, ValueError) as e:
            fail(str(e))
        try:
            dev.register()
            for r in range(1, args.rounds + 1):
                dev.run_task(r)
            dev.leave()
        except ProtocolError as e:
            fail(f"protocol: {e}")
        except Unsupported as e:
            fail(f"unsupported task: {e}")
        log("done")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
