#include "server/update_bound.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "aggregation/robust_aggregators.h"

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

// A tensor's medians for a block of kLanes coordinates at a time, when every update holds
// the whole tensor: each update's values of the block side by side, sorted per lane by the
// merge-exchange network (min/max over the lanes vectorize), the middle read off.
constexpr int kLanes = 64;

// Sorts each of the kLanes columns of `block` (rows of kLanes values) by the network's
// compare-exchanges. Built for AVX-512 and AVX2 beside the baseline and chosen at load time
// (GCC's target_clones) where the compiler supports it: min/max over 16 lanes at a time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void SortLanes(float* block, const std::pair<int, int>* network, size_t count) {
  // 16 floats as one value (GCC's vector extension; unaligned): the compare-exchange is two
  // selects per 16 lanes in whatever vector width the clone has. Values are finite.
  typedef float Lanes16 __attribute__((vector_size(64), aligned(4)));
  static_assert(kLanes % 16 == 0, "whole vectors per row");
  for (size_t c = 0; c < count; ++c) {
    Lanes16* x = reinterpret_cast<Lanes16*>(block + static_cast<size_t>(network[c].first) * kLanes);
    Lanes16* y = reinterpret_cast<Lanes16*>(block + static_cast<size_t>(network[c].second) * kLanes);
    for (int k = 0; k < kLanes / 16; ++k) {
      const Lanes16 a = x[k], b = y[k];
      const auto less = a < b;
      x[k] = less ? a : b;
      y[k] = less ? b : a;
    }
  }
}

void AddFullyHeldTensor(const std::vector<aggregation::Update>& updates, size_t t,
                        const std::vector<std::pair<int, int>>& network, std::vector<double>& dot,
                        std::vector<double>& self, std::vector<double>& median) {
  const size_t n = updates.size();
  const int64_t size = static_cast<int64_t>(updates[0].tensors[t].values.size());
  const size_t mid = (n - 1) / 2;
  std::vector<float> block(n * kLanes, 0.0f);
  double m[kLanes];
  for (int64_t j0 = 0; j0 < size; j0 += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, size - j0));
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&block[i * kLanes], updates[i].tensors[t].values.data() + j0,
                  static_cast<size_t>(lanes) * sizeof(float));
    }
    // Lanes past `lanes` hold stale values: sorted, unused.
    SortLanes(block.data(), network.data(), network.size());
    double mm = 0;
    for (int l = 0; l < lanes; ++l) {
      const double lo = block[mid * kLanes + l];
      m[l] = n % 2 == 1 ? lo : 0.5 * (lo + static_cast<double>(block[(mid + 1) * kLanes + l]));
      mm += m[l] * m[l];
    }
    for (size_t i = 0; i < n; ++i) {
      const float* v = updates[i].tensors[t].values.data() + j0;
      double d = 0, s = 0;
      for (int l = 0; l < lanes; ++l) {
        const double x = v[l];
        d += x * m[l];
        s += x * x;
      }
      dot[i] += d;
      self[i] += s;
      median[i] += mm;
    }
  }
}

}  // namespace

std::vector<std::pair<int, int>> MergeExchangeNetwork(int n) {
  // Knuth, TAOCP vol. 3, 5.2.2, Algorithm M (Batcher's merge exchange), 0-indexed.
  std::vector<std::pair<int, int>> network;
  if (n < 2) return network;
  int t = 0;
  while ((1 << t) < n) ++t;
  for (int p = 1 << (t - 1); p > 0; p >>= 1) {
    int q = 1 << (t - 1), r = 0, d = p;
    while (true) {
      for (int i = 0; i < n - d; ++i) {
        if ((i & p) == r) network.emplace_back(i, i + d);
      }
      if (q == p) break;
      d = q - p;
      q >>= 1;
      r = p;
    }
  }
  return network;
}

std::vector<double> CosinesToCoordinateMedian(const std::vector<aggregation::Update>& updates) {
  const size_t n = updates.size();
  std::vector<double> dot(n, 0.0), self(n, 0.0), median(n, 0.0);
  const std::vector<std::pair<int, int>> network = MergeExchangeNetwork(static_cast<int>(n));
  std::vector<float> column;
  column.reserve(n);
  for (size_t t = 0; n > 0 && t < updates[0].tensors.size(); ++t) {
    bool masked = false;
    for (const aggregation::Update& u : updates) masked |= u.tensors[t].held.has_value();
    if (!masked) {
      AddFullyHeldTensor(updates, t, network, dot, self, median);
      continue;
    }
    // Sub-model updates: each coordinate over its holders.
    const int64_t size = static_cast<int64_t>(updates[0].tensors[t].values.size());
    for (int64_t j = 0; j < size; ++j) {
      column.clear();
      for (const aggregation::Update& u : updates) {
        const aggregation::Tensor& x = u.tensors[t];
        if (!x.held.has_value() || x.held->held(j)) column.push_back(x.values[j]);
      }
      if (column.empty()) continue;
      const double m = aggregation::Median(column);
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
