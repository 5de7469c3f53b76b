"""fedge.Admin: the operators' API (proto/admin.proto) from Python.

    admin = fedge.Admin("127.0.0.1:50052", token=open("operator-token").read().strip())
    job = admin.start_job(open("job.textproto").read())
    for event in admin.watch(job.job_id, replay_history=True):
        print(event)
    model = admin.export_model(job.job_id)   # ModelProto; fedge.model_weights(model)

The coordinator authenticates operators by a bearer token (`fedge-coordinator operators
add`), sent as `authorization: Bearer <token>` on every call, and/or by a client
certificate from its operator CA. Roles: a viewer may read (jobs, rounds, devices, watch);
an operator may also start and stop jobs and export models; an admin may also manage
enrollment tokens and revoke devices. A refused call raises AdminError with the code
(UNAUTHENTICATED, PERMISSION_DENIED, ...) and the coordinator's message.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Union

import grpc
import numpy as np

from fedge import codec
from fedge._channel import FedgeError, call, make_channel, rpc_error
from fedge.v1 import admin_pb2, admin_pb2_grpc, job_pb2, model_pb2

TERMINAL_STATES = (job_pb2.JOB_STATE_FINISHED, job_pb2.JOB_STATE_STOPPED, job_pb2.JOB_STATE_FAILED)


class AdminError(FedgeError):
    """An Admin call the coordinator refused (`code`: UNAUTHENTICATED, PERMISSION_DENIED, …)."""


def model_weights(model: model_pb2.ModelProto) -> Dict[str, np.ndarray]:
    """A model file's parameters as float32 arrays by name."""
    return {p.name: np.asarray(p.values, dtype=np.float32).reshape(tuple(p.shape))
            for p in model.parameters}


class Admin:
    """A connection to a coordinator's admin listener.

    token: the operator token (default: $FEDGE_OPERATOR_TOKEN). tls_ca, tls_cert, tls_key:
    PEM files, the coordinator's CA and the operator's certificate. insecure=True for the
    plaintext admin listener on loopback.
    """

    def __init__(self, target: Optional[str] = None, *, token: Optional[str] = None,
                 tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, insecure: bool = False,
                 rpc_timeout_s: float = 30.0):
        self.target = target or os.environ.get("FEDGE_COORDINATOR", "127.0.0.1:50052")
        token = token if token is not None else os.environ.get("FEDGE_OPERATOR_TOKEN", "")
        self._timeout = rpc_timeout_s
        self._channel = make_channel(self.target, tls_ca=tls_ca, tls_cert=tls_cert,
                                     tls_key=tls_key, insecure=insecure,
                                     bearer_token=token.strip() or None)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, what: str, fn, request):
        return call(AdminError, what, fn, request, self._timeout)

    # ---- jobs ----

    def start_job(self, config: Union[str, job_pb2.JobConfig], *,
                  dry_run: bool = False) -> admin_pb2.StartJobResponse:
        """Starts a job from a JobConfig or its text format (parsed by the coordinator, whose
        errors give line and column). dry_run only validates and fills defaults."""
        req = admin_pb2.StartJobRequest(dry_run=dry_run)
        if isinstance(config, str):
            req.config_text = config
        else:
            req.config.CopyFrom(config)
        return self._call("StartJob", self._stub.StartJob, req)

    def stop_job(self, job_id: str = "", reason: str = "") -> job_pb2.JobStatus:
        return self._call("StopJob", self._stub.StopJob,
                          admin_pb2.StopJobRequest(job_id=job_id, reason=reason)).status

    def get_job(self, job_id: str = "") -> job_pb2.JobStatus:
        return self._call("GetJob", self._stub.GetJob, admin_pb2.GetJobRequest(job_id=job_id))

    def rounds(self, job_id: str = "", from_round: int = 0,
               limit: int = 0) -> List[job_pb2.RoundRecord]:
        resp = self._call("ListRounds", self._stub.ListRounds, admin_pb2.ListRoundsRequest(
            job_id=job_id, from_round=from_round, limit=limit))
        return list(resp.rounds)

    def clients(self, include_inactive: bool = False,
                limit: int = 0) -> List[job_pb2.ClientRecord]:
        resp = self._call("ListClients", self._stub.ListClients, admin_pb2.ListClientsRequest(
            include_inactive=include_inactive, limit=limit))
        return list(resp.clients)

    def watch(self, job_id: str = "", *, replay_history: bool = False,
              timeout_s: Optional[float] = None) -> Iterator[admin_pb2.JobEvent]:
        """The job's events (round opened, round closed, state changed) as they happen, until
        the job ends. replay_history first yields a round_closed event per completed round."""
        req = admin_pb2.WatchJobRequest(job_id=job_id, replay_history=replay_history)
        try:
            for event in self._stub.WatchJob(req, timeout=timeout_s):
                yield event
                if (event.WhichOneof("kind") == "job_changed"
                        and event.job_changed.state in TERMINAL_STATES):
                    return
        except grpc.RpcError as e:
            raise rpc_error(AdminError, "WatchJob", e) from e

    def wait(self, job_id: str = "", timeout_s: Optional[float] = None) -> job_pb2.JobStatus:
        """Follows the job to its end; returns its final status."""
        for _ in self.watch(job_id, timeout_s=timeout_s):
            pass
        return self.get_job(job_id)

    # ---- models ----

    def export_model_bytes(self, job_id: str = "", round: int = 0,
                           max_bytes: int = 4 << 30) -> bytes:
        """A checkpointed round's model file (a binary ModelProto); round 0: the latest."""
        req = admin_pb2.ExportModelRequest(job_id=job_id, round=round)
        assembler = None
        try:
            for msg in self._stub.ExportModel(req, timeout=self._timeout * 10):
                kind = msg.WhichOneof("kind")
                if kind == "header":
                    assembler = codec.Assembler(msg.header.total_bytes, max_bytes)
                elif kind == "data" and assembler is not None:
                    assembler.add(msg.data)
                elif kind == "trailer" and assembler is not None:
                    return assembler.finish(msg.trailer)
                else:
                    raise AdminError(f"ExportModel: a {kind} message out of order")
        except grpc.RpcError as e:
            raise rpc_error(AdminError, "ExportModel", e) from e
        except codec.PayloadError as e:
            raise AdminError(f"ExportModel: {e}") from e
        raise AdminError("ExportModel: the stream ended without its trailer")

    def export_model(self, job_id: str = "", round: int = 0) -> model_pb2.ModelProto:
        return model_pb2.ModelProto.FromString(self.export_model_bytes(job_id, round))

    # ---- enrollment and devices (admin role) ----

    def create_enrollment_token(self, name: str, max_uses: int = 0,
                                expires_in_seconds: int = 0
                                ) -> admin_pb2.CreateEnrollmentTokenResponse:
        return self._call("CreateEnrollmentToken", self._stub.CreateEnrollmentToken,
                          admin_pb2.CreateEnrollmentTokenRequest(
                              name=name, max_uses=max_uses,
                              expires_in_seconds=expires_in_seconds))

    def revoke_device(self, client_id: str, reason: str = "") -> job_pb2.ClientRecord:
        return self._call("RevokeDevice", self._stub.RevokeDevice,
                          admin_pb2.RevokeDeviceRequest(client_id=client_id,
                                                        reason=reason)).record
