"""fedge.Device: a device of a fedge fleet, in Python.

It speaks the Coordinator service of proto/coordinator.proto as docs/protocol.md describes:
it registers with the deployment's enrollment token (and keeps its id and device key in a
state file), long-polls for tasks, decodes a task's weights into numpy arrays, calls your
training function, and uploads Δ = w_local − w_received in chunks, resuming an interrupted
upload. While your function trains it keeps the device live (a light UploadStatus call
every quarter of the liveness timeout), so a long local epoch does not get it dropped.

    def train(task: fedge.Task) -> fedge.Update | fedge.Decline:
        w = {k: v.copy() for k, v in task.weights.items()}
        ...  # SGD on local data
        return fedge.Update(weights=w, num_examples=n, train_loss=loss)

    device = fedge.Device("coord:50051", enrollment_token=token, num_examples=n,
                          state_file="device.json", tls_ca="ca.pem")
    device.run(train)

Secure-aggregation and FedCG tasks are declined with a reason (not implemented here).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Union

import grpc
import numpy as np

from fedge import codec
from fedge._channel import FedgeError, call, make_channel, rpc_error
from fedge.v1 import coordinator_pb2, coordinator_pb2_grpc, job_pb2, model_pb2, transfer_pb2

log = logging.getLogger("fedge.device")

__version__ = "0.1.0"
MAX_REFUSAL_BYTES = 256


class DeviceError(FedgeError):
    """A call the coordinator refused, or a protocol fault; `code` is the gRPC status code
    when the coordinator answered."""


@dataclass
class Task:
    """One round's work: the header as sent, and the decoded float32 weights by name (in the
    manifest's order). `teacher` holds the distillation teacher's weights when the task has
    one (`header.teacher_spec`)."""

    header: coordinator_pb2.TaskHeader
    weights: Dict[str, np.ndarray]
    teacher: Optional[Dict[str, np.ndarray]] = None
    received_at: float = field(default_factory=time.time)

    @property
    def job_id(self) -> str:
        return self.header.job_id

    @property
    def round(self) -> int:
        return self.header.round

    @property
    def spec(self) -> model_pb2.ModelSpec:
        return self.header.model_spec

    @property
    def training(self) -> job_pb2.LocalTraining:
        return self.header.training

    def seconds_left(self) -> float:
        """Seconds to the round's deadline by this machine's clock (inf without one)."""
        if self.header.deadline_unix_ms <= 0:
            return float("inf")
        return self.header.deadline_unix_ms / 1000.0 - time.time()


@dataclass
class Update:
    """What training produced. Give either `delta` (Δ by tensor name) or `weights` (the
    trained weights; Δ is taken against the task's). `num_examples` is this round's n_k:
    at least 1 and at most the examples the device registered with."""

    num_examples: int
    delta: Optional[Dict[str, np.ndarray]] = None
    weights: Optional[Dict[str, np.ndarray]] = None
    train_loss: float = 0.0
    train_accuracy: float = 0.0
    steps: int = 0
    train_seconds: Optional[float] = None  # None: measured around the training function


@dataclass
class Decline:
    """Declines the task (at most 256 bytes of reason); the coordinator does not sample the
    device again in this job until it registers again."""

    reason: str


TrainFn = Callable[[Task], Union[Update, Decline]]


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Device:
    """A device: register, fetch tasks, upload updates, leave.

    target: the coordinator's device address (host:port). enrollment_token: the
    deployment's token (needed to register). num_examples: the local training examples the
    device holds (the coordinator caps every update's n_k at it). state_file: where the id
    and device key are kept (JSON, mode 0600) so that a restarted device keeps its id.
    tls_ca / tls_cert / tls_key: PEM files (server CA; the device's certificate for mutual
    TLS); insecure=True for a plaintext channel (loopback tests only).
    """

    def __init__(self, target: str, enrollment_token: str, num_examples: int, *,
                 state_file: Optional[str] = None, memory_budget_bytes: int = 0,
                 compute_class: int = job_pb2.COMPUTE_CLASS_UNSPECIFIED,
                 platform_name: Optional[str] = None, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 insecure: bool = False, max_task_bytes: int = 1 << 30,
                 rpc_timeout_s: float = 30.0):
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples}")
        self.target = target
        self._token = enrollment_token
        self._profile = job_pb2.DeviceProfile(
            memory_budget_bytes=memory_budget_bytes, compute_class=compute_class,
            num_examples=num_examples,
            platform=platform_name or f"python-{platform.system().lower()}-{platform.machine()}",
            client_version=f"fedge-python {__version__}")
        self._state_file = state_file
        self._max_task_bytes = max_task_bytes
        self._timeout = rpc_timeout_s
        self._channel = make_channel(target, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                     insecure=insecure)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self.client_id = ""
        self._session = ""
        self._device_key = ""
        self.chunk_bytes = codec.MAX_CHUNK_BYTES
        self.liveness_timeout_s = 60.0
        self.rng = np.random.default_rng()
        self.retry_after_s = 0.0
        self.no_job = False
        self._load_state()

    # ---- lifecycle ----

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load_state(self) -> None:
        if not self._state_file or not os.path.exists(self._state_file):
            return
        try:
            with open(self._state_file) as f:
                state = json.load(f)
            self.client_id = str(state.get("client_id", ""))
            self._device_key = str(state.get("device_key", ""))
        except (OSError, ValueError) as e:
            raise DeviceError(f"device state file {self._state_file}: {e}") from e

    def _save_state(self) -> None:
        if not self._state_file:
            return
        tmp = self._state_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"client_id": self.client_id, "device_key": self._device_key}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file)

    def _call(self, what: str, fn, request, timeout: Optional[float] = None):
        return call(DeviceError, what, fn, request, timeout or self._timeout)

    def register(self) -> str:
        """Enrolls the device (or re-enrolls it under its kept id); returns the client id."""
        req = coordinator_pb2.RegisterRequest(enrollment_token=self._token, profile=self._profile,
                                              previous_client_id=self.client_id,
                                              device_key=self._device_key)
        resp = self._call("Register", self._stub.Register, req)
        if self.client_id and resp.client_id != self.client_id:
            log.warning("registered as a new device %s (the coordinator did not grant %s)",
                        resp.client_id, self.client_id)
        self.client_id = resp.client_id
        self._session = resp.session_token
        if resp.device_key:
            self._device_key = resp.device_key
        self.chunk_bytes = max(1, min(resp.chunk_bytes or codec.MAX_CHUNK_BYTES,
                                      codec.MAX_CHUNK_BYTES))
        if resp.max_message_bytes > 0:
            self.chunk_bytes = min(self.chunk_bytes, max(1, resp.max_message_bytes // 2))
        self.liveness_timeout_s = max(1.0, resp.liveness_timeout_ms / 1000.0)
        self._save_state()
        log.info("registered as %s (liveness timeout %.0f s)", self.client_id,
                 self.liveness_timeout_s)
        return self.client_id

    def leave(self, reason: str = "") -> None:
        """Leaves the fleet: the device is no longer sampled and its session ends."""
        if not self._session:
            return
        self._call("Leave", self._stub.Leave, coordinator_pb2.LeaveRequest(
            client_id=self.client_id, session_token=self._session, reason=reason[:256]))
        self._session = ""

    # ---- tasks ----

    def fetch_task(self, wait_seconds: int = 20) -> Optional[Task]:
        """Long-polls for a task: a decoded Task, or None when the coordinator had nothing
        within wait_seconds (`self.retry_after_s` then says when to ask again and
        `self.no_job` whether any job runs)."""
        req = coordinator_pb2.FetchTaskRequest(client_id=self.client_id,
                                               session_token=self._session,
                                               wait_seconds=wait_seconds)
        self.retry_after_s = 0.0
        self.no_job = False
        header = None
        assembler = None
        payload = None
        try:
            for msg in self._stub.FetchTask(req, timeout=wait_seconds + self._timeout):
                kind = msg.WhichOneof("kind")
                if kind == "idle":
                    self.retry_after_s = msg.idle.retry_after_ms / 1000.0
                    self.no_job = msg.idle.no_job
                    return None
                if kind == "header":
                    header = msg.header
                    assembler = codec.Assembler(header.total_bytes, self._max_task_bytes)
                elif kind == "data" and assembler is not None:
                    assembler.add(msg.data)
                elif kind == "trailer" and assembler is not None:
                    payload = assembler.finish(msg.trailer)
                else:
                    raise DeviceError(f"FetchTask: a {kind} message out of order")
        except grpc.RpcError as e:
            raise rpc_error(DeviceError, "FetchTask", e) from e
        except codec.PayloadError as e:
            raise DeviceError(f"FetchTask: the task payload is malformed: {e}") from e
        if header is None or payload is None:
            raise DeviceError("FetchTask: the stream ended without a whole task")
        return self._decode_task(header, payload)

    def _decode_task(self, header: coordinator_pb2.TaskHeader, payload: bytes) -> Task:
        try:
            model_bytes = codec.section_bytes(header.manifest)
            weights = codec.decode_section(header.manifest, payload[:model_bytes])
            teacher = None
            if header.HasField("teacher_spec") and header.teacher_spec.layers:
                teacher = codec.decode_section(header.teacher_manifest, payload[model_bytes:])
            elif model_bytes != len(payload):
                raise codec.PayloadError(f"{len(payload)} bytes for a {model_bytes}-byte model")
        except codec.PayloadError as e:
            raise DeviceError(f"task {header.task_id}: {e}") from e
        return Task(header=header, weights=weights, teacher=teacher)

    # ---- updates ----

    def decline(self, task: Task, reason: str) -> None:
        """Declines a task with a reason (e.g. it does not fit the device)."""
        data = reason.encode()[:MAX_REFUSAL_BYTES].decode("utf-8", "ignore") or "declined"
        header = self._update_header(task)
        header.refusal = data
        self._upload_stream(task, header, b"", 0)
        log.info("round %d: declined: %s", task.round, data)

    def _update_header(self, task: Task) -> coordinator_pb2.UpdateHeader:
        return coordinator_pb2.UpdateHeader(client_id=self.client_id,
                                            session_token=self._session, job_id=task.job_id,
                                            round=task.round, task_id=task.header.task_id)

    def upload(self, task: Task, update: Update, *, attempts: int = 5) -> int:
        """Encodes and uploads an update in the task's update encoding, clipped to the task's
        clip norm when it has one; resumes an interrupted stream. Returns the payload bytes."""
        h = task.header
        if h.secure_aggregation.num_participants > 0:
            raise DeviceError("secure aggregation is not implemented by the fedge Python SDK")
        delta = self._delta(task, update)
        norm = float(np.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64)))
                                 for d in delta.values())))
        clip = h.privacy.clip_norm
        if clip > 0 and norm > clip:
            scale = clip / norm
            delta = {k: (v * scale).astype(np.float32) for k, v in delta.items()}
        encoding = h.update_encoding or codec.FLOAT32
        manifest, payload = codec.encode_update(h.manifest, delta, encoding, self.rng)
        # Stochastic rounding moves each value by up to a step, which can carry an update
        # clipped to C past C, and the coordinator refuses an update over its clip norm: shrink
        # by the excess until what is sent fits.
        for _ in range(16 if clip > 0 and encoding == codec.INT8_STOCHASTIC_CHUNKED else 0):
            sent = codec.decode_section(manifest, payload, codec.UPDATE_ENCODINGS)
            sent_norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64)))
                                          for v in sent.values())))
            if sent_norm <= clip:
                break
            factor = np.float32(clip / sent_norm * (1 - 1e-4))
            delta = {k: (v * factor).astype(np.float32) for k, v in delta.items()}
            manifest, payload = codec.encode_update(h.manifest, delta, encoding, self.rng)
        header = self._update_header(task)
        header.manifest.CopyFrom(manifest)
        header.total_bytes = len(payload)
        header.num_examples = int(update.num_examples)
        m = header.metrics
        m.train_loss = float(update.train_loss)
        m.train_accuracy = float(update.train_accuracy)
        m.steps = int(update.steps)
        m.train_seconds = float(update.train_seconds or 0.0)
        m.peak_rss_bytes = _peak_rss_bytes()
        m.update_norm = norm
        offset = 0
        for attempt in range(attempts):
            try:
                self._upload_stream(task, header, payload, offset)
                return len(payload)
            except DeviceError as e:
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED) or attempt + 1 == attempts:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 5.0))
                offset = self.upload_status(task)
                log.warning("round %d: upload interrupted (%s); resuming at byte %d",
                            task.round, e, offset)
        return len(payload)

    def _delta(self, task: Task, update: Update) -> Dict[str, np.ndarray]:
        if (update.delta is None) == (update.weights is None):
            raise ValueError("an Update gives exactly one of delta and weights")
        if update.delta is not None:
            return {k: np.asarray(v, dtype=np.float32) for k, v in update.delta.items()}
        out = {}
        for name, w0 in task.weights.items():
            if name not in update.weights:
                raise ValueError(f"Update.weights lacks tensor {name}")
            out[name] = (np.asarray(update.weights[name], dtype=np.float32) - w0).astype(np.float32)
        extra = sorted(set(update.weights) - set(task.weights))
        if extra:
            raise ValueError(f"Update.weights holds tensors the task does not: {extra}")
        return out

    def _upload_stream(self, task: Task, header: coordinator_pb2.UpdateHeader, payload: bytes,
                       offset: int) -> None:
        header = coordinator_pb2.UpdateHeader.FromString(header.SerializeToString())
        header.resume_offset = offset

        def messages() -> Iterator[coordinator_pb2.UpdateChunk]:
            yield coordinator_pb2.UpdateChunk(header=header)
            if header.refusal:
                return
            for c in codec.chunks(payload, self.chunk_bytes, offset):
                yield coordinator_pb2.UpdateChunk(data=c)
            yield coordinator_pb2.UpdateChunk(
                trailer=transfer_pb2.PayloadTrailer(crc32=codec.crc32(payload)))

        self._call("UploadUpdate", self._stub.UploadUpdate, messages(),
                   timeout=self._timeout + len(payload) / 1e6)

    def upload_status(self, task: Task) -> int:
        """Bytes of an interrupted upload of the task the coordinator kept (0: none). Also
        marks the device live: run() calls it as a heartbeat while training."""
        resp = self._call("UploadStatus", self._stub.UploadStatus,
                          coordinator_pb2.UploadStatusRequest(
                              client_id=self.client_id, session_token=self._session,
                              task_id=task.header.task_id))
        return int(resp.bytes_received)

    # ---- the loop ----

    def _unsupported(self, task: Task) -> Optional[str]:
        h = task.header
        if h.secure_aggregation.num_participants > 0:
            return "secure aggregation is not implemented by the fedge Python SDK"
        if h.HasField("fed_cg"):
            return "FedCG tasks are not implemented by the fedge Python SDK"
        return None

    def train_with_heartbeat(self, task: Task, train: TrainFn) -> Union[Update, Decline]:
        """Calls train(task) while a thread keeps the device live."""
        stop = threading.Event()
        period = max(0.5, self.liveness_timeout_s / 4)

        def beat() -> None:
            while not stop.wait(period):
                try:
                    self.upload_status(task)
                except DeviceError as e:
                    log.warning("heartbeat: %s", e)

        t = threading.Thread(target=beat, name="fedge-heartbeat", daemon=True)
        t.start()
        try:
            return train(task)
        finally:
            stop.set()
            t.join()

    def run_once(self, train: TrainFn, wait_seconds: int = 20) -> Optional[int]:
        """Fetches one task and answers it: the round it answered, or None when idle."""
        task = self.fetch_task(wait_seconds)
        if task is None:
            return None
        why = self._unsupported(task)
        if why is not None:
            self.decline(task, why)
            return task.round
        start = time.monotonic()
        result = self.train_with_heartbeat(task, train)
        if isinstance(result, Decline):
            self.decline(task, result.reason)
            return task.round
        if not isinstance(result, Update):
            raise TypeError(f"the training function returned {type(result).__name__}, "
                            "not fedge.Update or fedge.Decline")
        if result.train_seconds is None:
            result.train_seconds = time.monotonic() - start
        if task.seconds_left() < 0:
            log.warning("round %d: the deadline passed during training; update dropped",
                        task.round)
            return task.round
        sent = self.upload(task, result)
        log.info("round %d: uploaded %d bytes (%d examples, loss %.4f)", task.round, sent,
                 result.num_examples, result.train_loss)
        return task.round

    def run(self, train: TrainFn, *, stop: Optional[threading.Event] = None,
            max_tasks: Optional[int] = None, exit_when_no_job: bool = False,
            wait_seconds: int = 20) -> int:
        """Registers (when not registered) and answers tasks until `stop` is set, max_tasks
        were answered, or (exit_when_no_job) the coordinator says no job is running or
        expected. Re-registers when the session is lost; backs off on transport errors.
        Returns the number of tasks answered."""
        stop = stop or threading.Event()
        answered = 0
        backoff = 0.5
        while not stop.is_set() and (max_tasks is None or answered < max_tasks):
            if not self._session:
                try:
                    self.register()
                except DeviceError as e:
                    if e.code not in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED,
                                      grpc.StatusCode.RESOURCE_EXHAUSTED):
                        raise  # a wrong token, a revoked id: retrying cannot help
                    log.warning("%s; retrying in %.1f s", e, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
            try:
                r = self.run_once(train, wait_seconds)
                backoff = 0.5
                if r is not None:
                    answered += 1
                elif exit_when_no_job and self.no_job:
                    break
                elif self.retry_after_s > 0:
                    stop.wait(min(self.retry_after_s, 5.0))
            except DeviceError as e:
                if e.code == grpc.StatusCode.UNAUTHENTICATED:
                    log.warning("session lost (%s); registering again", e)
                    self._session = ""
                elif e.code in (grpc.StatusCode.FAILED_PRECONDITION,
                                grpc.StatusCode.ALREADY_EXISTS,
                                grpc.StatusCode.INVALID_ARGUMENT):
                    log.warning("%s", e)  # this task is over for the device; the next one
                elif e.code == grpc.StatusCode.PERMISSION_DENIED:
                    raise
                else:
                    log.warning("%s; retrying in %.1f s", e, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        return answered
