"""fedge.Device against a fake Coordinator stub: task decoding, update encoding, resumed
uploads, heartbeats while training, declines, and the run loop's reactions to errors."""

import threading
import time
import unittest
import zlib

import grpc
import numpy as np

import fedge
from fedge import codec
from fedge.v1 import coordinator_pb2, transfer_pb2


class RpcError(grpc.RpcError):
    def __init__(self, code, details=""):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def make_task(weights, encoding=codec.FLOAT32, **header_fields):
    manifest = transfer_pb2.TensorManifest()
    parts, at = [], 0
    for name, w in weights.items():
        data = codec.encode_tensor(name, w, encoding)
        t = manifest.tensors.add(name=name, encoding=encoding, offset=at, byte_size=len(data))
        t.shape.extend(w.shape)
        parts.append(data)
        at += len(data)
    payload = b"".join(parts)
    header = coordinator_pb2.TaskHeader(job_id="job", round=1, task_id="job/1/c",
                                        manifest=manifest, total_bytes=len(payload),
                                        **header_fields)
    return header, payload


class FakeStub:
    """Records every call; behaviour set per test."""

    def __init__(self, header=None, payload=b""):
        self.header, self.payload = header, payload
        self.uploads = []          # lists of UpdateChunk messages received per stream
        self.status_calls = 0
        self.kept = 0              # what UploadStatus answers
        self.fail_first_upload_after = None  # bytes after which the first stream breaks
        self.register_code = None
        self.crc = None  # the trailer's CRC-32 (default: the payload's)

    def Register(self, req, timeout=None):
        if self.register_code:
            raise RpcError(self.register_code, "no")
        return coordinator_pb2.RegisterResponse(client_id="c-1", session_token="s",
                                                chunk_bytes=1000, liveness_timeout_ms=1200,
                                                device_key="k" * 64)

    def FetchTask(self, req, timeout=None):
        if self.header is None:
            yield coordinator_pb2.TaskChunk(idle=coordinator_pb2.TaskIdle(retry_after_ms=10,
                                                                          no_job=True))
            return
        yield coordinator_pb2.TaskChunk(header=self.header)
        for c in codec.chunks(self.payload, 700):
            yield coordinator_pb2.TaskChunk(data=c)
        yield coordinator_pb2.TaskChunk(trailer=transfer_pb2.PayloadTrailer(
            crc32=zlib.crc32(self.payload) if self.crc is None else self.crc))

    def UploadUpdate(self, messages, timeout=None):
        got = []
        received = 0
        for m in messages:
            got.append(m)
            if m.WhichOneof("kind") == "data":
                received += len(m.data.data)
                if (self.fail_first_upload_after is not None and not self.uploads
                        and received >= self.fail_first_upload_after):
                    self.kept = received
                    self.uploads.append(got)
                    raise RpcError(grpc.StatusCode.UNAVAILABLE, "connection reset")
        self.uploads.append(got)
        return coordinator_pb2.UploadUpdateResponse(round=1, bytes_received=received)

    def UploadStatus(self, req, timeout=None):
        self.status_calls += 1
        return coordinator_pb2.UploadStatusResponse(bytes_received=self.kept)

    def Leave(self, req, timeout=None):
        return coordinator_pb2.LeaveResponse()


def device(stub, **kw):
    d = fedge.Device("127.0.0.1:1", "token", 100, insecure=True, **kw)
    d._stub = stub
    return d


WEIGHTS = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
           "fc.bias": np.array([0.5, -1.0, 2.0], dtype=np.float32)}


class DeviceTest(unittest.TestCase):
    def test_decodes_the_task_in_each_encoding(self):
        for enc in codec.TASK_ENCODINGS:
            header, payload = make_task(WEIGHTS, enc)
            d = device(FakeStub(header, payload))
            d.register()
            task = d.fetch_task(1)
            self.assertEqual(list(task.weights), ["fc.weight", "fc.bias"])
            for name, w in WEIGHTS.items():
                expected = codec.decode_tensor(name, codec.encode_tensor(name, w, enc), w.shape, enc)
                np.testing.assert_array_equal(task.weights[name], expected)

    def test_a_corrupt_payload_is_refused(self):
        header, payload = make_task(WEIGHTS)
        stub = FakeStub(header, payload[:-1] + b"\x00")
        stub.crc = zlib.crc32(payload)
        d = device(stub)
        d.register()
        with self.assertRaisesRegex(fedge.DeviceError, "malformed"):
            d.fetch_task(1)

    def test_uploads_delta_against_the_task_and_resumes_where_the_coordinator_kept(self):
        big = {"w": np.ones((50, 40), np.float32)}
        header, payload = make_task(big)
        stub = FakeStub(header, payload)
        stub.fail_first_upload_after = 3000
        d = device(stub)
        d.register()
        task = d.fetch_task(1)
        sent = d.upload(task, fedge.Update(num_examples=10, weights={"w": big["w"] * 3}))
        self.assertEqual(sent, 8000)
        self.assertEqual(len(stub.uploads), 2)
        second = stub.uploads[1]
        self.assertEqual(second[0].header.resume_offset, 3000)
        self.assertEqual(second[1].data.offset, 3000)
        body = b"".join(m.data.data for m in stub.uploads[0] if m.WhichOneof("kind") == "data")
        body = body[:3000] + b"".join(m.data.data for m in second if m.WhichOneof("kind") == "data")
        self.assertEqual(zlib.crc32(body), second[-1].trailer.crc32)
        delta = np.frombuffer(body, "<f4").reshape(50, 40)
        np.testing.assert_array_equal(delta, 2.0)  # w_local − w_received
        h = second[0].header
        self.assertEqual(h.num_examples, 10)
        self.assertEqual(h.total_bytes, 8000)
        self.assertAlmostEqual(h.metrics.update_norm, float(np.sqrt(2000 * 4)), places=3)

    def test_clips_to_the_tasks_norm_and_encodes_int8(self):
        header, payload = make_task(WEIGHTS)
        header.privacy.clip_norm = 0.5
        header.update_encoding = codec.INT8_STOCHASTIC_CHUNKED
        stub = FakeStub(header, payload)
        d = device(stub)
        d.register()
        task = d.fetch_task(1)
        d.upload(task, fedge.Update(num_examples=5,
                                    delta={k: np.full_like(v, 3.0) for k, v in WEIGHTS.items()}))
        h = stub.uploads[0][0].header
        self.assertEqual(h.manifest.tensors[0].encoding, codec.INT8_STOCHASTIC_CHUNKED)
        body = b"".join(m.data.data for m in stub.uploads[0] if m.WhichOneof("kind") == "data")
        out = codec.decode_section(h.manifest, body, codec.UPDATE_ENCODINGS)
        norm = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in out.values()))
        self.assertLessEqual(norm, 0.5)
        self.assertGreater(norm, 0.45)

    def test_keeps_the_device_live_while_training(self):
        header, payload = make_task(WEIGHTS)
        stub = FakeStub(header, payload)
        d = device(stub)
        d.register()  # liveness 1.2 s: a heartbeat every 0.5 s (the floor)

        def slow(task):
            time.sleep(1.3)
            return fedge.Update(num_examples=1, delta={k: np.zeros_like(v)
                                                       for k, v in task.weights.items()})

        self.assertEqual(d.run_once(slow, 1), 1)
        self.assertGreaterEqual(stub.status_calls, 2)

    def test_declines_secure_aggregation_and_what_training_declines(self):
        header, payload = make_task(WEIGHTS)
        header.secure_aggregation.num_participants = 3
        stub = FakeStub(header, payload)
        d = device(stub)
        d.register()
        d.run_once(lambda t: self.fail("must not train"), 1)
        self.assertEqual(len(stub.uploads[0]), 1)
        self.assertIn("secure aggregation is not implemented", stub.uploads[0][0].header.refusal)
        header2, payload2 = make_task(WEIGHTS)
        stub2 = FakeStub(header2, payload2)
        d2 = device(stub2)
        d2.register()
        d2.run_once(lambda t: fedge.Decline("x" * 1000), 1)
        self.assertEqual(len(stub2.uploads[0][0].header.refusal), 256)

    def test_state_file_keeps_the_id_and_key(self):
        import os
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "device.json")
            d = device(FakeStub(), state_file=path)
            d.register()
            self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
            again = device(FakeStub(), state_file=path)
            self.assertEqual(again.client_id, "c-1")
            self.assertEqual(again._device_key, "k" * 64)

    def test_run_stops_on_a_wrong_enrollment_token_and_when_no_job_remains(self):
        stub = FakeStub()
        stub.register_code = grpc.StatusCode.UNAUTHENTICATED
        with self.assertRaises(fedge.DeviceError):
            device(stub).run(lambda t: None)
        idle = device(FakeStub())
        self.assertEqual(idle.run(lambda t: None, exit_when_no_job=True), 0)


if __name__ == "__main__":
    unittest.main()
