#!/usr/bin/env python3
"""Runs doc_device.py, a device written only from docs/protocol.md and proto/*.proto, against
a real fedge-coordinator (plaintext, loopback), with fedge.Admin as the operator.

Three jobs, one after the other, each an MLP over 2 rounds with 1 client and quorum 1:
(a) float32 both ways; (b) int4 tasks and int8 stochastic updates; (c) int8 tasks.
Checks that every round completes with 1 participant and none rejected, that job (a)
learns (accuracy after round 2 above 0.3), that the device's rounds_participated grows by
2 per job, that the rounds' byte counts are the sizes protocol.md gives for each encoding,
that the device's decoded round-2 task is the exported round-1 model (float32), or that
protocol.md's int8/int4 encoders applied to that model give the task's payload byte for byte,
and that the device answers 6 tasks, leaves and exits 0.

usage: doc_device_test.py BIN_DIR WORK_DIR PYTHON   (PYTHON: a python with fedge installed;
       doc_device.py runs with it too but does not import fedge)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np

import fedge
from fedge.v1 import job_pb2
from harness import Fleet, check

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE = os.path.join(HERE, "doc_device.py")

JOB = """
name: "doc-device"
architecture: "mlp"
strategy {{ fed_avg {{}} }}
rounds: 2
selection {{ clients_per_round: 1 seed: 0 }}
round_policy {{ quorum: 1 deadline_seconds: 120 }}
local_training {{ epochs: 1 batch_size: 32 learning_rate: 0.05 momentum: 0.9 max_steps: 20 }}
evaluation {{ dataset: "fashion-mnist" }}
{transfer}
"""

# Fashion-MNIST's mlp: fc1 [200, 784], fc2 [200, 200], fc3 [10, 200], each with a bias.
MLP_SHAPES = [[200, 784], [200], [200, 200], [200], [10, 200], [10]]


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def size(shape, enc: str) -> int:
    """Bytes of one tensor, as protocol.md's table gives them."""
    n = numel(shape)
    r, l = (shape[0], n // shape[0]) if len(shape) >= 2 else (1, n)
    return {"FLOAT32": 4 * n, "INT8_PER_CHANNEL": 4 * r + n,
            "INT4_BLOCK32": 18 * r * ((l + 31) // 32),
            "INT8_STOCHASTIC_CHUNKED": 4 * ((n + 255) // 256) + n}[enc]


def model_bytes(enc: str) -> int:
    return sum(size(s, enc) for s in MLP_SHAPES)


# The coordinator's task encoders as docs/protocol.md describes them ("Tensor encodings"),
# written from the document (not the SDK's codec): the harness checks that they reproduce the
# payload the coordinator sent, byte for byte.

def rows(w: np.ndarray) -> np.ndarray:
    n = w.size
    if w.ndim >= 2:
        return w.reshape(w.shape[0], n // w.shape[0] if w.shape[0] else 0)
    return w.reshape(1, n)


def int8_scales(m: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        s = (m.astype(np.float32) / np.float32(127)).astype(np.float32)
        over = ~np.isfinite(np.float32(127) * s)
    s[over] = np.nextafter(s[over], np.float32(0))
    return s


def round_half_away(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    r = np.floor(a)
    r = r + ((a - r) >= 0.5)
    return np.copysign(r, v)


def doc_encode_int8_per_channel(w: np.ndarray) -> bytes:
    x = rows(w.astype(np.float32))
    s = int8_scales(np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32))
    q = np.zeros(x.shape, dtype=np.int8)
    nz = s > 0
    if nz.any():
        v = x[nz].astype(np.float64) / s[nz].astype(np.float64)[:, None]
        q[nz] = np.clip(round_half_away(v), -127, 127).astype(np.int8)
    return s.astype("<f4").tobytes() + q.tobytes()


def doc_encode_int4_block32(w: np.ndarray) -> bytes:
    x = rows(w.astype(np.float32))
    r, l = x.shape
    b = (l + 31) // 32 * 32
    padded = np.zeros((r, b), dtype=np.float32)
    padded[:, :l] = x
    blocks = padded.reshape(-1, 32)
    idx = np.argmax(np.abs(blocks), axis=1)               # the first of equal magnitudes
    a = blocks[np.arange(blocks.shape[0]), idx]
    d = (a / np.float32(-8)).astype(np.float32)
    q = np.full(blocks.shape, 8, dtype=np.int64)
    nz = d != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        qq = np.rint((blocks[nz] / d[nz][:, None]).astype(np.float32)) + 8
    q[nz] = np.clip(qq, 0, 15).astype(np.int64)
    out = np.zeros((blocks.shape[0], 18), dtype=np.uint8)
    out[:, 0:2] = d.astype("<f2").view(np.uint8).reshape(-1, 2)
    out[:, 2:18] = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    return out.tobytes()


def check_task_against_export(admin: fedge.Admin, label: str, job: str, saved: str,
                              task_enc: str) -> None:
    """The device's round-2 task (raw and decoded) against the exported round-1 model."""
    model1 = fedge.model_weights(admin.export_model(job, round=1))
    payload = open(os.path.join(saved, f"{job}-r2.payload"), "rb").read()
    decoded = np.load(os.path.join(saved, f"{job}-r2.npz"))
    names = list(model1)
    check(sorted(decoded.files) == sorted(names) and len(names) == 6,
          f"job {label}: the device decoded the 6 tensors of the exported model")
    if task_enc == "FLOAT32":
        for n in names:
            if not np.array_equal(decoded[n], model1[n]):
                raise AssertionError(f"job {label}: tensor {n} decoded differs from the "
                                     f"exported round-1 model")
        check(True, f"job {label}: the decoded round-2 task equals the exported round-1 model "
                    f"exactly")
        return
    encode = {"INT8_PER_CHANNEL": doc_encode_int8_per_channel,
              "INT4_BLOCK32": doc_encode_int4_block32}[task_enc]
    expected = b"".join(encode(model1[n]) for n in names)   # the manifest order is layer order
    if expected != payload:
        first = next((i for i, (p, q) in enumerate(zip(expected, payload)) if p != q),
                     min(len(expected), len(payload)))
        raise AssertionError(f"job {label}: the {task_enc} encoder of protocol.md applied to the "
                             f"exported round-1 model differs from the task payload at byte "
                             f"{first} ({len(expected)} vs {len(payload)} bytes)")
    check(True, f"job {label}: protocol.md's {task_enc} encoder applied to the exported round-1 "
                f"model reproduces the round-2 task payload byte for byte ({len(payload)} bytes)")
    # protocol.md's error bounds: |x − x̂| ≤ s/2 (int8, s ≤ max|row|/127) and ≤ |d| plus fp16's
    # rounding of d (int4, |d| ≤ max|block|/8); checked loosely per tensor.
    worst = 0.0
    for n in names:
        err = float(np.max(np.abs(decoded[n] - model1[n])))
        top = float(np.max(np.abs(model1[n])))
        bound = top / 254 if task_enc == "INT8_PER_CHANNEL" else top / 8
        if err > bound * 1.002 + 1e-12:
            raise AssertionError(f"job {label}: tensor {n} decoded with error {err:.3e} over the "
                                 f"documented bound {bound:.3e}")
        worst = max(worst, err)
    check(True, f"job {label}: decoded weights within the documented {task_enc} error bound "
                f"(max |x - x^| {worst:.2e})")


def run_job(admin: fedge.Admin, label: str, transfer: str, dev_id: str, task_enc: str,
            update_enc: str, min_accuracy: float | None, device: subprocess.Popen,
            saved: str) -> None:
    # include_inactive: after its 6th task the device leaves (LEFT), maybe before the job ends.
    before = {c.client_id: c.rounds_participated
              for c in admin.clients(include_inactive=True)}
    started = admin.start_job(JOB.format(transfer=transfer))
    job = started.job_id
    closed = []
    final = None
    for event in admin.watch(job, replay_history=True, timeout_s=300):
        kind = event.WhichOneof("kind")
        if kind == "round_closed":
            closed.append(event.round_closed)
        elif kind == "job_changed":
            final = event.job_changed
    if device.poll() not in (None, 0):
        raise AssertionError(f"job {label}: doc_device exited ({device.returncode}) during "
                             f"the job; see its log")
    check(final is not None and final.state == job_pb2.JOB_STATE_FINISHED,
          f"job {label} ({job}): watched to FINISHED ({final.message if final else '-'})")
    rounds = admin.rounds(job)
    check([r.round for r in rounds] == [1, 2] and
          all(r.state == job_pb2.ROUND_STATE_COMPLETED for r in rounds),
          f"job {label}: rounds 1 and 2 COMPLETED")
    check([r.round for r in closed] == [1, 2], f"job {label}: the watch saw rounds 1 and 2 close")
    for r in rounds:
        m = r.metrics
        reasons = [c.reason for c in m.clients if c.reason]
        check(m.participants == 1 and m.rejected == 0,
              f"job {label} round {r.round}: participants {m.participants}, rejected "
              f"{m.rejected}, dropped {m.dropped}{' ' + str(reasons) if reasons else ''}")
        want_down, want_up = model_bytes(task_enc), model_bytes(update_enc)
        check(m.bytes_down == want_down and m.bytes_up == want_up,
              f"job {label} round {r.round}: {m.bytes_down} bytes down ({task_enc}: "
              f"{want_down}), {m.bytes_up} bytes up ({update_enc}: {want_up})")
        check(len(m.clients) == 1 and m.clients[0].client_id == dev_id and
              m.clients[0].outcome == job_pb2.ClientRoundMetrics.OUTCOME_ACCEPTED,
              f"job {label} round {r.round}: the doc device's update was ACCEPTED "
              f"(train loss {m.train_loss:.4f}, update norm {m.clients[0].update_norm:.4f}, "
              f"test accuracy {m.test_accuracy:.4f})")
    if min_accuracy is not None:
        acc = rounds[-1].metrics.test_accuracy
        check(rounds[-1].metrics.evaluated and acc > min_accuracy,
              f"job {label}: accuracy after round 2 is {acc:.4f} > {min_accuracy}")
    after = {c.client_id: c.rounds_participated for c in admin.clients(include_inactive=True)}
    check(after.get(dev_id, 0) - before.get(dev_id, 0) == 2,
          f"job {label}: the doc device's rounds_participated grew by 2 "
          f"({before.get(dev_id, 0)} -> {after.get(dev_id, 0)})")
    check_task_against_export(admin, label, job, saved, task_enc)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bin_dir, work, python = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.time()
    fleet = Fleet(bin_dir, work)
    try:
        op_token = fleet.tokens["operator"]
        check(re.fullmatch(r"fedge-op-[0-9a-f]{64}", op_token) is not None,
              "an operator token was created")
        check(True, f"the coordinator serves on {fleet.addr} (admin {fleet.admin_addr})")
        shard = fleet.shard(fleet.partition(clients=1, train_examples=2000), 0)
        check(os.path.exists(shard), "partition_fmnist wrote 1 shard")

        saved = os.path.join(work, "tasks")
        os.makedirs(saved)
        device = fleet.spawn("doc_device", [
            python, DEVICE, "--coordinator", fleet.addr, "--enrollment-token-file",
            fleet.token_file, "--shard", shard, "--rounds", "6", "--save-tasks", saved])

        admin = fleet.admin("operator")
        fleet.wait_registered(admin, 1, watch=[device])
        clients = admin.clients()
        check(len(clients) == 1, "1 client registered")
        dev = clients[0]
        dev_id = dev.client_id
        check(re.fullmatch(r"c-[0-9a-f]{16}", dev_id) is not None and
              dev.profile.platform == "doc-device" and dev.profile.num_examples == 2000,
              f"doc_device registered as {dev_id} (platform {dev.profile.platform!r}, "
              f"{dev.profile.num_examples} examples)")

        run_job(admin, "(a) float32", "", dev_id, "FLOAT32", "FLOAT32", 0.3, device, saved)
        run_job(admin, "(b) int4 tasks, int8 updates",
                "transfer { task_encoding: TENSOR_ENCODING_INT4_BLOCK32 "
                "update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED }",
                dev_id, "INT4_BLOCK32", "INT8_STOCHASTIC_CHUNKED", None, device, saved)
        run_job(admin, "(c) int8 tasks",
                "transfer { task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL }",
                dev_id, "INT8_PER_CHANNEL", "FLOAT32", None, device, saved)

        try:
            rc = device.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("doc_device did not exit within 60 s of its 6th task")
        with open(os.path.join(work, "doc_device.log")) as f:
            dev_log = f.read()
        lines = re.findall(r"^doc_device: round (\d+) task (\S+) decoded (\d+) tensors "
                           r"\((\S+)\), uploaded (\d+) bytes$", dev_log, re.M)
        check(rc == 0 and dev_log.rstrip().endswith("doc_device: done"),
              f"doc_device exited {rc} after 'doc_device: done'")
        check([int(l[0]) for l in lines] == [1, 2, 3, 4, 5, 6] and
              all(int(l[2]) == 6 for l in lines) and
              [l[3] for l in lines] == ["FLOAT32"] * 2 + ["INT4_BLOCK32"] * 2 +
              ["INT8_PER_CHANNEL"] * 2,
              "doc_device printed 6 round lines with the expected encodings")
        left = [c for c in admin.clients(include_inactive=True) if c.client_id == dev_id]
        check(len(left) == 1 and left[0].state == job_pb2.CLIENT_STATE_LEFT and
              left[0].rounds_participated == 6,
              "the doc device's record is LEFT with 6 rounds participated")
        print(f"doc_device_test: {time.time() - t0:.1f} s")
        print("doc_device_test: PASS")
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
