// client/device_link.h over gRPC, ClientRuntime's side of the device round: uploads in
// chunks that resume from what the coordinator kept, secure-aggregation steps with retries,
// declines. The device's loop is in client/grpc/client_runtime.cc.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "client/grpc/client_runtime_impl.h"
#include "client/memory_budget.h"
#include "model/payload.h"

namespace fedge::client {

using runtime_internal::Deadline;
using runtime_internal::FromGrpc;
using runtime_internal::Retryable;

int64_t ClientRuntime::Impl::KeptUploadBytes(const v1::TaskHeader& t) {
  v1::UploadStatusRequest req;
  req.set_client_id(id());
  req.set_session_token(session_token);
  req.set_task_id(t.task_id());
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(10)));
  v1::UploadStatusResponse resp;
  const absl::Status s = FromGrpc(stub->UploadStatus(&ctx, req, &resp), "UploadStatus");
  if (!s.ok()) return 0;  // the upload starts over; the stream reports what is wrong
  return std::max<int64_t>(0, resp.bytes_received());
}

absl::Status ClientRuntime::Impl::UploadFrom(const v1::TaskHeader& t, const EncodedUpdate& update,
                                             int64_t offset) {
  const std::string& payload = update.payload;
  v1::UpdateChunk header;
  v1::UpdateHeader* h = header.mutable_header();
  *h = update.header;
  h->set_session_token(session_token);
  h->set_resume_offset(offset);

  grpc::ClientContext ctx;
  // Not cancelled by `stop`: a started upload is finished.
  absl::Duration limit = absl::Minutes(10);
  if (t.deadline_unix_ms() > 0) {
    limit = std::max(absl::Seconds(5),
                     absl::FromUnixMillis(t.deadline_unix_ms()) - absl::Now() + absl::Seconds(5));
  }
  ctx.set_deadline(Deadline(limit));
  v1::UploadUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub->UploadUpdate(&ctx, &resp);
  bool ok = writer->Write(header);
  if (ok) {
    v1::UpdateChunk c;
    const absl::string_view rest = absl::string_view(payload).substr(static_cast<size_t>(offset));
    ok = model::ForEachChunk(rest, chunk_bytes, [&](const v1::DataChunk& d) {
      *c.mutable_data() = d;
      c.mutable_data()->set_offset(d.offset() + offset);
      {
        absl::MutexLock lock(&mu);
        stats.upload_bytes_sent += static_cast<int64_t>(d.data().size());
      }
      return writer->Write(c);
    });
  }
  if (ok) {
    v1::UpdateChunk trailer;
    *trailer.mutable_trailer() = model::MakeTrailer(payload);
    ok = writer->Write(trailer);
  }
  if (ok) writer->WritesDone();
  return FromGrpc(writer->Finish(), "UploadUpdate");
}

absl::Status ClientRuntime::Impl::Upload(const v1::TaskHeader& t, const EncodedUpdate& update) {
  const std::string where = absl::StrCat("job ", t.job_id(), " round ", t.round());
  const absl::Time deadline =
      t.deadline_unix_ms() > 0 ? absl::FromUnixMillis(t.deadline_unix_ms()) : absl::InfiniteFuture();
  const int64_t size = static_cast<int64_t>(update.payload.size());
  Backoff retry(options.backoff, options.seed ^ 0x5eed);
  bool reregistered = false;
  int64_t offset = 0;
  for (;;) {
    absl::Status s = UploadFrom(t, update, offset);
    if (absl::IsFailedPrecondition(s) && offset > 0) {
      // The coordinator no longer holds what it had kept: send everything again.
      offset = 0;
      continue;
    }
    if (s.ok() || absl::IsAlreadyExists(s)) return absl::OkStatus();
    if (absl::IsUnauthenticated(s) && !reregistered) {
      // The session is gone (e.g. the coordinator lost it): register again (same id) and
      // send the update with the new session.
      reregistered = true;
      FEDGE_LOG(WARNING) << where << ": " << s.message() << "; registering again";
      FEDGE_RETURN_IF_ERROR(Register());
      continue;
    }
    if (!Retryable(s) || absl::IsUnauthenticated(s) || (stop != nullptr && stop->load())) return s;
    const absl::Duration wait = retry.NextDelay();
    if (absl::Now() + wait > deadline) return s;
    FEDGE_LOG(WARNING) << where << ": upload failed (" << s.message() << "); retrying in "
                       << absl::FormatDuration(wait);
    Count(&ClientRuntimeStats::connection_failures);
    Pause(wait);
    // Resume from what the coordinator kept of this upload, if anything.
    offset = std::min<int64_t>(KeptUploadBytes(t), size);
    if (offset > 0) {
      Count(&ClientRuntimeStats::uploads_resumed);
      FEDGE_LOG(INFO) << where << ": resuming the upload at byte " << offset << " of " << size;
    }
  }
}

absl::StatusOr<v1::SecAggStepResponse> ClientRuntime::Impl::SecureAggregationStep(
    const v1::TaskHeader& t, v1::SecAggStepRequest request) {
  request.set_client_id(id());
  request.set_session_token(session_token);
  request.set_job_id(t.job_id());
  request.set_round(t.round());
  request.set_task_id(t.task_id());
  Backoff retry(options.backoff, options.seed ^ 0x5ec);
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(Deadline(absl::Seconds(60)));
    v1::SecAggStepResponse response;
    const absl::Status s =
        FromGrpc(stub->SecureAggregationStep(&ctx, request, &response), "SecureAggregationStep");
    if (s.ok()) return response;
    // The coordinator already has this message (an earlier attempt arrived; its answer was
    // lost): go on as if it had been answered.
    if (absl::IsAlreadyExists(s) && attempt > 0) return v1::SecAggStepResponse();
    if (!absl::IsUnavailable(s) || attempt >= 4 || (stop != nullptr && stop->load())) return s;
    Count(&ClientRuntimeStats::connection_failures);
    Pause(retry.NextDelay());
  }
}

absl::Status ClientRuntime::Impl::Decline(const v1::TaskHeader&, const v1::UpdateHeader& header) {
  v1::UpdateChunk msg;
  v1::UpdateHeader* h = msg.mutable_header();
  *h = header;
  h->set_session_token(session_token);
  h->mutable_metrics()->set_peak_rss_bytes(PeakRssBytes());
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Seconds(10)));
  v1::UploadUpdateResponse resp;
  std::unique_ptr<grpc::ClientWriter<v1::UpdateChunk>> writer = stub->UploadUpdate(&ctx, &resp);
  if (writer->Write(msg)) writer->WritesDone();
  const absl::Status s = FromGrpc(writer->Finish(), "UploadUpdate (declining the task)");
  if (!s.ok()) {
    FEDGE_LOG(WARNING) << s.message();
  }
  return s;
}

}  // namespace fedge::client
