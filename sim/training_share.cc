#include "sim/training_share.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace fedge::sim {

std::string EncodeShare(const std::vector<TrainingJob>& jobs) {
  std::map<const v1::ModelProto*, uint64_t> index;  // model → its position in the message
  std::vector<const v1::ModelProto*> models;
  auto add = [&](const v1::ModelProto* m) {
    if (m != nullptr && index.emplace(m, models.size()).second) models.push_back(m);
  };
  for (const TrainingJob& j : jobs) {
    add(j.model);
    add(j.teacher);
  }
  MessageWriter w(kShareMessage);
  w.U64(models.size());
  for (const v1::ModelProto* m : models) w.Proto(*m);
  w.U64(jobs.size());
  for (const TrainingJob& j : jobs) {
    w.I64(j.client);
    w.Proto(*j.header);
    w.U64(index.at(j.model));
    w.U64(j.teacher != nullptr ? index.at(j.teacher) + 1 : 0);  // 0: no teacher
    w.U64(j.seed);
  }
  return std::move(w).Take();
}

absl::Status DecodeShare(MessageReader& r, int64_t population, Share& share) {
  const absl::Status malformed =
      absl::InternalError("Simulator: a malformed training share from rank 0");
  const uint64_t num_models = r.U64();
  if (!r.ok() || num_models > (1u << 20)) return malformed;
  share.models.resize(num_models);
  for (v1::ModelProto& m : share.models) r.Proto(&m);
  const uint64_t num_jobs = r.U64();
  if (!r.ok() || num_jobs > (1u << 24)) return malformed;
  share.headers.resize(num_jobs);
  share.jobs.resize(num_jobs);
  for (uint64_t i = 0; i < num_jobs; ++i) {
    TrainingJob& j = share.jobs[i];
    j.client = r.I64();
    r.Proto(&share.headers[i]);
    j.header = &share.headers[i];
    const uint64_t model = r.U64(), teacher = r.U64();
    j.seed = r.U64();
    if (!r.ok() || j.client < 0 || j.client >= population || model >= num_models ||
        teacher > num_models) {
      return malformed;
    }
    j.model = &share.models[model];
    j.teacher = teacher > 0 ? &share.models[teacher - 1] : nullptr;
  }
  if (!r.done()) return malformed;
  return absl::OkStatus();
}

std::string EncodeResult(const absl::StatusOr<client::LocalUpdate>& u) {
  MessageWriter w('U');
  w.U64(static_cast<uint64_t>(u.status().code()));
  if (!u.ok()) {
    const absl::string_view message = u.status().message();
    w.Bytes(std::string_view(message.data(), message.size()));
    return std::move(w).Take();
  }
  w.I64(u->num_examples);
  w.F64(u->train_loss);
  w.F64(u->train_accuracy);
  w.I64(u->steps);
  w.F64(u->seconds);
  w.F64(u->delta_norm);
  w.Proto(u->delta);
  return std::move(w).Take();
}

absl::StatusOr<client::LocalUpdate> DecodeResult(std::string_view bytes, int from) {
  MessageReader r(bytes);
  const char kind = r.Kind();
  const auto code = static_cast<absl::StatusCode>(r.U64());
  client::LocalUpdate u;
  if (r.ok() && kind == 'U' && code != absl::StatusCode::kOk) {
    const std::string_view message = r.Bytes();
    if (r.ok() && r.done()) {
      return absl::Status(code, absl::string_view(message.data(), message.size()));
    }
  } else if (r.ok() && kind == 'U') {
    u.num_examples = r.I64();
    u.train_loss = r.F64();
    u.train_accuracy = r.F64();
    u.steps = r.I64();
    u.seconds = r.F64();
    u.delta_norm = r.F64();
    r.Proto(&u.delta);
    if (r.ok() && r.done()) return u;
  }
  return absl::InternalError(absl::StrCat("Simulator: a malformed update from rank ", from));
}

}  // namespace fedge::sim
