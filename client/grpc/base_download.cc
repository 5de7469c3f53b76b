// A language-model device's base, fetched from the coordinator by digest: ClientRuntime's
// FetchBaseModel side. The bytes go to the device's BaseCache (client/base_cache.h) chunk
// by chunk, a broken download resumes from what was kept, and a base is used only once its
// SHA-256 is the one the task named. The device's loop is in client/grpc/client_runtime.cc.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "client/grpc/client_runtime_impl.h"
#include "data/bpe.h"
#include "data/token_windows.h"
#include "model/serialize.h"

namespace fedge::client {

using runtime_internal::Deadline;
using runtime_internal::FromGrpc;

absl::Status ClientRuntime::Impl::UseBase(const std::string& path, const std::string& sha256) {
  FEDGE_ASSIGN_OR_RETURN(v1::ModelProto file, model::LoadModel(path));
  if (file.tokenizer().empty() || !file.spec().has_transformer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientRuntime: ", path, " holds no tokenizer (not a language model)"));
  }
  absl::StatusOr<data::BpeTokenizer> tokenizer = data::BpeTokenizer::Parse(file.tokenizer());
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClientRuntime: ", path, ": its tokenizer: ", tokenizer.status().message()));
  }
  file.Clear();
  std::vector<int32_t> tokens = data::EncodeDocuments(*tokenizer, lm_text);
  if (tokens.size() < 2) {
    return absl::InvalidArgumentError(
        "ClientRuntime: the device's text encodes to fewer than 2 tokens");
  }
  lm_tokens = std::move(tokens);
  lm_base_file = path;
  lm_base_sha256 = sha256;
  lm_model.reset();  // an earlier job's model (another base) is not used again
  lm_model_key.clear();
  return absl::OkStatus();
}

absl::Status ClientRuntime::Impl::ObtainBase(const std::string& sha256,
                                             const std::atomic<bool>& stop, bool* decline) {
  *decline = false;
  if (!BaseCache::IsDigest(sha256)) {
    *decline = true;
    return absl::InvalidArgumentError(
        "ClientRuntime: the task's base_sha256 is not 64 lowercase hex characters");
  }
  absl::StatusOr<std::string> path = base_cache->Find(sha256);
  if (!path.ok()) {
    if (!absl::IsNotFound(path.status())) return path.status();
    path = DownloadBase(sha256, stop, decline);
    if (!path.ok()) return path.status();
  }
  absl::Status used = UseBase(*path, sha256);
  if (!used.ok()) {
    *decline = true;  // the right bytes, and not a base this device can use
    if (!lm_base_file.empty() && !std::filesystem::exists(lm_base_file)) {
      // The base in use was a fetched one, removed when this one came: the device has none
      // now, and fetches it again for a task that names it.
      lm_base_file.clear();
      lm_base_sha256.clear();
      lm_tokens.clear();
      lm_model.reset();
      lm_model_key.clear();
    }
    return used;
  }
  FEDGE_LOG(INFO) << "ClientRuntime: base " << sha256.substr(0, 12) << " in use ("
                  << lm_tokens.size() << " tokens of text)";
  return absl::OkStatus();
}

absl::StatusOr<std::string> ClientRuntime::Impl::DownloadBase(const std::string& sha256,
                                                              const std::atomic<bool>& stop,
                                                              bool* decline) {
  v1::FetchBaseModelRequest req;
  req.set_client_id(id());
  req.set_session_token(session_token);
  req.set_sha256(sha256);
  req.set_offset(base_cache->PartialBytes(sha256));
  grpc::ClientContext ctx;
  ctx.set_deadline(Deadline(absl::Hours(1)));
  const Cancellable cancellable_call(this, &ctx);
  if (stop.load()) return absl::CancelledError("ClientRuntime: stopping");

  const absl::Time started = absl::Now();
  std::unique_ptr<grpc::ClientReader<v1::BaseModelChunk>> reader =
      stub->FetchBaseModel(&ctx, req);
  v1::BaseModelChunk chunk;
  auto fail = [&](absl::Status why) {
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return why;
  };
  if (!reader->Read(&chunk)) {
    absl::Status s = FromGrpc(reader->Finish(), "FetchBaseModel");
    // The coordinator's base is shorter than what was kept: not this base's bytes.
    if (absl::IsOutOfRange(s)) base_cache->DropPartial(sha256);
    return s;
  }
  if (!chunk.has_header()) {
    return fail(absl::InvalidArgumentError(
        "ClientRuntime: FetchBaseModel: the stream did not start with a header"));
  }
  const int64_t total = chunk.header().total_bytes();
  if (absl::Status s = base_cache->Begin(sha256, req.offset(), total); !s.ok()) {
    *decline = absl::IsResourceExhausted(s);  // over this device's max_base_bytes
    return fail(s);
  }
  FEDGE_LOG(INFO) << "ClientRuntime: fetching base " << sha256.substr(0, 12) << " ("
                  << total << " bytes"
                  << (req.offset() > 0 ? absl::StrCat(", resuming at byte ", req.offset()) : "")
                  << ")";
  int64_t kept = req.offset();
  while (reader->Read(&chunk)) {
    if (!chunk.has_data()) {
      return fail(absl::InvalidArgumentError(
          "ClientRuntime: FetchBaseModel: a message that is not data after the header"));
    }
    absl::Status s = base_cache->Append(chunk.data().offset(), chunk.data().data());
    if (!s.ok()) return fail(s);
    kept += static_cast<int64_t>(chunk.data().data().size());
    absl::MutexLock lock(&mu);
    stats.base_bytes_received += static_cast<int64_t>(chunk.data().data().size());
  }
  FEDGE_RETURN_IF_ERROR(FromGrpc(reader->Finish(), "FetchBaseModel"));
  if (kept != total) {
    return absl::UnavailableError(absl::StrCat("ClientRuntime: FetchBaseModel ended at byte ",
                                               kept, " of ", total, "; it resumes from there"));
  }
  FEDGE_ASSIGN_OR_RETURN(std::string path, base_cache->Complete());
  Count(&ClientRuntimeStats::bases_fetched);
  FEDGE_LOG(INFO) << "ClientRuntime: base " << sha256.substr(0, 12) << " fetched and checked ("
                  << total << " bytes in " << absl::ToDoubleSeconds(absl::Now() - started)
                  << " s)";
  return path;
}

}  // namespace fedge::client
