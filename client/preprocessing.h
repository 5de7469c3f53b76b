// The task's preprocessing applied to the device's local data. Shards hold pixels in [0, 1]
// (data::WritePartition of IDX data), which is exactly KIND_UNIT_RANGE; KIND_STANDARDIZE
// is (pixel − mean) / std on those, as the coordinator does to its evaluation data.
//
// LocalDataCache keeps the raw data and one preprocessed copy: the copy is made once per
// distinct Preprocessing (a job keeps one for all its rounds) and replaced when a task asks
// for another, so memory stays at two copies at most. Not thread-safe.
#ifndef FEDGE_CLIENT_PREPROCESSING_H_
#define FEDGE_CLIENT_PREPROCESSING_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/preprocessing.h"
#include "proto/job.pb.h"

namespace fedge::client {

// The preprocessing with its defaults resolved (data/preprocessing.h).
using data::ResolvePreprocessing;

// A copy of `raw` with `p` applied (p resolved first).
absl::StatusOr<data::Dataset> ApplyPreprocessing(const data::Dataset& raw,
                                                 const v1::Preprocessing& p);

class LocalDataCache {
 public:
  explicit LocalDataCache(std::shared_ptr<const data::Dataset> raw) : raw_(std::move(raw)) {}

  // The local data as task preprocessing `p` wants it. UNIT_RANGE returns the raw data
  // itself (no copy).
  absl::StatusOr<std::shared_ptr<const data::Dataset>> Get(const v1::Preprocessing& p);

  // Replaces the raw data (a data-source callback produced new data); drops the copy.
  void Reset(std::shared_ptr<const data::Dataset> raw);

  const data::Dataset& raw() const { return *raw_; }
  bool has_raw() const { return raw_ != nullptr; }
  // How many preprocessed copies were made so far (for tests).
  int copies_made() const { return copies_made_; }

 private:
  std::shared_ptr<const data::Dataset> raw_;
  std::string cached_key_;  // serialized resolved Preprocessing of cached_
  std::shared_ptr<const data::Dataset> cached_;
  int copies_made_ = 0;
};

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_PREPROCESSING_H_
