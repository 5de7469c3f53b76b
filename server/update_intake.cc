#include "server/update_intake.h"

#include "aggregation/weighted_mean.h"

#include <cmath>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "model/payload.h"

namespace fedge::server {
namespace {

// |sum| stays below this (float max is 3.4e38): room for the rounding of a million additions.
constexpr double kMaxSumBound = 1e38;

}  // namespace

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

absl::Status CheckUpdateClaims(const v1::UpdateHeader& header, const aggregation::Update& update,
                               int64_t registered_examples, int64_t max_examples) {
  const std::string& id = header.client_id();
  const int64_t n = header.num_examples();
  if (n <= 0 || n > max_examples || n > registered_examples) {
    // Its weight in the mean: no more examples than the device said it holds.
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: client ", id, " reports ", n,
                                                   " examples; it registered ",
                                                   registered_examples));
  }
  if (update.weight != static_cast<double>(n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Coordinator: client ", id, ": update weight differs from num_examples"));
  }
  const v1::ClientTrainMetrics& m = header.metrics();
  if (!std::isfinite(m.train_loss()) || !std::isfinite(m.train_seconds()) ||
      m.train_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: client ", id, " reports a non-finite train_loss or train_seconds"));
  }
  return absl::OkStatus();
}

absl::StatusOr<aggregation::Update> ExpandSubModelUpdate(const model::SubModelSlicer& slicer,
                                                         absl::string_view who,
                                                         const aggregation::Update& update) {
  const std::vector<model::TensorSlice>& slices = slicer.slices();
  if (update.tensors.size() != slices.size()) {
    return absl::InvalidArgumentError(absl::StrCat(who, " sent ", update.tensors.size(),
                                                   " tensors; its sub-model has ", slices.size()));
  }
  aggregation::Update out;
  out.client_id = update.client_id;
  out.weight = update.weight;
  out.tensors.reserve(slices.size());
  for (size_t i = 0; i < slices.size(); ++i) {
    const model::TensorSlice& slice = slices[i];
    const aggregation::Tensor& t = update.tensors[i];
    const std::vector<int64_t> sub_shape = slice.sub_shape();
    if (t.name != slice.name || t.shape != sub_shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": tensor '", t.name.substr(0, 64), "' has shape [", absl::StrJoin(t.shape, ","),
          "]; its sub-model's '", slice.name, "' is [", absl::StrJoin(sub_shape, ","), "]"));
    }
    aggregation::Tensor full;
    full.name = slice.name;
    full.shape = slice.full_shape;
    const int64_t n = slice.full_size();
    full.values.assign(static_cast<size_t>(n), 0.0f);
    FEDGE_RETURN_IF_ERROR(slicer.Unslice(slice, t.values, absl::MakeSpan(full.values)));
    if (slice.leading()) {
      FEDGE_ASSIGN_OR_RETURN(full.held, aggregation::CoordinateMask::Prefix(full.shape, sub_shape));
    } else {
      FEDGE_ASSIGN_OR_RETURN(full.held, aggregation::CoordinateMask::FromIndices(
                                            n, model::SubModelSlicer::HeldIndices(slice)));
    }
    out.tensors.push_back(std::move(full));
  }
  return out;
}

RoundIntake::RoundIntake(std::unique_ptr<aggregation::Aggregator> aggregator, Options options)
    : aggregator_(std::move(aggregator)), options_(std::move(options)) {
  if (options_.bound.has_value()) bound_ = std::make_unique<UpdateBound>(*options_.bound);
}

absl::Status RoundIntake::Add(aggregation::Update update, std::optional<double> norm) {
  // Checked now (names, shapes, finite values), accumulated later in a batch: the bound on
  // the sum makes that batch unable to fail.
  double max_abs = 0;
  FEDGE_RETURN_IF_ERROR(aggregator_->Validate(update, &max_abs));
  // Counted as it arrives, with the job's weight cap: the norm bound and the round's
  // weight cap only scale it down.
  const double weight = bound_ != nullptr ? bound_->JobCapped(update.weight) : update.weight;
  const double sum_bound = sum_bound_ + static_cast<double>(static_cast<float>(weight)) * max_abs;
  if (!(sum_bound <= kMaxSumBound)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "Coordinator: client %s sent values up to %.6g (weight %.6g): the round's sum could "
        "overflow float",
        update.client_id, max_abs, weight));
  }
  sum_bound_ = sum_bound;
  if (bound_ != nullptr) bound_->CapWeight(update);
  if (bound_ == nullptr) {
    Hold(std::move(update));
    return absl::OkStatus();
  }
  const double n = norm.has_value() ? *norm : aggregation::L2Norm(update);
  for (aggregation::Update& u : bound_->Take(std::move(update), n)) Hold(std::move(u));
  return absl::OkStatus();
}

void RoundIntake::Hold(aggregation::Update update) {
  for (const aggregation::Tensor& t : update.tensors) {
    pending_bytes_ += static_cast<int64_t>(t.values.size() * sizeof(float));
  }
  pending_.push_back(std::move(update));
  if (static_cast<int>(pending_.size()) >= options_.batch ||
      pending_bytes_ >= options_.batch_bytes) {
    for (auto& [client, why] : AccumulatePending()) {
      // Not expected (see Flush); the caller learns of it at the round's last Flush.
      failed_.emplace_back(std::move(client), std::move(why));
    }
  }
}

absl::Status RoundIntake::AddReleased(const aggregation::Update& mean) {
  return aggregator_->Accumulate(mean);
}

absl::Status RoundIntake::AddPartial(std::unique_ptr<aggregation::Aggregator> partial) {
  // A relay's float sums count against the round's overflow bound as they stand.
  if (auto* sums = dynamic_cast<const aggregation::WeightedMean*>(partial.get())) {
    FEDGE_ASSIGN_OR_RETURN(const double largest, sums->CheckForeignState());
    const double bound = sum_bound_ + largest;
    if (!(bound <= kMaxSumBound)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "Coordinator: a relay's sums reach %.6g: the round's sum could overflow float",
          largest));
    }
    FEDGE_RETURN_IF_ERROR(aggregator_->MergeWith(std::move(*partial)));
    sum_bound_ = bound;
    return absl::OkStatus();
  }
  return aggregator_->MergeWith(std::move(*partial));
}

std::vector<std::pair<std::string, absl::Status>> RoundIntake::Flush() {
  if (bound_ != nullptr) {
    for (aggregation::Update& u : bound_->Release()) Hold(std::move(u));
  }
  std::vector<std::pair<std::string, absl::Status>> failed = std::move(failed_);
  failed_.clear();
  for (auto& f : AccumulatePending()) failed.push_back(std::move(f));
  return failed;
}

std::vector<std::pair<std::string, absl::Status>> RoundIntake::AccumulatePending() {
  std::vector<std::pair<std::string, absl::Status>> failed;
  if (pending_.empty()) return failed;
  std::vector<const aggregation::Update*> batch;
  batch.reserve(pending_.size());
  for (const aggregation::Update& u : pending_) batch.push_back(&u);
  const absl::Status status =
      aggregator_->AccumulateBatch(batch, aggregation::AccumulateOptions{options_.threads});
  std::vector<bool> dropped(pending_.size(), false);
  if (!status.ok()) {
    // Every update that accumulates alone stays in; the others are reported.
    for (size_t i = 0; i < pending_.size(); ++i) {
      absl::Status one = aggregator_->Accumulate(pending_[i]);
      if (one.ok()) continue;
      dropped[i] = true;
      failed.emplace_back(pending_[i].client_id, std::move(one));
    }
  }
  if (options_.keep_updates) {
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (!dropped[i]) kept_.push_back(std::move(pending_[i]));
    }
  }
  pending_.clear();
  pending_bytes_ = 0;
  return failed;
}

absl::StatusOr<aggregation::ModelDelta> RoundIntake::Report() && {
  return std::move(*aggregator_).Report();
}

}  // namespace fedge::server
