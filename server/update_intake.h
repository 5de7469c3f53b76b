// Update intake, the part that needs no round state: what an update must announce for its
// task before a payload byte is read, and the payload decoded into an aggregation::Update.
// The Coordinator calls these for every transport (Coordinator::BeginUpload and
// SubmitPayload), so the gRPC service only reassembles chunks and the simulator's devices
// hand their encoded payloads straight in: both go through the same checks and decoding.
//
//   FEDGE_RETURN_IF_ERROR(CheckUpdateAnnouncement(header, expected));  // before the payload
//   FEDGE_ASSIGN_OR_RETURN(aggregation::Update u, DecodeUpdatePayload(header, payload, expected));
//
// Thread safety: pure functions of their arguments.
#ifndef FEDGE_SERVER_UPDATE_INTAKE_H_
#define FEDGE_SERVER_UPDATE_INTAKE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"
#include "proto/coordinator.pb.h"
#include "proto/model.pb.h"

namespace fedge::server {

// What a client's update must be: Δ of its task's model's parameters (names, shapes, order)
// in the job's update encoding.
struct ExpectedUpdate {
  std::shared_ptr<const v1::ModelProto> model;  // the client's task model (sub-model shapes)
  v1::TensorEncoding encoding = v1::TENSOR_ENCODING_FLOAT32;
  // The job's strategy, for its checks of the announced tensor names (FedCG: only C.* and
  // G.*); null: none.
  const aggregation::Strategy* strategy = nullptr;
  // How errors name the model: "the task's model", or "the task's sub-model (tier
  // 'quarter', width 0.25)".
  std::string what;
  // The payload's exact size: every tensor of `model` in `encoding`.
  int64_t payload_bytes() const;
};

// INVALID_ARGUMENT, naming the problem, when the header's announcement cannot be an update
// of the task: a tensor name the strategy refuses (Strategy::CheckUpdateTensor; FedCG's
// private extractor E and discriminator D), or total_bytes other than
// expected.payload_bytes().
absl::Status CheckUpdateAnnouncement(const v1::UpdateHeader& header,
                                     const ExpectedUpdate& expected);

// The payload's tensors (dequantized to float32) as an update of weight
// header.num_examples, with max_abs set. INVALID_ARGUMENT when the manifest or payload do
// not fit the task (model/payload.h DecodeTensors: names, shapes, order, encodings,
// sizes, non-finite values).
absl::StatusOr<aggregation::Update> DecodeUpdatePayload(const v1::UpdateHeader& header,
                                                        absl::string_view payload,
                                                        const ExpectedUpdate& expected);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_UPDATE_INTAKE_H_
