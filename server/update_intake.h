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
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aggregation/aggregator.h"
#include "aggregation/strategy.h"
#include "model/submodel_slicer.h"
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

// What a decoded update claims about itself, against what the coordinator knows: its
// example count (its weight in the mean) in [1, max_examples] and at most what the device
// registered (`registered_examples`), equal to the update's weight; a finite, non-negative
// loss and training time (one NaN would make the round's means NaN). INVALID_ARGUMENT
// naming the claim otherwise.
absl::Status CheckUpdateClaims(const v1::UpdateHeader& header, const aggregation::Update& update,
                               int64_t registered_examples, int64_t max_examples);

// The update in the full model's shapes, with coverage masks, from one in the shapes of
// `slicer`'s sub-model (sub-model-aware FedAvg averages each coordinate over the clients
// that held it). `who` names the client and its tier in errors. INVALID_ARGUMENT for a
// tensor count, name or shape other than the sub-model's.
absl::StatusOr<aggregation::Update> ExpandSubModelUpdate(const model::SubModelSlicer& slicer,
                                                         absl::string_view who,
                                                         const aggregation::Update& update);

// One round's accepted updates on their way into the aggregate: each is validated on
// arrival (the aggregator's names, shapes and finite values, and a bound on the round's
// sum), held in a batch, and accumulated a batch at a time in one pass that reads the
// running sum once for all of them (Aggregator::AccumulateBatch), then kept when the
// strategy needs the round's individual updates.
//
// The bound: Σ float(weight)·max|Δ| over the taken updates stays under 1e38, so that no
// batch can overflow float, whatever the order of its additions.
// Memory: at most `batch` updates or `batch_bytes` of their values are held (then
// accumulated), plus the kept ones when keep_updates.
// Thread safety: none; the coordinator calls it under its lock.
class RoundIntake {
 public:
  struct Options {
    int batch = 8;                                 // updates per accumulation pass (≥ 1)
    int64_t batch_bytes = int64_t{256} << 20;      // or this many bytes of values
    int threads = 1;                               // AccumulateBatch's threads
    bool keep_updates = false;                     // Strategy::KeepsClientUpdates
  };
  RoundIntake(std::unique_ptr<aggregation::Aggregator> aggregator, Options options)
      : aggregator_(std::move(aggregator)), options_(options) {}

  // Validates `update` and takes it. INVALID_ARGUMENT, the update not taken: the
  // aggregator's refusal, or values that could overflow the round's sum.
  absl::Status Add(aggregation::Update update);
  // A secure round's released mean: accumulated at once (it is the round's only update).
  absl::Status AddReleased(const aggregation::Update& mean);
  // Accumulates the held batch. Should an update fail to accumulate (not expected: each
  // passed Validate and the bound), the others still go in; returns the failed ones'
  // clients and why.
  std::vector<std::pair<std::string, absl::Status>> Flush();
  // The round's aggregate. REQUIRES: Flush ran after the last Add.
  absl::StatusOr<aggregation::ModelDelta> Report() &&;
  // The round's updates, when keep_updates.
  const std::vector<aggregation::Update>& kept() const { return kept_; }

 private:
  std::unique_ptr<aggregation::Aggregator> aggregator_;
  const Options options_;
  std::vector<aggregation::Update> pending_;  // validated, not yet accumulated
  int64_t pending_bytes_ = 0;
  std::vector<aggregation::Update> kept_;
  double sum_bound_ = 0;
  // Updates that failed to accumulate in a batch Add flushed, until the next Flush.
  std::vector<std::pair<std::string, absl::Status>> failed_;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_UPDATE_INTAKE_H_
