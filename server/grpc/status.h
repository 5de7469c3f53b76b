// The one adapter between absl::Status and grpc::Status on the coordinator side.
//
// absl::StatusCode and grpc::StatusCode are both the canonical codes of
// google.rpc.Code (OK = 0 … UNAUTHENTICATED = 16) with the same numbers, so the code maps
// one to one and the message is kept. Codes outside 0..16 become UNKNOWN.
//
// Why here and not in base/: base/ never sees gRPC headers, and client/grpc/ may not
// include server/. The device runtime (client/grpc/) keeps its own equally small
// conversion; both rely only on the shared numbering of the canonical codes.
#ifndef FEDGE_SERVER_GRPC_STATUS_H_
#define FEDGE_SERVER_GRPC_STATUS_H_

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace fedge::server::grpc_adapter {

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(s.code());
  return grpc::Status(code >= 1 && code <= 16 ? static_cast<grpc::StatusCode>(code)
                                              : grpc::StatusCode::UNKNOWN,
                      std::string(s.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  const int code = static_cast<int>(s.error_code());
  return absl::Status(code >= 1 && code <= 16 ? static_cast<absl::StatusCode>(code)
                                              : absl::StatusCode::kUnknown,
                      s.error_message());
}

}  // namespace fedge::server::grpc_adapter

#endif  // FEDGE_SERVER_GRPC_STATUS_H_
