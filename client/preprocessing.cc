#include "client/preprocessing.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "data/idx_reader.h"

namespace fedge::client {

absl::StatusOr<v1::Preprocessing> ResolvePreprocessing(const v1::Preprocessing& p) {
  v1::Preprocessing r = p;
  switch (p.kind()) {
    case v1::Preprocessing::KIND_UNSPECIFIED:
    case v1::Preprocessing::KIND_UNIT_RANGE:
      r.Clear();
      r.set_kind(v1::Preprocessing::KIND_UNIT_RANGE);
      return r;
    case v1::Preprocessing::KIND_STANDARDIZE:
      if (!p.has_mean()) r.set_mean(data::kFashionMnistMean);
      if (!p.has_std()) r.set_std(data::kFashionMnistStd);
      if (!std::isfinite(r.mean())) {
        return absl::InvalidArgumentError("Preprocessing: mean must be finite");
      }
      if (!(r.std() > 0) || !std::isfinite(r.std())) {
        return absl::InvalidArgumentError(
            absl::StrCat("Preprocessing: std must be finite and > 0, got ", r.std()));
      }
      return r;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Preprocessing: unknown kind ", static_cast<int>(p.kind())));
  }
}

absl::StatusOr<data::Dataset> ApplyPreprocessing(const data::Dataset& raw,
                                                 const v1::Preprocessing& p) {
  FEDGE_ASSIGN_OR_RETURN(const v1::Preprocessing r, ResolvePreprocessing(p));
  data::Dataset d = raw;
  if (r.kind() == v1::Preprocessing::KIND_STANDARDIZE) {
    data::Standardize(d, static_cast<float>(r.mean()), static_cast<float>(r.std()));
  }
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
