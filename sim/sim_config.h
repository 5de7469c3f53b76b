// fedge-sim configs: protobuf text format of fedge.v1.SimConfig (proto/sim.proto documents
// every field and its default).
//
//   FEDGE_ASSIGN_OR_RETURN(v1::SimConfig config, LoadSimConfigFile("examples/sim_10k.textproto"));
//
// Errors are INVALID_ARGUMENT and start with "SimConfig: ". Parse errors carry the source,
// line and column and name an unknown field; validation errors name every offending field by
// its path ("population must be in [1, 1000000], got -5", "job.selection.clients_per_round
// (200) exceeds population (100)", "data: a dataset is required (fashion_mnist or
// synthetic)"). The job is validated by server::ValidateJobConfig, its errors prefixed "job: ".
#ifndef FEDGE_SIM_SIM_CONFIG_H_
#define FEDGE_SIM_SIM_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/sim.pb.h"

namespace fedge::sim {

inline constexpr int64_t kMaxPopulation = 1000000;
// Fashion-MNIST's 60,000 training examples give at most this many shards of 10.
inline constexpr int kMaxFashionMnistPartitions = 6000;
inline constexpr int kFashionMnistTrainExamples = 60000;

// Parses text format; unknown fields, unknown enum values and syntax errors are errors.
absl::StatusOr<v1::SimConfig> ParseSimConfig(absl::string_view text,
                                             absl::string_view source = "sim config");

// Checks every field and returns a copy with the documented defaults filled in (the job
// validated with its own defaults, distributions set, partition and sizes resolved).
absl::StatusOr<v1::SimConfig> ValidateSimConfig(const v1::SimConfig& config);

// Parse + validate the file at `path`.
absl::StatusOr<v1::SimConfig> LoadSimConfigFile(const std::string& path);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_SIM_CONFIG_H_
