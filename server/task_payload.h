// A task's payload as it travels: the model's section, then the teacher's, each encoded as
// the job asks (JobConfig.transfer.task_encoding; the teacher's compute mode), with the
// header's manifests and byte count filled in. The gRPC service streams it in chunks; the
// simulator hands it to its virtual devices whole. Both get it from one TaskPayloadEncoder,
// so a simulated device decodes the same quantized values a fleet device does.
//
// A round's central model, each tier's sub-model and each teacher are shared by many tasks:
// the encoder encodes each (model, encoding) once and keeps the last kMaxCachedModels.
//
// Thread safety: Encode may be called from any thread.
#ifndef FEDGE_SERVER_TASK_PAYLOAD_H_
#define FEDGE_SERVER_TASK_PAYLOAD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "proto/coordinator.pb.h"
#include "server/coordinator.h"

namespace fedge::server {

// A model encoded once and shared by every task that sends it in that encoding.
struct EncodedModel {
  std::shared_ptr<const v1::ModelProto> model;  // keeps the cache key alive
  v1::TensorEncoding encoding = v1::TENSOR_ENCODING_FLOAT32;
  v1::TensorManifest manifest;
  std::string bytes;
  uint32_t crc32 = 0;
};

// One task ready to send: the header (manifest, teacher_manifest and total_bytes filled)
// and its payload's sections, back to back.
struct EncodedTask {
  v1::TaskHeader header;
  std::vector<std::shared_ptr<const EncodedModel>> sections;  // model, then teacher
  uint32_t crc32 = 0;  // of the whole payload
  // The payload as one string (a copy of the sections).
  std::string Payload() const;
};

class TaskPayloadEncoder {
 public:
  static constexpr size_t kMaxCachedModels = 8;
  // Errors: the encoding's (model/payload.h: an unknown encoding, a bad shape).
  absl::StatusOr<EncodedTask> Encode(TaskAssignment task);

 private:
  absl::StatusOr<std::shared_ptr<const EncodedModel>> EncodeModel(
      const std::shared_ptr<const v1::ModelProto>& model, v1::TensorEncoding encoding);

  absl::Mutex mu_;
  // Most recently encoded last.
  std::vector<std::shared_ptr<const EncodedModel>> cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_TASK_PAYLOAD_H_
