// A job's strategy and starting model, from its config: FedAvg (and FedProx, whose μ only
// changes the devices' objective), FedAdam, FedYogi, or FedCG (whose central model is the
// shared classifier C and generator G only).
#ifndef FEDGE_SERVER_JOB_STRATEGY_H_
#define FEDGE_SERVER_JOB_STRATEGY_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"
#include "proto/job.pb.h"

namespace fedge::server {

// Secure aggregation sends the masked update in one message: 4 bytes per parameter, under
// the 8 MiB gRPC message limit.
inline constexpr int64_t kMaxSecureAggregationParameters = 2'000'000;

struct JobModel {
  std::unique_ptr<aggregation::Strategy> strategy;
  aggregation::ModelWeights weights;  // round 0's central model (from init_seed)
  int64_t num_parameters = 0;
};

// REQUIRES: `config` validated (ValidateJobConfig). INVALID_ARGUMENT for a strategy's bad
// options, a model spec that does not build, or secure aggregation of a model over
// kMaxSecureAggregationParameters.
absl::StatusOr<JobModel> MakeJobModel(const v1::JobConfig& config);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_JOB_STRATEGY_H_
