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

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np

import fedge
from fedge import codec
from fedge.v1 import job_pb2

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


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as b:
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


class Fleet:
    def __init__(self, bin_dir: str, work: str, python: str):
        self.bin, self.work, self.python = bin_dir, work, python
        self.procs: list[subprocess.Popen] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


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
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fleet = Fleet(bin_dir, work, python)
    try:
        state = os.path.join(work, "state")
        os.makedirs(state)
        token_file = os.path.join(work, "token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("python-sdk-test-enrollment-token\n")
        tokens = {}
        for name, role in (("op", "operator"), ("view", "viewer")):
            out = subprocess.run([os.path.join(bin_dir, "fedge-coordinator"), "operators", "add",
                                  name, "--role", role, "--state-dir", state],
                                 check=True, capture_output=True, text=True)
            tokens[role] = out.stdout.strip()
        port = free_port_pair()
        addr, admin_addr = f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"
        coord = fleet.spawn("coordinator", [
            os.path.join(bin_dir, "fedge-coordinator"), "--listen", addr, "--admin-listen",
            admin_addr, "--state-dir", state, "--enrollment-token-file", token_file,
            "--insecure"])
        shards = os.path.join(work, "shards")
        subprocess.run([os.path.join(bin_dir, "partition_fmnist"), "--clients", "3", "--scheme",
                        "iid", "--seed", "0", "--train-examples", "3000", "--out", shards],
                       check=True, stdout=subprocess.DEVNULL)
        for i in range(2):
            fleet.spawn(f"client-{i}", [
                os.path.join(bin_dir, "fedge-client"), "--coordinator", addr, "--insecure",
                "--enrollment-token-file", token_file, "--shard",
                os.path.join(shards, f"client-0000{i}.shard"),
                "--state-dir", os.path.join(work, f"client-{i}")])
        saved = os.path.join(work, "tasks")
        os.makedirs(saved)
        py_state = os.path.join(work, "python-device.json")
        py = fleet.spawn("python-device", [
            python, EXAMPLE, "--coordinator", addr, "--insecure", "--enrollment-token-file",
            token_file, "--shard", os.path.join(shards, "client-00002.shard"), "--state-file",
            py_state, "--save-tasks", saved])

        admin = fedge.Admin(admin_addr, token=tokens["operator"], insecure=True)
        deadline = time.time() + 60
        while True:
            if coord.poll() is not None or py.poll() is not None:
                raise AssertionError("the coordinator or the Python device exited early; see "
                                     f"{work}/*.log")
            try:
                if len(admin.clients()) >= 3:
                    break
            except fedge.AdminError:
                pass
            if time.time() > deadline:
                raise AssertionError("3 devices did not register within 60 s")
            time.sleep(0.2)
        import json
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

        viewer = fedge.Admin(admin_addr, token=tokens["viewer"], insecure=True)
        check(viewer.get_job().state == job_pb2.JOB_STATE_FINISHED, "a viewer reads the job")
        try:
            viewer.stop_job(reason="viewer")
            raise AssertionError("a viewer stopped a job")
        except fedge.AdminError as e:
            check(e.code.name == "PERMISSION_DENIED", f"a viewer cannot stop a job ({e})")
        try:
            fedge.Admin(admin_addr, token="", insecure=True).get_job()
            raise AssertionError("GetJob without a token succeeded")
        except fedge.AdminError as e:
            check(e.code.name == "UNAUTHENTICATED", f"no token: {e.code.name}")
        print("sdk_fleet_test: PASS")
        return 0
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
