#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/NAME/) that are not
copied from examples/: valid inputs in each harness's input layout (see the *_fuzz.cc
headers), encoded by hand in protobuf's wire format so that no generated Python is needed.

    python3 tests/fuzz/make_seeds.py      # from the repository root
"""
import gzip
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def varint(n):
    if n < 0:
        n += 1 << 64
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    if wire == 5:
        return key + payload
    raise ValueError(wire)


def tensor_info(name, shape, encoding, offset, size):
    b = field(1, 2, name.encode())
    b += field(2, 2, b"".join(varint(d) for d in shape))  # packed
    b += field(3, 0, encoding) + field(4, 0, offset) + field(5, 0, size)
    return b


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def encode(shape, encoding, values):
    if encoding == 1:  # FLOAT32
        return struct.pack("<%df" % len(values), *values)
    if encoding == 2:  # INT8_PER_CHANNEL
        rows = shape[0] if len(shape) >= 2 else 1
        per = len(values) // rows
        scales, qs = [], []
        for r in range(rows):
            row = values[r * per:(r + 1) * per]
            s = max((abs(v) for v in row), default=0) / 127
            scales.append(s)
            qs += [max(-127, min(127, round(v / s))) if s else 0 for v in row]
        return struct.pack("<%df" % rows, *scales) + struct.pack("<%db" % len(qs), *qs)
    if encoding == 3:  # INT4_BLOCK32, zero values: d = 0, q = 8
        rows = shape[0] if len(shape) >= 2 else 1
        per = len(values) // rows
        blocks = rows * ((per + 31) // 32)
        return (struct.pack("<e", 0.0) + bytes([0x88] * 16)) * blocks
    if encoding == 5:  # INT8_STOCHASTIC_CHUNKED, zero values
        chunks = (len(values) + 255) // 256
        return struct.pack("<%df" % chunks, *([0.0] * chunks)) + bytes(len(values))
    raise ValueError(encoding)


SETS = [
    [("fc.w", [3, 4]), ("fc.b", [4])],
    [("conv.w", [2, 1, 3, 3]), ("empty", [0]), ("bias", [5])],
    [("big", [64, 33])],
]


def write(name, file, data):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, file), "wb") as f:
        f.write(data)


def payload_seeds():
    for which, tensors in enumerate(SETS):
        for encoding in (1, 2, 3, 5):
            infos, payload = b"", b""
            for tname, shape in tensors:
                vals = [0.25 * ((i % 7) - 3) for i in range(numel(shape))]
                if encoding in (3, 5):
                    vals = [0.0] * numel(shape)
                enc = encode(shape, encoding, vals)
                infos += field(1, 2, tensor_info(tname, shape, encoding, len(payload), len(enc)))
                payload += enc
            write("payload", "set%d-enc%d" % (which, encoding),
                  bytes([which]) + struct.pack("<H", len(infos)) + infos + payload)


def assembler_seeds():
    # FuzzedDataProvider takes integers from the END of the input; a few random-looking
    # byte strings are enough to start from.
    for i, n in enumerate((0, 17, 300, 4096)):
        write("assembler", "seed%d" % i, bytes((j * 31 + i) % 256 for j in range(n + 16)))


def tensor(name, shape, values):
    return (field(1, 2, name.encode()) + field(2, 2, b"".join(varint(d) for d in shape)) +
            field(3, 2, struct.pack("<%df" % len(values), *values)))


def model_seeds():
    # An mlp 4 -> 3 (relu) -> 2 with its parameters, and a small cnn spec without them.
    def dense(name, i, o):
        return field(3, 2, field(1, 2, name.encode()) + field(2, 2, field(1, 0, i) + field(2, 0, o)))
    relu = field(3, 2, field(1, 2, b"r") + field(5, 2, b""))
    spec = field(1, 2, b"tiny") + field(2, 2, varint(4)) + dense("fc1", 4, 3) + relu + dense("fc2", 3, 2)
    params = b"".join(field(2, 2, tensor(n, sh, [0.1] * numel(sh))) for n, sh in
                      (("fc1.weight", [3, 4]), ("fc1.bias", [3]), ("fc2.weight", [2, 3]), ("fc2.bias", [2])))
    proto = field(1, 2, spec) + params
    write("model", "mlp", bytes([0]) + proto)
    write("model", "mlp-int8", bytes([2]) + proto)
    write("model", "mlp-file-int4", bytes([5]) + proto)
    conv = field(3, 2, field(1, 2, b"c1") + field(3, 2, field(1, 0, 1) + field(2, 0, 2) + field(3, 0, 3)))
    flat = field(3, 2, field(1, 2, b"f") + field(6, 2, b""))
    cnn = field(1, 2, b"cnn") + field(2, 2, varint(6) + varint(6) + varint(1)) + conv + relu + flat + dense("fc", 32, 2)
    write("model", "cnn-spec", bytes([0]) + field(1, 2, cnn))


def language_model_seeds():
    # A tiny transformer base (vocab 8, d 32, one block, 2 heads, SwiGLU 32, context 8) with
    # every parameter, and a one-merge tokenizer; as an fp32 and an int4 task's base, and
    # made into its int4 device form first.
    d, v, f = 32, 8, 32
    spec = field(4, 2, field(1, 0, v) + field(2, 0, d) + field(3, 0, 1) + field(4, 0, 2) +
                 field(5, 0, f) + field(6, 0, 8))
    shapes = [("tok_emb.weight", [v, d]), ("layers.0.attn_norm.weight", [d]),
              ("layers.0.attn.wq.weight", [d, d]), ("layers.0.attn.wk.weight", [d, d]),
              ("layers.0.attn.wv.weight", [d, d]), ("layers.0.attn.wo.weight", [d, d]),
              ("layers.0.ffn_norm.weight", [d]), ("layers.0.ffn.w1.weight", [f, d]),
              ("layers.0.ffn.w2.weight", [d, f]), ("layers.0.ffn.w3.weight", [f, d]),
              ("norm.weight", [d])]
    params = b""
    for n, sh in shapes:
        count = numel(sh)
        vals = [1.0] * count if len(sh) == 1 else [((i * 37) % 17 - 8) * 0.01 for i in range(count)]
        params += field(2, 2, tensor(n, sh, vals))
    proto = field(1, 2, field(1, 2, b"transformer") + spec) + params
    write("language_model", "fp32", bytes([0]) + proto)
    write("language_model", "int4", bytes([1 | (1 << 2)]) + proto)
    write("language_model", "int4-form", bytes([3 | (3 << 2)]) + proto)


def data_seeds():
    n, side = 3, 4
    images = struct.pack(">IIII", 0x803, n, side, side) + bytes(range(n * side * side))
    labels = struct.pack(">II", 0x801, n) + bytes([0, 1, 2])
    write("data_files", "idx", bytes([10]) + struct.pack("<H", len(images)) + images + labels)
    gz = gzip.compress(images)
    write("data_files", "idx-gz", bytes([10]) + struct.pack("<H", len(gz)) + gz + gzip.compress(labels))
    body = b"FEDGETXT" + struct.pack("<II", 1, 2)
    for doc_id, text in ((b"ck01", b"It was night.\n\"Who?\""), (b"cr09", b"")):
        body += struct.pack("<I", len(doc_id)) + doc_id + struct.pack("<I", len(text)) + text
    text_shard = body + struct.pack("<I", zlib.crc32(body))
    write("data_files", "text-shard", bytes([1]) + text_shard)


def device_state_seeds():
    write("device_state", "state", b"\x00client_id 3f2a9c\ndevice_key " + b"ab" * 32 + b"\n")
    write("device_state", "old-state", b"\x00client_id v00000001\n")
    write("device_state", "fedcg", b"\x01")


def secagg_seeds():
    for kind in range(7):
        write("secagg_wire", "kind%d" % kind, bytes([kind, 9]))


if __name__ == "__main__":
    payload_seeds()
    assembler_seeds()
    model_seeds()
    language_model_seeds()
    data_seeds()
    device_state_seeds()
    secagg_seeds()
