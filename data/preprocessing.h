// A job's preprocessing (proto/job.proto, Preprocessing) applied to a dataset whose pixels
// are in [0, 1] (the IDX reader's and the shard files' range): KIND_UNIT_RANGE leaves them
// as they are; KIND_STANDARDIZE maps each to (pixel − mean) / std. The one implementation
// for the devices (client/preprocessing.h), the coordinator's evaluation data
// (server/round_report.h) and the simulator's data (sim/client_data.h).
#ifndef FEDGE_DATA_PREPROCESSING_H_
#define FEDGE_DATA_PREPROCESSING_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "proto/job.pb.h"

namespace fedge::data {

// The preprocessing with its defaults resolved (UNSPECIFIED → UNIT_RANGE; STANDARDIZE
// without mean/std → Fashion-MNIST's 0.2860 / 0.3530). INVALID_ARGUMENT for a std that is
// not finite and > 0, a non-finite mean, or an unknown kind.
absl::StatusOr<v1::Preprocessing> ResolvePreprocessing(const v1::Preprocessing& p);

// Applies `p` (resolved first) to `d` in place. Errors: ResolvePreprocessing's.
absl::Status Preprocess(const v1::Preprocessing& p, Dataset& d);

}  // namespace fedge::data

#endif  // FEDGE_DATA_PREPROCESSING_H_
