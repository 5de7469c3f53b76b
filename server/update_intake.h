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
#include <optional>
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
#include "server/update_bound.h"

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
// sum), weighed and clipped by the round's UpdateBound (server/update_bound.h: some are
// held until the round closes), held in a batch, and accumulated a batch at a time in one
// pass that reads the running sum once for all of them (Aggregator::AccumulateBatch), then
// kept when the strategy needs the round's individual updates.
//
// The sum bound: Σ float(weight)·max|Δ| over the taken updates (with the job's weight cap,
// before the norm bound and the round's weight cap scale them down, which only lowers
// their sum) stays under 1e38, so that no batch can overflow float, whatever the order of
// its additions. An update that would break it is refused on arrival.
// Memory: the UpdateBound's held updates, and at most `batch` updates or `batch_bytes` of
// their values (then accumulated), plus the kept ones when keep_updates.
// Thread safety: none; the coordinator calls it under its lock.
class RoundIntake {
 public:
  struct Options {
    int batch = 8;                                 // updates per accumulation pass (≥ 1)
    int64_t batch_bytes = int64_t{256} << 20;      // or this many bytes of values
    int threads = 1;                               // AccumulateBatch's threads
    bool keep_updates = false;                     // Strategy::KeepsClientUpdates
    // The round's weight caps and norm bound; nullopt: none (secure aggregation).
    std::optional<UpdateBound::Options> bound;
  };
  RoundIntake(std::unique_ptr<aggregation::Aggregator> aggregator, Options options);

  // Validates `update` (full shapes) and takes it; `norm` is its L2 norm when the caller
  // measured it already. INVALID_ARGUMENT, the update not taken: the aggregator's refusal,
  // or values that could overflow the round's sum (see above).
  absl::Status Add(aggregation::Update update, std::optional<double> norm = std::nullopt);
  // A secure round's released mean: accumulated at once (it is the round's only update).
  absl::Status AddReleased(const aggregation::Update& mean);
  // A relay's sums of its clients' updates (docs/relays.md), already bounded by the
  // relay's own intake: merged into the round's (Aggregator::MergeWith: the same kind of
  // aggregate over the same tensors, exact sums with exact sums).
  absl::Status AddPartial(std::unique_ptr<aggregation::Aggregator> partial);
  // The sums so far, serialized (Aggregator::Serialize): a relay's part of its round.
  // REQUIRES: Flush ran after the last Add.
  absl::StatusOr<std::string> SerializeSums() const { return aggregator_->Serialize(); }
  // At the round's close: the bound's held updates join the batch, which is accumulated.
  // Should an update fail to accumulate (not expected: each passed Validate and the sum
  // bound), the others still go in; returns the failed ones' clients and why.
  std::vector<std::pair<std::string, absl::Status>> Flush();
  // What the bound did (RoundMetrics.robustness); nothing without a bound. After Flush.
  void ReportBound(v1::RobustnessRoundMetrics* m) const {
    if (bound_ != nullptr) bound_->Report(m);
  }
  // The updates the bound's direction check left out of the aggregate, and why. After Flush.
  std::vector<UpdateBound::Excluded> Excluded() const {
    return bound_ != nullptr ? bound_->excluded() : std::vector<UpdateBound::Excluded>();
  }
  // The round's aggregate. REQUIRES: Flush ran after the last Add.
  absl::StatusOr<aggregation::ModelDelta> Report() &&;
  // The round's updates, when keep_updates.
  const std::vector<aggregation::Update>& kept() const { return kept_; }

 private:
  // Into the batch; a full batch is accumulated (its failures kept in failed_).
  void Hold(aggregation::Update update);
  // Accumulates the batch; returns the updates that failed to.
  std::vector<std::pair<std::string, absl::Status>> AccumulatePending();

  std::unique_ptr<aggregation::Aggregator> aggregator_;
  const Options options_;
  std::unique_ptr<UpdateBound> bound_;
  std::vector<aggregation::Update> pending_;  // validated, not yet accumulated
  int64_t pending_bytes_ = 0;
  std::vector<aggregation::Update> kept_;
  double sum_bound_ = 0;
  // Updates that failed to accumulate in a batch Add flushed, until the next Flush.
  std::vector<std::pair<std::string, absl::Status>> failed_;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_UPDATE_INTAKE_H_
