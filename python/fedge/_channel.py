"""gRPC channels to a coordinator: TLS (a CA, optionally a client certificate for mutual
TLS) or, explicitly, plaintext."""

from __future__ import annotations

from typing import Optional, Type

import grpc


class FedgeError(RuntimeError):
    """A call the coordinator refused, or a protocol fault; `code` is the gRPC status code
    when the coordinator answered."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(message)
        self.code = code


def rpc_error(cls: Type[FedgeError], what: str, e: grpc.RpcError) -> FedgeError:
    """`cls` for a failed call, naming the call, the code and the coordinator's message."""
    return cls(f"{what}: {e.code().name}: {e.details()}", e.code())


def call(cls: Type[FedgeError], what: str, fn, request, timeout: float, **kw):
    """fn(request) with a timeout; a gRPC error raised as `cls` (rpc_error)."""
    try:
        return fn(request, timeout=timeout, **kw)
    except grpc.RpcError as e:
        raise rpc_error(cls, what, e) from e

# Payloads travel in chunks of at most 1 MiB; leave room for the largest messages.
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]


def _read(path: Optional[str], what: str) -> Optional[bytes]:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what} {path}: {e.strerror}") from e


def make_channel(target: str, *, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, insecure: bool = False,
                 bearer_token: Optional[str] = None) -> grpc.Channel:
    """A channel; with bearer_token every call carries `authorization: Bearer <token>`."""
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("give both tls_cert and tls_key, or neither")
    if insecure:
        if tls_ca or tls_cert:
            raise ValueError("insecure=True takes no TLS files")
        if bearer_token:
            # A token over plaintext: the coordinator serves a plaintext admin listener to
            # loopback peers only (grpc refuses call credentials on insecure channels).
            return grpc.intercept_channel(grpc.insecure_channel(target, options=_OPTIONS),
                                          _MetadataInterceptor(bearer_token))
        return grpc.insecure_channel(target, options=_OPTIONS)
    creds = grpc.ssl_channel_credentials(root_certificates=_read(tls_ca, "tls_ca"),
                                         private_key=_read(tls_key, "tls_key"),
                                         certificate_chain=_read(tls_cert, "tls_cert"))
    if bearer_token:
        creds = grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(bearer_token))
    return grpc.secure_channel(target, creds, options=_OPTIONS)


class _MetadataInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the bearer token's metadata to every call of a plaintext channel."""

    def __init__(self, token: str):
        self._metadata = [("authorization", f"Bearer {token}")]

    def _add(self, details):
        md = list(details.metadata or []) + list(self._metadata)
        return _Details(details.method, details.timeout, md, details.credentials,
                        details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._add(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._add(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression
