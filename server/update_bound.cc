#include "server/update_bound.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"

namespace fedge::server {
namespace {

// Min-heap order on the key: the smallest pull on the sum is on top, to leave first.
struct LargerKey {
  template <typename E>
  bool operator()(const E& a, const E& b) const {
    return a.key > b.key;
  }
};

// ‖Δ‖·√(P/H): the update's norm at its size per coordinate over the whole model.
double FullModelNorm(const aggregation::Update& u, double norm) {
  int64_t total = 0, held = 0;
  for (const aggregation::Tensor& t : u.tensors) {
    const int64_t size = static_cast<int64_t>(t.values.size());
    total += size;
    held += t.held.has_value() ? t.held->CountHeld() : size;
  }
  if (held == 0 || !std::isfinite(norm)) return held == 0 ? 0.0 : norm;
  return norm * std::sqrt(static_cast<double>(total) / static_cast<double>(held));
}

// The cosine of each update with the coordinate-wise median of all of them: each
// coordinate's median over the updates that held it (the mean of the two middle values for
// an even count), each cosine over the coordinates its update held; 0 for a zero vector.
// O(updates × model) time, O(updates) extra memory.
std::vector<double> CosinesToCoordinateMedian(const std::vector<aggregation::Update>& updates) {
  const size_t n = updates.size();
  std::vector<double> dot(n, 0.0), self(n, 0.0), median(n, 0.0);
  std::vector<float> column;
  column.reserve(n);
  for (size_t t = 0; n > 0 && t < updates[0].tensors.size(); ++t) {
    const int64_t size = static_cast<int64_t>(updates[0].tensors[t].values.size());
    for (int64_t j = 0; j < size; ++j) {
      column.clear();
      for (const aggregation::Update& u : updates) {
        const aggregation::Tensor& x = u.tensors[t];
        if (!x.held.has_value() || x.held->held(j)) column.push_back(x.values[j]);
      }
      if (column.empty()) continue;
      const size_t mid = (column.size() - 1) / 2;
      std::nth_element(column.begin(), column.begin() + mid, column.end());
      double m = column[mid];
      if (column.size() % 2 == 0) {
        m = 0.5 * (m + *std::min_element(column.begin() + mid + 1, column.end()));
      }
      for (size_t i = 0; i < n; ++i) {
        const aggregation::Tensor& x = updates[i].tensors[t];
        if (x.held.has_value() && !x.held->held(j)) continue;
        const double v = x.values[j];
        dot[i] += v * m;
        self[i] += v * v;
        median[i] += m * m;
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    dot[i] = self[i] > 0 && median[i] > 0 ? dot[i] / std::sqrt(self[i] * median[i]) : 0.0;
  }
  return dot;
}

}  // namespace

void RunningLowerMedian::Add(double x) {
  if (lower_.empty() || x <= lower_.top()) {
    lower_.push(x);
  } else {
    upper_.push(x);
  }
  if (lower_.size() > upper_.size() + 1) {
    upper_.push(lower_.top());
    lower_.pop();
  } else if (upper_.size() > lower_.size()) {
    lower_.push(upper_.top());
    upper_.pop();
  }
}

std::optional<UpdateBound::Options> UpdateBound::ForJob(const v1::JobConfig& job,
                                                        int64_t model_parameters,
                                                        int held_updates, int64_t held_bytes) {
  if (job.privacy().secure_aggregation_threshold() > 0) return std::nullopt;
  const v1::RobustnessConfig& r = job.robustness();
  const bool dp_noise = job.privacy().noise_multiplier() > 0;
  Options o;
  o.max_weight = r.max_examples_per_update();
  o.weight_multiple = dp_noise ? 0 : r.max_weight_multiple();  // every participant weighs 1
  o.fixed_norm = r.max_update_norm();
  o.norm_multiple = dp_noise ? 0 : r.norm_bound_multiple();
  o.direction_check = !dp_noise && r.direction_check();
  o.min_agreement = r.min_direction_agreement();
  const int64_t update_bytes = std::max<int64_t>(1, model_parameters) * 4;
  o.held_updates = static_cast<int>(
      std::clamp<int64_t>(std::min<int64_t>(held_updates, held_bytes / update_bytes), 1,
                          std::max(1, held_updates)));
  return o;
}

UpdateBound::UpdateBound(Options options) : options_(options) {}

void UpdateBound::CapWeight(aggregation::Update& update) {
  const double capped = JobCapped(update.weight);
  if (capped < update.weight) {
    update.weight = capped;
    ++weight_capped_;
  }
}

double UpdateBound::NormBound() const {
  if (options_.fixed_norm > 0) return options_.fixed_norm;
  if (options_.norm_multiple > 0) return options_.norm_multiple * norms_.Get();
  return -1;  // none
}

double UpdateBound::WeightCap() const {
  if (options_.weight_multiple > 0) return options_.weight_multiple * weights_.Get();
  return -1;  // none
}

aggregation::Update UpdateBound::Bounded(Entry e, double norm_bound, double weight_cap) {
  aggregation::Update& u = e.update;
  if (norm_bound >= 0 && e.full_norm > norm_bound) {
    const double scale = norm_bound / e.full_norm;
    const float s = static_cast<float>(scale);
    for (aggregation::Tensor& t : u.tensors) {
      for (float& v : t.values) v = static_cast<float>(v * scale);
    }
    if (u.max_abs.has_value()) *u.max_abs *= static_cast<double>(s) * (1 + 1e-6);
    ++clipped_;
  }
  if (weight_cap > 0 && u.weight > weight_cap) {
    u.weight = weight_cap;
    ++weight_capped_;
  }
  return std::move(u);
}

std::vector<aggregation::Update> UpdateBound::Take(aggregation::Update update, double norm) {
  Entry e;
  e.full_norm = FullModelNorm(update, norm);
  e.key = update.weight * e.full_norm;
  norms_.Add(e.full_norm);
  weights_.Add(update.weight);
  std::vector<aggregation::Update> out;
  e.arrival = arrivals_++;
  e.update = std::move(update);
  if (!holds()) {
    out.push_back(Bounded(std::move(e), NormBound(), -1));
    return out;
  }
  held_.push_back(std::move(e));
  std::push_heap(held_.begin(), held_.end(), LargerKey());
  if (static_cast<int>(held_.size()) > options_.held_updates) {
    // The smallest pull leaves now, under the medians of every update seen so far.
    std::pop_heap(held_.begin(), held_.end(), LargerKey());
    Entry smallest = std::move(held_.back());
    held_.pop_back();
    ++released_early_;
    out.push_back(Bounded(std::move(smallest), NormBound(), WeightCap()));
  }
  return out;
}

std::vector<aggregation::Update> UpdateBound::Release() {
  final_norm_bound_ = std::max(0.0, NormBound());
  final_weight_cap_ = WeightCap();
  if (options_.max_weight > 0 &&
      (final_weight_cap_ <= 0 || final_weight_cap_ > static_cast<double>(options_.max_weight))) {
    final_weight_cap_ = static_cast<double>(options_.max_weight);
  }
  // In arrival order: a round whose updates were all held sums them in the order it would
  // have without the bound.
  std::sort(held_.begin(), held_.end(),
            [](const Entry& a, const Entry& b) { return a.arrival < b.arrival; });
  std::vector<aggregation::Update> out;
  out.reserve(held_.size());
  for (Entry& e : held_) out.push_back(Bounded(std::move(e), NormBound(), WeightCap()));
  held_.clear();
  if (options_.direction_check) CheckDirections(out);
  return out;
}

void UpdateBound::CheckDirections(std::vector<aggregation::Update>& updates) {
  if (updates.size() < 3) return;
  const std::vector<double> cosines = CosinesToCoordinateMedian(updates);
  std::vector<double> sorted = cosines;
  const size_t mid = (sorted.size() - 1) / 2;
  std::nth_element(sorted.begin(), sorted.begin() + mid, sorted.end());
  const double median = sorted[mid];
  if (!(median > 0)) return;  // no direction most updates agree on
  direction_threshold_ = options_.min_agreement * median;
  size_t kept = 0;
  for (size_t i = 0; i < updates.size(); ++i) {
    if (cosines[i] >= direction_threshold_) {
      if (kept != i) updates[kept] = std::move(updates[i]);
      ++kept;
      continue;
    }
    excluded_.push_back(Excluded{
        updates[i].client_id,
        absl::StrFormat("its direction goes against the round's: cosine %.3f with the "
                        "coordinate-wise median of the round's %d updates, whose median "
                        "cosine is %.3f: agreement %.2f, under robustness."
                        "min_direction_agreement %.2f",
                        cosines[i], static_cast<int>(updates.size()), median,
                        cosines[i] / median, options_.min_agreement)});
  }
  updates.resize(kept);
}

void UpdateBound::Report(v1::RobustnessRoundMetrics* m) const {
  m->set_norm_bound(final_norm_bound_);
  m->set_clipped(clipped_);
  m->set_weight_cap(std::max(0.0, final_weight_cap_));
  m->set_weight_capped(weight_capped_);
  m->set_released_early(released_early_);
  m->set_excluded(static_cast<int32_t>(excluded_.size()));
  m->set_direction_threshold(direction_threshold_);
}

}  // namespace fedge::server
