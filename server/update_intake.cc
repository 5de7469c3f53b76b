#include "server/update_intake.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/payload.h"

namespace fedge::server {

int64_t ExpectedUpdate::payload_bytes() const {
  int64_t total = 0;
  for (const model::PayloadTensorSpec& spec : model::ParameterSpecs(*model)) {
    total += model::EncodedBytes(spec, encoding);
  }
  return total;
}

absl::Status CheckUpdateAnnouncement(const v1::UpdateHeader& header,
                                     const ExpectedUpdate& expected) {
  if (expected.strategy != nullptr) {
    for (const v1::TensorInfo& t : header.manifest().tensors()) {
      absl::Status s = expected.strategy->CheckUpdateTensor(header.client_id(), t.name());
      if (!s.ok()) return s;
    }
  }
  const int64_t bytes = expected.payload_bytes();
  if (header.total_bytes() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "UpdateIntake: update announces ", header.total_bytes(), " bytes; ", expected.what,
        " takes ", bytes, " as ", v1::TensorEncoding_Name(expected.encoding)));
  }
  return absl::OkStatus();
}

absl::StatusOr<aggregation::Update> DecodeUpdatePayload(const v1::UpdateHeader& header,
                                                        absl::string_view payload,
                                                        const ExpectedUpdate& expected) {
  absl::StatusOr<std::vector<model::DecodedTensor>> tensors = model::DecodeTensors(
      header.manifest(), payload, model::ParameterSpecs(*expected.model), {expected.encoding});
  if (!tensors.ok()) {
    return absl::Status(tensors.status().code(),
                        absl::StrCat("UpdateIntake: the update does not fit ", expected.what,
                                     ": ", tensors.status().message()));
  }
  // The decoded vectors move into the update; nothing is copied.
  aggregation::Update update;
  update.client_id = header.client_id();
  update.weight = static_cast<double>(header.num_examples());
  update.tensors.reserve(tensors->size());
  update.max_abs = 0.0;
  for (model::DecodedTensor& t : *tensors) {
    update.max_abs = std::max<double>(*update.max_abs, t.max_abs);
    aggregation::Tensor out;
    out.name = std::move(t.name);
    out.shape = std::move(t.shape);
    out.values = std::move(t.values);
    update.tensors.push_back(std::move(out));
  }
  return update;
}

}  // namespace fedge::server
