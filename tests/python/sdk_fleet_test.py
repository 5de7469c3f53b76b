#!/usr/bin/env python3
"""The Python SDK in a real fleet: fedge-coordinator (plaintext, loopback), two fedge-client
processes and one device_numpy.py (a fedge.Device training with numpy), quorum 3 of 3.

Checks, for three jobs (float32 both ways; int4 tasks and int8 updates; int8 tasks):
- every round completes with 3 participants, and the Python device's record counts its rounds;
- fedge.Admin watches each job to its end, and its rounds match ListRounds;
- the weights the Python device decoded for round 2 are exactly the exported model of round 1
  (float32), or exactly that model through the SDK's own encoder and decoder (int4, int8):
  the SDK quantizes bit for bit as the coordinator does;
- a viewer token reads but cannot stop a job (PERMISSION_DENIED); no token is UNAUTHENTICATED.

usage: sdk_fleet_test.py BIN_DIR WORK_DIR PYTHON   (PYTHON: a python with fedge installed)
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import fedge
from fedge import codec
from fedge.v1 import job_pb2
from harness import Fleet, check

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "..", "python", "examples", "device_numpy.py")

JOB = """
name: "python-sdk"
architecture: "mlp"
strategy {{ fed_avg {{}} }}
rounds: 2
selection {{ clients_per_round: 3 seed: 0 }}
round_policy {{ quorum: 3 deadline_seconds: 120 }}
local_training {{ epochs: 1 batch_size: 32 learning_rate: 0.05 momentum: 0.9 max_steps: 20 }}
evaluation {{ dataset: "fashion-mnist" }}
{transfer}
"""


def run_job(admin: fedge.Admin, transfer: str, py_id: str, saved: str, encoding: int) -> None:
    for f in os.listdir(saved):
        os.remove(os.path.join(saved, f))
    before = {c.client_id: c.rounds_participated for c in admin.clients()}
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
    check(final is not None and final.state == job_pb2.JOB_STATE_FINISHED,
          f"{job}: fedge.Admin watched the job to FINISHED ({final.message if final else '-'})")
    rounds = admin.rounds(job)
    check([r.round for r in rounds] == [1, 2] and
          all(r.state == job_pb2.ROUND_STATE_COMPLETED for r in rounds),
          f"{job}: rounds 1 and 2 completed")
    check([(r.round, r.metrics.test_accuracy) for r in closed] ==
          [(r.round, r.metrics.test_accuracy) for r in rounds],
          f"{job}: the watched rounds match ListRounds (accuracy "
          f"{', '.join(f'{r.metrics.test_accuracy:.4f}' for r in rounds)})")
    check(all(r.metrics.participants == 3 and r.metrics.rejected == 0 for r in rounds),
          f"{job}: every round aggregated 3 updates, none rejected")
    after = {c.client_id: c.rounds_participated for c in admin.clients()}
    check(after.get(py_id, 0) - before.get(py_id, 0) == 2,
          f"{job}: the Python device {py_id} took part in both rounds")
    task2 = np.load(os.path.join(saved, "round-0002.npz"))
    model1 = fedge.model_weights(admin.export_model(job, round=1))
    check(sorted(task2.files) == sorted(model1), f"{job}: the round-2 task holds the model's tensors")
    for name, w in model1.items():
        expected = w
        if encoding != codec.FLOAT32:
            expected = codec.decode_tensor(name, codec.encode_tensor(name, w, encoding), w.shape,
                                           encoding)
        if not np.array_equal(task2[name], expected):
            diff = float(np.max(np.abs(task2[name] - expected)))
            raise AssertionError(f"{job}: tensor {name} of the round-2 task differs from the "
                                 f"exported round-1 model (max |diff| {diff})")
    check(True, f"{job}: the Python device's decoded round-2 task equals the exported round-1 "
                f"model{'' if encoding == codec.FLOAT32 else ' through the SDK codec as ' + codec.encoding_name(encoding)}")


def main() -> int:
    bin_dir, work, python = sys.argv[1], sys.argv[2], sys.argv[3]
    with Fleet(bin_dir, work, roles=("operator", "viewer")) as fleet:
        shards = fleet.partition(clients=3, train_examples=3000)
        for i in range(2):
            fleet.start_client(i, shards)
        saved = os.path.join(work, "tasks")
        os.makedirs(saved)
        py_state = os.path.join(work, "python-device.json")
        py = fleet.spawn("python-device", [
            python, EXAMPLE, "--coordinator", fleet.addr, "--insecure",
            "--enrollment-token-file", fleet.token_file, "--shard", fleet.shard(shards, 2),
            "--state-file", py_state, "--save-tasks", saved])
        admin = fleet.admin("operator")
        fleet.wait_registered(admin, 3, watch=[py])
        with open(py_state) as f:
            py_id = json.load(f)["client_id"]
        check(any(c.client_id == py_id and c.profile.platform.startswith("python-")
                  for c in admin.clients()), f"the Python device registered as {py_id}")

        run_job(admin, "", py_id, saved, codec.FLOAT32)
        run_job(admin, "transfer { task_encoding: TENSOR_ENCODING_INT4_BLOCK32 "
                       "update_encoding: TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED }",
                py_id, saved, codec.INT4_BLOCK32)
        run_job(admin, "transfer { task_encoding: TENSOR_ENCODING_INT8_PER_CHANNEL }", py_id,
                saved, codec.INT8_PER_CHANNEL)

        viewer = fleet.admin("viewer")
        check(viewer.get_job().state == job_pb2.JOB_STATE_FINISHED, "a viewer reads the job")
        try:
            viewer.stop_job(reason="viewer")
            raise AssertionError("a viewer stopped a job")
        except fedge.AdminError as e:
            check(e.code.name == "PERMISSION_DENIED", f"a viewer cannot stop a job ({e})")
        try:
            fedge.Admin(fleet.admin_addr, token="", insecure=True).get_job()
            raise AssertionError("GetJob without a token succeeded")
        except fedge.AdminError as e:
            check(e.code.name == "UNAUTHENTICATED", f"no token: {e.code.name}")
        print("sdk_fleet_test: PASS")
        return 0


if __name__ == "__main__":
    sys.exit(main())
