#include "aggregation/strategy.h"

#include "aggregation/weighted_mean.h"

namespace fedge::aggregation {

absl::StatusOr<std::unique_ptr<Aggregator>> Strategy::CreateAggregator(
    const std::vector<TensorSpec>& specs) const {
  auto mean = WeightedMean::Create(specs, WeightedMeanOptions{exact_sums_});
  if (!mean.ok()) return mean.status();
  return std::unique_ptr<Aggregator>(std::move(mean).value());
}

}  // namespace fedge::aggregation
