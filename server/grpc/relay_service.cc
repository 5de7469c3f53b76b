#include "server/grpc/relay_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "server/grpc/admin_service.h"
#include "server/grpc/status.h"

namespace fedge::server {
namespace {

using grpc_adapter::ToGrpcStatus;

}  // namespace

RelayServiceImpl::RelayServiceImpl(Coordinator* coordinator, ServiceLimits limits,
                                   AdminAccess access)
    : coordinator_(coordinator),
      limits_(limits),
      api_(coordinator, nullptr, AdminLimitsOf(limits), access) {}

absl::StatusOr<std::string> RelayServiceImpl::Relay(grpc::ServerContext* context,
                                                    absl::string_view call,
                                                    absl::string_view claimed) {
  absl::string_view authorization;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  FEDGE_ASSIGN_OR_RETURN(Operator op,
                         api_.Authenticate(authorization, context->peer(), OperatorRole::kRelay, call));
  if (!CheckRelayId(op.name).ok()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "Relay: the relay token '", op.name,
        "' is not named as a relay id (1-64 characters from [A-Za-z0-9_.-])"));
  }
  if (!claimed.empty() && claimed != op.name) {
    return absl::PermissionDeniedError(absl::StrCat("Relay: relay ", op.name,
                                                    " cannot speak for relay ",
                                                    claimed.substr(0, 64)));
  }
  return op.name;
}

class RelayServiceImpl::InFlight {
 public:
  InFlight(absl::Mutex* mu, absl::flat_hash_set<std::string>* set, std::string relay)
      : mu_(mu), set_(set), relay_(std::move(relay)) {}
  InFlight(InFlight&& o) noexcept : mu_(o.mu_), set_(o.set_), relay_(std::move(o.relay_)) {
    o.set_ = nullptr;
  }
  InFlight(const InFlight&) = delete;
  ~InFlight() {
    if (set_ == nullptr) return;
    absl::MutexLock lock(mu_);
    set_->erase(relay_);
  }

 private:
  absl::Mutex* mu_;
  absl::flat_hash_set<std::string>* set_;
  std::string relay_;
};

absl::StatusOr<RelayServiceImpl::InFlight> RelayServiceImpl::Claim(
    absl::flat_hash_set<std::string>& set, const std::string& relay, absl::string_view what) {
  absl::MutexLock lock(&mu_);
  if (!set.insert(relay).second) {
    return absl::ResourceExhaustedError(
        absl::StrCat("Relay: relay ", relay, " has ", what, " in flight already"));
  }
  return InFlight(&mu_, &set, relay);
}

grpc::Status RelayServiceImpl::RegisterDevice(grpc::ServerContext* context,
                                              const v1::RegisterRequest* request,
                                              v1::RegisterResponse* response) {
  absl::StatusOr<std::string> relay = Relay(context, "RegisterDevice");
  if (!relay.ok()) return ToGrpcStatus(relay.status());
  const size_t max = limits_.max_string_bytes;
  if (request->enrollment_token().size() > max || request->previous_client_id().size() > max ||
      request->device_key().size() > max) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("Relay: a registration's strings must be at most ", max, " bytes")));
  }
  absl::StatusOr<v1::RegisterResponse> r = coordinator_->RegisterThroughRelay(*relay, *request);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status RelayServiceImpl::Sync(grpc::ServerContext* context,
                                    const v1::RelaySyncRequest* request,
                                    v1::RelayAssignment* response) {
  absl::StatusOr<std::string> relay = Relay(context, "Sync", request->relay_id());
  if (!relay.ok()) return ToGrpcStatus(relay.status());
  for (const std::string& id : request->live_clients()) {
    if (id.size() > 128) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "Relay: a device id in a sync is over 128 bytes"));
    }
  }
  v1::RelaySyncRequest named = *request;
  named.set_relay_id(*relay);
  absl::StatusOr<v1::RelayAssignment> a = coordinator_->RelaySync(named);
  if (!a.ok()) return ToGrpcStatus(a.status());
  *response = *std::move(a);
  return grpc::Status::OK;
}

grpc::Status RelayServiceImpl::FetchModel(grpc::ServerContext* context,
                                          const v1::RelayModelRequest* request,
                                          grpc::ServerWriter<v1::RelayModelChunk>* writer) {
  absl::StatusOr<std::string> relay = Relay(context, "FetchModel");
  if (!relay.ok()) return ToGrpcStatus(relay.status());
  if (request->job_id().size() > limits_.max_string_bytes) {
    return ToGrpcStatus(absl::InvalidArgumentError("Relay: job id too long"));
  }
  absl::StatusOr<InFlight> busy = Claim(downloading_, *relay, "a model download");
  if (!busy.ok()) return ToGrpcStatus(busy.status());
  absl::StatusOr<SerializedModel> m = Model(request->job_id());
  if (!m.ok()) return ToGrpcStatus(m.status());
  const std::string& bytes = *m->bytes;
  v1::RelayModelChunk head;
  head.mutable_header()->set_job_id(request->job_id());
  head.mutable_header()->set_version(m->version);
  head.mutable_header()->set_total_bytes(static_cast<int64_t>(bytes.size()));
  if (!writer->Write(head)) return grpc::Status(grpc::StatusCode::CANCELLED, "Relay: relay gone");
  const bool sent = model::ForEachChunk(bytes, limits_.chunk_bytes, [&](const v1::DataChunk& c) {
    v1::RelayModelChunk chunk;
    *chunk.mutable_data() = c;
    return !context->IsCancelled() && writer->Write(chunk);
  });
  if (!sent) return grpc::Status(grpc::StatusCode::CANCELLED, "Relay: relay gone");
  v1::RelayModelChunk tail;
  *tail.mutable_trailer() = model::MakeTrailer(bytes);
  writer->Write(tail);
  return grpc::Status::OK;
}

absl::StatusOr<RelayServiceImpl::SerializedModel> RelayServiceImpl::Model(
    const std::string& job_id) {
  FEDGE_ASSIGN_OR_RETURN(const int64_t version, coordinator_->RelayModelVersion(job_id));
  absl::MutexLock lock(&model_mu_);
  if (model_.job_id == job_id && model_.version == version) return model_;
  FEDGE_ASSIGN_OR_RETURN(Coordinator::VersionedModel m, coordinator_->RelayModel(job_id));
  model_.job_id = job_id;
  model_.version = m.version;
  model_.bytes = std::make_shared<const std::string>(m.model.SerializeAsString());
  return model_;
}

grpc::Status RelayServiceImpl::UploadPartial(grpc::ServerContext* context,
                                             grpc::ServerReader<v1::PartialChunk>* reader,
                                             v1::PartialResponse* /*response*/) {
  // Authenticated before a message is read.
  absl::StatusOr<std::string> relay = Relay(context, "UploadPartial");
  if (!relay.ok()) return ToGrpcStatus(relay.status());
  v1::PartialChunk chunk;
  if (!reader->Read(&chunk) || !chunk.has_header()) {
    return ToGrpcStatus(absl::InvalidArgumentError("Relay: a part starts with its header"));
  }
  v1::PartialHeader header = std::move(*chunk.mutable_header());
  if (!header.relay_id().empty() && header.relay_id() != *relay) {
    return ToGrpcStatus(absl::PermissionDeniedError(absl::StrCat(
        "Relay: relay ", *relay, " cannot speak for relay ", header.relay_id().substr(0, 64))));
  }
  header.set_relay_id(*relay);
  if (header.job_id().size() > limits_.max_string_bytes) {
    return ToGrpcStatus(absl::InvalidArgumentError("Relay: job id too long"));
  }
  absl::StatusOr<InFlight> busy = Claim(uploading_, *relay, "a part upload");
  if (!busy.ok()) return ToGrpcStatus(busy.status());
  const int64_t limit = std::min(kMaxPartialBytes, coordinator_->RelayPartLimit());
  if (header.total_bytes() > limit) {
    return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
        "Relay: a part of ", header.total_bytes(), " bytes; the running job's take at most ",
        limit)));
  }
  absl::StatusOr<model::PayloadAssembler> assembler =
      model::PayloadAssembler::Create(header.total_bytes(), limit);
  if (!assembler.ok()) return ToGrpcStatus(assembler.status());
  while (reader->Read(&chunk)) {
    if (chunk.has_data()) {
      if (absl::Status s = assembler->Add(chunk.data()); !s.ok()) return ToGrpcStatus(s);
      continue;
    }
    if (!chunk.has_trailer()) {
      return ToGrpcStatus(absl::InvalidArgumentError("Relay: a second header in one part"));
    }
    absl::StatusOr<std::string> aggregate = assembler->Finish(chunk.trailer());
    if (!aggregate.ok()) return ToGrpcStatus(aggregate.status());
    return ToGrpcStatus(coordinator_->SubmitPartial(header, *aggregate));
  }
  return ToGrpcStatus(absl::DataLossError("Relay: the part ended before its trailer"));
}

}  // namespace fedge::server
