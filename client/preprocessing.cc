#include "client/preprocessing.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "data/preprocessing.h"

namespace fedge::client {

absl::StatusOr<data::Dataset> ApplyPreprocessing(const data::Dataset& raw,
                                                 const v1::Preprocessing& p) {
  data::Dataset d = raw;
  FEDGE_RETURN_IF_ERROR(data::Preprocess(p, d));
  return d;
}

absl::StatusOr<std::shared_ptr<const data::Dataset>> LocalDataCache::Get(
    const v1::Preprocessing& p) {
  FEDGE_ASSIGN_OR_RETURN(const v1::Preprocessing r, ResolvePreprocessing(p));
  if (r.kind() == v1::Preprocessing::KIND_UNIT_RANGE) return raw_;
  std::string key;
  r.SerializeToString(&key);
  if (cached_ != nullptr && key == cached_key_) return cached_;
  cached_.reset();  // free the old copy before making the new one
  FEDGE_ASSIGN_OR_RETURN(data::Dataset d, ApplyPreprocessing(*raw_, r));
  cached_ = std::make_shared<const data::Dataset>(std::move(d));
  cached_key_ = std::move(key);
  ++copies_made_;
  return cached_;
}

void LocalDataCache::Reset(std::shared_ptr<const data::Dataset> raw) {
  raw_ = std::move(raw);
  cached_.reset();
  cached_key_.clear();
}

}  // namespace fedge::client
