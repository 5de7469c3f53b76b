#include "server/grpc/relay_link.h"

#include <grpcpp/create_channel.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "server/grpc/status.h"

namespace fedge::server {
namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// A transfer that may go through when tried again (the root or the network was away).
bool Transient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsDataLoss(s) ||
         absl::IsResourceExhausted(s) || absl::IsCancelled(s) || absl::IsUnknown(s);
}

}  // namespace

RelayLink::RelayLink(RelayLinkOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  const int max_message = static_cast<int>(std::min<int64_t>(options_.max_message_bytes, 1 << 30));
  args.SetMaxReceiveMessageSize(max_message);
  args.SetMaxSendMessageSize(max_message);
  channel_ = grpc::CreateCustomChannel(options_.upstream, options_.credentials, args);
  stub_ = v1::Relay::NewStub(channel_);
}

RelayLink::~RelayLink() { Stop(); }

std::unique_ptr<grpc::ClientContext> RelayLink::Context() const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", absl::StrCat("Bearer ", options_.token));
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.call_timeout)));
  return context;
}

absl::StatusOr<v1::RegisterResponse> RelayLink::RegisterDevice(const v1::RegisterRequest& request) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  v1::RegisterResponse response;
  grpc::Status s = stub_->RegisterDevice(context.get(), request, &response);
  if (!s.ok()) {
    // The root's refusal goes to the device as it is (its code and message); a root that
    // cannot be reached is UNAVAILABLE to the device, which retries.
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  return response;
}

absl::StatusOr<std::string> RelayLink::Check() {
  std::unique_ptr<grpc::ClientContext> context = Context();
  v1::RelayAssignment assignment;
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub_->Sync(context.get(), v1::RelaySyncRequest(), &assignment),
                                 absl::StrCat("relay: the root at ", options_.upstream)));
  return assignment.relay_id();
}

void RelayLink::Start(Coordinator* relay) {
  relay_ = relay;
  loop_ = std::thread([this] {
    do {
      Turn();
    } while (!stop_.WaitForNotificationWithTimeout(options_.sync_interval));
  });
}

void RelayLink::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (loop_.joinable()) loop_.join();
}

void RelayLink::Turn() {
  SendPending();
  absl::Status synced = SyncAndFollow();
  if (!synced.ok()) {
    if (std::string(synced.message()) != last_error_) {
      FEDGE_LOG(WARNING) << "relay: " << synced.message() << " (will retry)";
    }
    last_error_ = std::string(synced.message());
  } else if (!last_error_.empty()) {
    FEDGE_LOG(INFO) << "relay: in step with the root at " << options_.upstream << " again";
    last_error_.clear();
  }
  if (absl::Status ticked = relay_->Tick(); !ticked.ok()) {
    FEDGE_LOG(ERROR) << "relay: " << ticked.message();
  }
  if (std::optional<Coordinator::Partial> part = relay_->TakePartial(); part.has_value()) {
    pending_ = std::move(part);
    SendPending();
  }
}

absl::Status RelayLink::SyncAndFollow() {
  const absl::Time started = absl::Now();
  v1::RelaySyncRequest request;
  // Every device seen since the last sync (with a second's overlap), or in the last
  // liveness window on the first.
  const absl::Time since = last_sync_ == absl::InfinitePast() ? started - absl::Seconds(60)
                                                              : last_sync_ - absl::Seconds(1);
  std::vector<std::string> seen = relay_->SeenSince(since);
  if (seen.size() > static_cast<size_t>(kMaxRelaySyncClients)) seen.resize(kMaxRelaySyncClients);
  for (std::string& id : seen) request.add_live_clients(std::move(id));
  v1::RelayAssignment assignment;
  {
    std::unique_ptr<grpc::ClientContext> context = Context();
    FEDGE_RETURN_IF_ERROR(FromGrpc(stub_->Sync(context.get(), request, &assignment),
                                   absl::StrCat("sync with the root at ", options_.upstream)));
  }
  last_sync_ = started;
  if (!relay_->NeedsModel(assignment)) return relay_->Follow(assignment, nullptr);
  FEDGE_ASSIGN_OR_RETURN(Coordinator::VersionedModel m, FetchModel(assignment.job_id()));
  if (m.version != assignment.model_version()) {
    // The root completed a round meanwhile: follow at the next sync.
    return absl::OkStatus();
  }
  FEDGE_LOG(INFO) << "relay: job " << assignment.job_id() << "'s model version " << m.version
                  << " from the root";
  return relay_->Follow(assignment, &m.model);
}

absl::StatusOr<Coordinator::VersionedModel> RelayLink::FetchModel(const std::string& job_id) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  v1::RelayModelRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<v1::RelayModelChunk>> reader =
      stub_->FetchModel(context.get(), request);
  v1::RelayModelChunk chunk;
  std::optional<model::PayloadAssembler> assembler;
  Coordinator::VersionedModel m;
  absl::Status problem;
  bool finished = false;
  while (problem.ok() && reader->Read(&chunk)) {
    if (chunk.has_header() && !assembler.has_value()) {
      m.version = chunk.header().version();
      absl::StatusOr<model::PayloadAssembler> a =
          model::PayloadAssembler::Create(chunk.header().total_bytes(), int64_t{16} << 30);
      if (!a.ok()) problem = a.status();
      else assembler.emplace(*std::move(a));
    } else if (chunk.has_data() && assembler.has_value()) {
      problem = assembler->Add(chunk.data());
    } else if (chunk.has_trailer() && assembler.has_value()) {
      absl::StatusOr<std::string> bytes = assembler->Finish(chunk.trailer());
      if (!bytes.ok()) problem = bytes.status();
      else if (!m.model.ParseFromString(*bytes)) problem = absl::DataLossError("not a model");
      else finished = true;
    } else {
      problem = absl::InvalidArgumentError("chunks out of order");
    }
  }
  if (!problem.ok()) context->TryCancel();
  grpc::Status end = reader->Finish();
  if (!problem.ok()) {
    return absl::Status(problem.code(), absl::StrCat("the model from the root: ", problem.message()));
  }
  FEDGE_RETURN_IF_ERROR(FromGrpc(end, "the model from the root"));
  if (!finished) return absl::DataLossError("the model from the root: no trailer");
  return m;
}

absl::Status RelayLink::Upload(const Coordinator::Partial& part) {
  std::unique_ptr<grpc::ClientContext> context = Context();
  v1::PartialResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::PartialChunk>> writer =
      stub_->UploadPartial(context.get(), &response);
  v1::PartialChunk head;
  *head.mutable_header() = part.header;
  bool ok = writer->Write(head);
  ok = ok && model::ForEachChunk(part.aggregate, options_.chunk_bytes, [&](const v1::DataChunk& c) {
         v1::PartialChunk chunk;
         *chunk.mutable_data() = c;
         return writer->Write(chunk);
       });
  if (ok) {
    v1::PartialChunk tail;
    *tail.mutable_trailer() = model::MakeTrailer(part.aggregate);
    writer->Write(tail);
  }
  writer->WritesDone();
  return FromGrpc(writer->Finish(), "the round's part to the root");
}

void RelayLink::SendPending() {
  if (!pending_.has_value()) return;
  const absl::Status sent = Upload(*pending_);
  if (sent.ok()) {
    FEDGE_LOG(INFO) << "relay: round " << pending_->header.round() << "'s part ("
                    << pending_->header.clients_size() << " devices, "
                    << pending_->aggregate.size() << " bytes of sums) taken by the root";
    pending_.reset();
    return;
  }
  if (Transient(sent)) {
    FEDGE_LOG(WARNING) << "relay: " << sent.message() << " (will send it again)";
    return;
  }
  FEDGE_LOG(WARNING) << "relay: round " << pending_->header.round()
                     << "'s part refused by the root: " << sent.message();
  pending_.reset();
}

}  // namespace fedge::server
