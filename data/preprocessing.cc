#include "data/preprocessing.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "data/idx_reader.h"

namespace fedge::data {

absl::StatusOr<v1::Preprocessing> ResolvePreprocessing(const v1::Preprocessing& p) {
  v1::Preprocessing r = p;
  switch (p.kind()) {
    case v1::Preprocessing::KIND_UNSPECIFIED:
    case v1::Preprocessing::KIND_UNIT_RANGE:
      r.Clear();
      r.set_kind(v1::Preprocessing::KIND_UNIT_RANGE);
      return r;
    case v1::Preprocessing::KIND_STANDARDIZE:
      if (!p.has_mean()) r.set_mean(kFashionMnistMean);
      if (!p.has_std()) r.set_std(kFashionMnistStd);
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

absl::Status Preprocess(const v1::Preprocessing& p, Dataset& d) {
  FEDGE_ASSIGN_OR_RETURN(const v1::Preprocessing r, ResolvePreprocessing(p));
  if (r.kind() == v1::Preprocessing::KIND_STANDARDIZE) {
    Standardize(d, static_cast<float>(r.mean()), static_cast<float>(r.std()));
  }
  return absl::OkStatus();
}

}  // namespace fedge::data
