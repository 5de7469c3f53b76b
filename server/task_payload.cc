#include "server/task_payload.h"

#include <utility>

#include "base/status_macros.h"
#include "model/payload.h"
#include "zlib.h"

namespace fedge::server {

std::string EncodedTask::Payload() const {
  std::string out;
  size_t total = 0;
  for (const auto& s : sections) total += s->bytes.size();
  out.reserve(total);
  for (const auto& s : sections) out += s->bytes;
  return out;
}

absl::StatusOr<std::shared_ptr<const EncodedModel>> TaskPayloadEncoder::EncodeModel(
    const std::shared_ptr<const v1::ModelProto>& model, v1::TensorEncoding encoding) {
  {
    absl::MutexLock lock(&mu_);
    for (const auto& e : cache_) {
      if (e->model == model && e->encoding == encoding) return e;
    }
  }
  // Encoded outside the lock; two concurrent first downloads may both encode (harmless).
  FEDGE_ASSIGN_OR_RETURN(model::EncodedPayload p, model::EncodeModelParameters(*model, encoding));
  auto e = std::make_shared<EncodedModel>();
  e->model = model;
  e->encoding = encoding;
  e->manifest = std::move(p.manifest);
  e->bytes = std::move(p.bytes);
  e->crc32 = model::PayloadCrc32(e->bytes);
  absl::MutexLock lock(&mu_);
  if (cache_.size() >= kMaxCachedModels) cache_.erase(cache_.begin());
  cache_.push_back(e);
  return std::shared_ptr<const EncodedModel>(std::move(e));
}

absl::StatusOr<EncodedTask> TaskPayloadEncoder::Encode(TaskAssignment task) {
  EncodedTask out;
  FEDGE_ASSIGN_OR_RETURN(std::shared_ptr<const EncodedModel> model,
                         EncodeModel(task.model, task.model_encoding));
  out.header = std::move(task.header);
  *out.header.mutable_manifest() = model->manifest;
  out.crc32 = model->crc32;
  int64_t total = static_cast<int64_t>(model->bytes.size());
  out.sections.push_back(std::move(model));
  if (task.teacher != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(std::shared_ptr<const EncodedModel> teacher,
                           EncodeModel(task.teacher, task.teacher_encoding));
    *out.header.mutable_teacher_manifest() = teacher->manifest;
    out.crc32 = static_cast<uint32_t>(crc32_combine(
        out.crc32, teacher->crc32, static_cast<z_off_t>(teacher->bytes.size())));
    total += static_cast<int64_t>(teacher->bytes.size());
    out.sections.push_back(std::move(teacher));
  }
  out.header.set_total_bytes(total);
  return out;
}

}  // namespace fedge::server
