"""fedge.codec and fedge.read_shard against the byte layouts of docs/protocol.md."""

import os
import struct
import tempfile
import unittest
import zlib

import numpy as np

from fedge import codec
from fedge.shard import ShardError, read_shard
from fedge.v1 import transfer_pb2


class EncodingTest(unittest.TestCase):
    def test_sizes(self):
        self.assertEqual(codec.encoded_bytes([3, 5], codec.FLOAT32), 60)
        self.assertEqual(codec.encoded_bytes([3, 5], codec.INT8_PER_CHANNEL), 4 * 3 + 15)
        self.assertEqual(codec.encoded_bytes([7], codec.INT8_PER_CHANNEL), 4 + 7)
        self.assertEqual(codec.encoded_bytes([3, 33], codec.INT4_BLOCK32), 18 * 3 * 2)
        self.assertEqual(codec.encoded_bytes([10], codec.INT4_BLOCK32), 18)
        self.assertEqual(codec.encoded_bytes([257], codec.INT8_STOCHASTIC_CHUNKED), 8 + 257)
        self.assertEqual(codec.encoded_bytes([0, 4], codec.INT8_PER_CHANNEL), 0)

    def test_float32_is_little_endian_ieee(self):
        x = np.array([[1.5, -2.0]], dtype=np.float32)
        data = codec.encode_tensor("w", x, codec.FLOAT32)
        self.assertEqual(data, struct.pack("<2f", 1.5, -2.0))
        np.testing.assert_array_equal(codec.decode_tensor("w", data, [1, 2], codec.FLOAT32), x)

    def test_int8_per_channel_by_hand(self):
        x = np.array([[127.0, -63.5, 0.25], [0.0, 0.0, 0.0]], dtype=np.float32)
        data = codec.encode_tensor("w", x, codec.INT8_PER_CHANNEL)
        # scales 1 and 0, then q: 127, round(-63.5) = -64 (halves away from zero), 0; zeros.
        self.assertEqual(data, struct.pack("<2f", 1.0, 0.0) + bytes([127, 256 - 64, 0, 0, 0, 0]))
        y = codec.decode_tensor("w", data, [2, 3], codec.INT8_PER_CHANNEL)
        np.testing.assert_array_equal(y, [[127, -64, 0], [0, 0, 0]])

    def test_int8_per_channel_error_is_half_a_step(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=(16, 50)).astype(np.float32)
        y = codec.decode_tensor("w", codec.encode_tensor("w", x, codec.INT8_PER_CHANNEL), x.shape,
                                codec.INT8_PER_CHANNEL)
        step = np.abs(x).max(axis=1, keepdims=True) / 127
        self.assertTrue(np.all(np.abs(x - y) <= step / 2 * (1 + 1e-5)))

    def test_int8_scale_near_float_max_decodes(self):
        x = np.array([3.4028235e38, -3.4e38], dtype=np.float32)
        for enc in (codec.INT8_PER_CHANNEL, codec.INT8_STOCHASTIC_CHUNKED):
            y = codec.decode_tensor("w", codec.encode_tensor("w", x, enc), [2], enc)
            self.assertTrue(np.all(np.isfinite(y)), enc)

    def test_int4_block_by_hand(self):
        x = np.zeros(32, dtype=np.float32)
        x[0], x[1], x[16], x[17] = -8.0, 4.0, 2.0, 5.0
        data = codec.encode_tensor("b", x, codec.INT4_BLOCK32)
        self.assertEqual(len(data), 18)
        # a = -8 (largest magnitude, with its sign), d = a/-8 = 1 as fp16 (0x3C00).
        self.assertEqual(data[:2], bytes([0x00, 0x3C]))
        # q = clamp(rint(x/d) + 8, 0, 15): q0 = 0, q1 = 12, q16 = 10, q17 = 13.
        self.assertEqual(data[2], 0 | (10 << 4))
        self.assertEqual(data[3], 12 | (13 << 4))
        y = codec.decode_tensor("b", data, [32], codec.INT4_BLOCK32)
        np.testing.assert_array_equal(y, x)

    def test_int4_pads_rows_and_halves_round_to_even(self):
        x = np.arange(2 * 40, dtype=np.float32).reshape(2, 40) / 10 - 3
        data = codec.encode_tensor("w", x, codec.INT4_BLOCK32)
        self.assertEqual(len(data), 18 * 2 * 2)
        y = codec.decode_tensor("w", data, x.shape, codec.INT4_BLOCK32)
        self.assertEqual(y.shape, x.shape)
        blocks = np.pad(x, ((0, 0), (0, 24))).reshape(-1, 32)
        d = np.abs(blocks).max(axis=1) / 8
        err = np.abs(np.pad(x - y, ((0, 0), (0, 24))).reshape(-1, 32))
        self.assertTrue(np.all(err <= d[:, None] * 0.5 * 1.01 + 1e-3))
        half = np.zeros(32, dtype=np.float32)
        half[0], half[1] = -8.0, 2.5  # d = 1: 2.5 rounds to 2 (even), q = 10
        self.assertEqual(codec.encode_tensor("h", half, codec.INT4_BLOCK32)[3] & 0x0F, 10)

    def test_stochastic_rounding_is_unbiased(self):
        x = np.full(256, 0.305, dtype=np.float32)
        x[0] = 1.27  # scale 0.01: 0.305 is 30.5 steps, rounded up half the time
        rng = np.random.default_rng(0)
        total = np.zeros(256)
        for _ in range(400):
            total += codec.decode_tensor(
                "d", codec.encode_tensor("d", x, codec.INT8_STOCHASTIC_CHUNKED, rng), [256],
                codec.INT8_STOCHASTIC_CHUNKED)
        self.assertAlmostEqual(total[1:].mean() / 400, 0.305, delta=2e-4)

    def test_decoder_refuses_bad_scales_and_sizes(self):
        bad = struct.pack("<f", -1.0) + bytes(3)
        with self.assertRaisesRegex(codec.PayloadError, "scale of row 0"):
            codec.decode_tensor("w", bad, [3], codec.INT8_PER_CHANNEL)
        with self.assertRaisesRegex(codec.PayloadError, "takes 16"):
            codec.decode_tensor("w", bytes(12), [4], codec.FLOAT32)
        nan = struct.pack("<f", float("nan"))
        with self.assertRaisesRegex(codec.PayloadError, "not finite"):
            codec.decode_tensor("w", nan, [1], codec.FLOAT32)
        inf_half = bytes([0x00, 0x7C]) + bytes(16)
        with self.assertRaisesRegex(codec.PayloadError, "block 0 has scale"):
            codec.decode_tensor("w", inf_half, [32], codec.INT4_BLOCK32)

    def test_update_manifest_follows_the_task(self):
        task = transfer_pb2.TensorManifest()
        task.tensors.add(name="a.weight", shape=[2, 3], encoding=codec.INT4_BLOCK32)
        task.tensors.add(name="a.bias", shape=[2], encoding=codec.INT4_BLOCK32)
        delta = {"a.bias": np.ones(2, np.float32), "a.weight": np.ones((2, 3), np.float32)}
        m, payload = codec.encode_update(task, delta, codec.INT8_STOCHASTIC_CHUNKED)
        self.assertEqual([t.name for t in m.tensors], ["a.weight", "a.bias"])
        self.assertEqual([t.offset for t in m.tensors], [0, 10])
        self.assertEqual(len(payload), 10 + 6)
        out = codec.decode_section(m, payload, codec.UPDATE_ENCODINGS)
        np.testing.assert_array_equal(out["a.weight"], np.ones((2, 3)))
        with self.assertRaisesRegex(codec.PayloadError, "missing"):
            codec.encode_update(task, {"a.weight": delta["a.weight"]}, codec.FLOAT32)
        with self.assertRaisesRegex(codec.PayloadError, "shape"):
            codec.encode_update(task, {**delta, "a.bias": np.ones(3)}, codec.FLOAT32)
        with self.assertRaisesRegex(codec.PayloadError, "FLOAT32 or INT8"):
            codec.encode_update(task, delta, codec.INT4_BLOCK32)


class ChunkTest(unittest.TestCase):
    def test_chunks_reassemble_with_crc(self):
        payload = bytes(range(256)) * 10
        a = codec.Assembler(len(payload), 1 << 20)
        for c in codec.chunks(payload, 1000):
            a.add(c)
        self.assertEqual(a.finish(transfer_pb2.PayloadTrailer(crc32=zlib.crc32(payload))), payload)

    def test_assembler_refuses_faults(self):
        with self.assertRaisesRegex(codec.PayloadError, "announces"):
            codec.Assembler(100, 10)
        a = codec.Assembler(10, 100)
        with self.assertRaisesRegex(codec.PayloadError, "expected 0"):
            a.add(transfer_pb2.DataChunk(offset=4, data=b"x"))
        with self.assertRaisesRegex(codec.PayloadError, "empty"):
            a.add(transfer_pb2.DataChunk(offset=0, data=b""))
        with self.assertRaisesRegex(codec.PayloadError, "past"):
            a.add(transfer_pb2.DataChunk(offset=0, data=bytes(11)))
        a.add(transfer_pb2.DataChunk(offset=0, data=bytes(10)))
        with self.assertRaisesRegex(codec.PayloadError, "CRC"):
            a.finish(transfer_pb2.PayloadTrailer(crc32=1))
        b = codec.Assembler(10, 100)
        with self.assertRaisesRegex(codec.PayloadError, "after 0 of 10"):
            b.finish(transfer_pb2.PayloadTrailer(crc32=0))


def write_shard(path, labels, features, classes=10, dims=(2, 2), version=1, crc_fix=0):
    body = b"FEDGESHD" + struct.pack("<4I", version, len(labels), classes, len(dims))
    body += struct.pack(f"<{len(dims)}I", *dims)
    body += np.asarray(labels, "<i4").tobytes() + np.asarray(features, "<f4").tobytes()
    with open(path, "wb") as f:
        f.write(body + struct.pack("<I", (zlib.crc32(body) + crc_fix) & 0xFFFFFFFF))


class ShardTest(unittest.TestCase):
    def test_reads_and_refuses(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "a.shard")
            write_shard(p, [1, 9], np.arange(8, dtype=np.float32) / 8)
            s = read_shard(p)
            self.assertEqual(s.num_examples, 2)
            self.assertEqual(s.shape, (2, 2))
            self.assertEqual(list(s.labels), [1, 9])
            self.assertEqual(float(s.features[1, 1, 1]), 7 / 8)
            write_shard(p, [1], np.zeros(4), crc_fix=1)
            with self.assertRaisesRegex(ShardError, "CRC"):
                read_shard(p)
            write_shard(p, [10], np.zeros(4))
            with self.assertRaisesRegex(ShardError, "label"):
                read_shard(p)
            write_shard(p, [1], np.zeros(4), version=2)
            with self.assertRaisesRegex(ShardError, "version 2"):
                read_shard(p)
            write_shard(p, [1], np.zeros(4))
            with open(p, "ab") as f:
                f.write(b"x")
            with self.assertRaisesRegex(ShardError, "implies"):
                read_shard(p)
            with self.assertRaisesRegex(ShardError, "missing.shard"):
                read_shard(os.path.join(d, "missing.shard"))


if __name__ == "__main__":
    unittest.main()
