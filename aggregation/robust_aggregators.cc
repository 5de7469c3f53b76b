#include "aggregation/robust_aggregators.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "aggregation/state_codec.h"
#include "base/status_macros.h"

namespace fedge::aggregation {
namespace {

using internal::StateReader;
using internal::StateWriter;

constexpr char kMagic[] = "FEDGERA1";
constexpr uint32_t kVersion = 1;

bool SameOptions(const RobustRuleOptions& a, const RobustRuleOptions& b) {
  return a.rule == b.rule && a.trim_fraction == b.trim_fraction && a.byzantine == b.byzantine &&
         a.selected == b.selected;
}

// The mean of `v` without its ⌊β·h⌋ smallest and largest values, reordering it.
double Trimmed(std::vector<float>& v, double beta) {
  const int64_t h = static_cast<int64_t>(v.size());
  const int64_t t = static_cast<int64_t>(std::floor(beta * static_cast<double>(h) + 1e-9));
  if (t > 0) {
    std::nth_element(v.begin(), v.begin() + t, v.end());
    std::nth_element(v.begin() + t, v.end() - t, v.end());
  }
  double sum = 0;
  for (int64_t k = t; k < h - t; ++k) sum += v[k];
  return sum / static_cast<double>(h - 2 * t);
}

// A Strategy whose aggregator is a robust rule; everything else is `inner`'s.
class RobustRuleStrategy final : public Strategy {
 public:
  RobustRuleStrategy(std::unique_ptr<Strategy> inner, RobustRuleOptions options)
      : inner_(std::move(inner)), options_(options) {}

  absl::string_view name() const override { return inner_->name(); }
  absl::StatusOr<std::unique_ptr<Aggregator>> CreateAggregator(
      const std::vector<TensorSpec>& specs) const override {
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<RobustAggregator> agg,
                           CreateRobustAggregator(specs, options_));
    return std::unique_ptr<Aggregator>(std::move(agg));
  }
  absl::Status Apply(const ModelDelta& delta, ModelWeights* model) override {
    return inner_->Apply(delta, model);
  }
  bool KeepsClientUpdates() const override { return inner_->KeepsClientUpdates(); }
  absl::Status ServerTrainingStep(absl::Span<const Update* const> updates,
                                  ModelWeights* model) override {
    return inner_->ServerTrainingStep(updates, model);
  }
  absl::Status CheckUpdateTensor(absl::string_view client_id,
                                 absl::string_view name) const override {
    return inner_->CheckUpdateTensor(client_id, name);
  }
  absl::Status CheckUpdate(const Update& update, const ModelWeights& broadcast) const override {
    return inner_->CheckUpdate(update, broadcast);
  }
  void ReportRound(const DeviceEvaluation& devices, v1::RoundMetrics* metrics) const override {
    inner_->ReportRound(devices, metrics);
  }
  absl::StatusOr<std::string> SerializeState() const override { return inner_->SerializeState(); }
  absl::Status RestoreState(absl::string_view state) override {
    return inner_->RestoreState(state);
  }

 private:
  std::unique_ptr<Strategy> inner_;
  const RobustRuleOptions options_;
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Held updates

RobustAggregator::RobustAggregator(absl::string_view name, std::vector<TensorSpec> specs,
                                   RobustRuleOptions options)
    : name_(name), specs_(std::move(specs)), options_(options) {
  for (size_t s = 0; s < specs_.size(); ++s) index_[specs_[s].name] = static_cast<int>(s);
}

absl::Status RobustAggregator::CheckCreate(absl::string_view name,
                                           const std::vector<TensorSpec>& specs,
                                           const RobustRuleOptions& o) {
  absl::flat_hash_map<std::string, int> seen;
  for (const TensorSpec& spec : specs) {
    if (spec.name.empty() || !seen.emplace(spec.name, 0).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": tensor names must be unique and non-empty ('", spec.name, "')"));
    }
    int64_t size = 1;
    for (int64_t d : spec.shape) {
      if (d < 0 || (d > 0 && size > (int64_t{1} << 40) / d)) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": tensor ", spec.name,
                                                       " has an impossible shape ",
                                                       ShapeString(spec.shape)));
      }
      size *= d;
    }
  }
  if (!(o.trim_fraction >= 0 && o.trim_fraction < 0.5) || o.byzantine < 0 || o.selected < 0 ||
      o.max_updates < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": options out of range (trim_fraction ", o.trim_fraction, " must be in [0, 0.5), "
        "byzantine ", o.byzantine, " and selected ", o.selected, " >= 0, max_updates ",
        o.max_updates, " >= 1)"));
  }
  return absl::OkStatus();
}

absl::Status RobustAggregator::Check(const Update& update, int position,
                                     std::vector<int>* order, double* max_abs) const {
  const std::string who = DescribeUpdate(update, position);
  if (!(update.weight > 0.0) || !std::isfinite(update.weight)) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", who, " has weight ",
                                                   update.weight,
                                                   "; expected a positive, finite count"));
  }
  order->assign(specs_.size(), -1);
  for (size_t t = 0; t < update.tensors.size(); ++t) {
    const Tensor& tensor = update.tensors[t];
    auto it = index_.find(tensor.name);
    if (it == index_.end() || (*order)[it->second] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": ", who, ": tensor ", tensor.name.substr(0, 64),
          it == index_.end() ? " is unknown" : " appears twice"));
    }
    const TensorSpec& spec = specs_[it->second];
    if (tensor.shape != spec.shape ||
        static_cast<int64_t>(tensor.values.size()) != spec.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": ", who, ": tensor ", tensor.name, " has shape ", ShapeString(tensor.shape),
          " and ", tensor.values.size(), " values, expected ", ShapeString(spec.shape)));
    }
    if (tensor.held.has_value() &&
        (tensor.held->size() != spec.size() ||
         tensor.held->words().size() != static_cast<size_t>((spec.size() + 63) / 64))) {
      return absl::InvalidArgumentError(absl::StrCat(
          name_, ": ", who, ": tensor ", tensor.name, " has a held-coordinate mask over ",
          tensor.held->size(), " coordinates, expected ", spec.size()));
    }
    (*order)[it->second] = static_cast<int>(t);
  }
  for (size_t s = 0; s < specs_.size(); ++s) {
    if ((*order)[s] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": ", who, ": missing tensor ", specs_[s].name));
    }
  }
  double bound = 0;
  for (const Tensor& tensor : update.tensors) {
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      if (tensor.held.has_value() && !tensor.held->held(static_cast<int64_t>(i))) continue;
      const float v = tensor.values[i];
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(absl::StrCat(name_, ": ", who, ": tensor ",
                                                       tensor.name, " has a non-finite value (",
                                                       v, ") at coordinate ", i));
      }
      bound = std::max<double>(bound, std::fabs(v));
    }
  }
  if (max_abs != nullptr) *max_abs = bound;
  return absl::OkStatus();
}

absl::Status RobustAggregator::Validate(const Update& update, double* max_abs) const {
  std::vector<int> order;
  return Check(update, -1, &order, max_abs);
}

absl::Status RobustAggregator::Accumulate(const Update& update) {
  const Update* one[] = {&update};
  return AccumulateBatch(one);
}

absl::Status RobustAggregator::AccumulateBatch(absl::Span<const Update* const> updates,
                                               const AccumulateOptions&) {
  const bool lone = updates.size() == 1;
  std::vector<std::vector<int>> order(updates.size());
  for (size_t b = 0; b < updates.size(); ++b) {
    FEDGE_RETURN_IF_ERROR(
        Check(*updates[b], lone ? -1 : static_cast<int>(b), &order[b], nullptr));
  }
  if (static_cast<int64_t>(held_.size() + updates.size()) > options_.max_updates) {
    return absl::ResourceExhaustedError(absl::StrCat(
        name_, ": the round already holds ", held_.size(), " updates; at most ",
        options_.max_updates, " fit its memory bound"));
  }
  for (size_t b = 0; b < updates.size(); ++b) {
    const Update& u = *updates[b];
    Held h;
    h.client_id = u.client_id;
    h.weight = u.weight;
    for (size_t s = 0; s < specs_.size(); ++s) {
      const Tensor& t = u.tensors[order[b][s]];
      h.values.push_back(t.values);
      h.held.push_back(t.held);
    }
    held_.push_back(std::move(h));
  }
  return absl::OkStatus();
}

absl::Status RobustAggregator::MergeWith(Aggregator&& other) {
  auto* o = dynamic_cast<RobustAggregator*>(&other);
  if (o == nullptr || o == this || !SameOptions(o->options_, options_) || o->specs_ != specs_) {
    return absl::InvalidArgumentError(absl::StrCat(
        name_, ": can only merge another, distinct ", name_, " with the same parameters and "
        "tensor specs"));
  }
  if (static_cast<int64_t>(held_.size() + o->held_.size()) > options_.max_updates) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name_, ": merged, the round would hold more than ", options_.max_updates,
                     " updates"));
  }
  for (Held& h : o->held_) held_.push_back(std::move(h));
  o->held_.clear();
  return absl::OkStatus();
}

ModelDelta RobustAggregator::EmptyDelta() const {
  ModelDelta delta;
  delta.num_updates = num_updates();
  for (size_t s = 0; s < specs_.size(); ++s) {
    Tensor t;
    t.name = specs_[s].name;
    t.shape = specs_[s].shape;
    t.values.assign(static_cast<size_t>(specs_[s].size()), 0.0f);
    delta.tensors.push_back(std::move(t));
  }
  return delta;
}

absl::StatusOr<std::string> RobustAggregator::Serialize() const {
  StateWriter w;
  w.PutBytes(kMagic, 8);
  w.Put<uint32_t>(kVersion);
  w.Put<uint8_t>(static_cast<uint8_t>(options_.rule));
  w.Put<double>(options_.trim_fraction);
  w.Put<int32_t>(options_.byzantine);
  w.Put<int32_t>(options_.selected);
  w.Put<int64_t>(options_.max_updates);
  w.Put<uint32_t>(static_cast<uint32_t>(specs_.size()));
  for (const TensorSpec& spec : specs_) {
    w.Put<uint32_t>(static_cast<uint32_t>(spec.name.size()));
    w.PutBytes(spec.name.data(), spec.name.size());
    w.Put<uint32_t>(static_cast<uint32_t>(spec.shape.size()));
    for (int64_t d : spec.shape) w.Put<int64_t>(d);
  }
  w.Put<uint64_t>(held_.size());
  for (const Held& h : held_) {
    w.Put<uint32_t>(static_cast<uint32_t>(h.client_id.size()));
    w.PutBytes(h.client_id.data(), h.client_id.size());
    w.Put<double>(h.weight);
    for (size_t s = 0; s < specs_.size(); ++s) {
      w.Put<uint8_t>(h.held[s].has_value() ? 1 : 0);
      w.PutBytes(h.values[s].data(), h.values[s].size() * sizeof(float));
      if (h.held[s].has_value()) {
        const std::vector<uint64_t>& words = h.held[s]->words();
        w.PutBytes(words.data(), words.size() * sizeof(uint64_t));
      }
    }
  }
  return w.Finish();
}

namespace {

absl::Status Truncated() {
  return absl::DataLossError("RobustAggregator: serialized state is truncated");
}

absl::StatusOr<std::vector<TensorSpec>> ReadSpecs(StateReader& r) {
  uint32_t count;
  if (!r.Get(&count) || count > r.remaining() / 8) return Truncated();
  std::vector<TensorSpec> specs(count);
  for (TensorSpec& spec : specs) {
    uint32_t len, rank;
    if (!r.Get(&len) || len > r.remaining()) return Truncated();
    spec.name.resize(len);
    if (!r.GetBytes(spec.name.data(), len) || !r.Get(&rank)) return Truncated();
    if (rank > 16) return absl::InvalidArgumentError("RobustAggregator: a tensor of rank > 16");
    spec.shape.resize(rank);
    for (int64_t& d : spec.shape) {
      if (!r.Get(&d)) return Truncated();
    }
  }
  return specs;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RobustAggregator>> DeserializeRobustAggregator(
    absl::string_view state) {
  FEDGE_ASSIGN_OR_RETURN(absl::string_view body,
                         internal::OpenState("RobustAggregator", absl::string_view(kMagic, 8),
                                             state));
  StateReader r(body);
  uint32_t version;
  uint8_t rule;
  RobustRuleOptions o;
  if (!r.Get(&version) || !r.Get(&rule) || !r.Get(&o.trim_fraction) || !r.Get(&o.byzantine) ||
      !r.Get(&o.selected) || !r.Get(&o.max_updates)) {
    return Truncated();
  }
  if (version != kVersion || rule > 2) {
    return absl::DataLossError(absl::StrCat("RobustAggregator: state has version ", version,
                                            " and rule ", rule, "; expected version ",
                                            kVersion, " and a rule of 0-2"));
  }
  o.rule = static_cast<RobustRuleOptions::Rule>(rule);
  FEDGE_ASSIGN_OR_RETURN(std::vector<TensorSpec> specs, ReadSpecs(r));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<RobustAggregator> agg, CreateRobustAggregator(specs, o));
  uint64_t n;
  if (!r.Get(&n) || n > r.remaining()) return Truncated();
  for (uint64_t k = 0; k < n; ++k) {
    Update u;
    uint32_t len;
    if (!r.Get(&len) || len > r.remaining()) return Truncated();
    u.client_id.resize(len);
    if (!r.GetBytes(u.client_id.data(), len) || !r.Get(&u.weight)) return Truncated();
    for (const TensorSpec& spec : specs) {
      Tensor t{spec.name, spec.shape, {}, std::nullopt};
      const uint64_t size = static_cast<uint64_t>(spec.size());
      uint8_t masked;
      if (!r.Get(&masked) || size > r.remaining() / sizeof(float)) return Truncated();
      t.values.resize(size);
      r.GetBytes(t.values.data(), size * sizeof(float));
      if (masked != 0) {
        std::vector<uint64_t> words((size + 63) / 64);
        if (!r.GetBytes(words.data(), words.size() * sizeof(uint64_t))) return Truncated();
        FEDGE_ASSIGN_OR_RETURN(t.held, CoordinateMask::FromWords(spec.size(), std::move(words)));
      }
      u.tensors.push_back(std::move(t));
    }
    FEDGE_RETURN_IF_ERROR(agg->Accumulate(u));  // checks what it restores
  }
  if (r.remaining() != 0) {
    return absl::DataLossError("RobustAggregator: serialized state has trailing bytes");
  }
  return agg;
}

double Median(std::vector<float>& v) {
  // The upper middle, and for an even count the lower middle (the largest below it).
  const size_t h = v.size();
  const size_t mid = h / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double upper = v[mid];
  if (h % 2 == 1) return upper;
  const double lower = *std::max_element(v.begin(), v.begin() + mid);
  return (lower + upper) / 2;
}

absl::StatusOr<std::unique_ptr<RobustAggregator>> CreateRobustAggregator(
    std::vector<TensorSpec> specs, const RobustRuleOptions& options) {
  switch (options.rule) {
    case RobustRuleOptions::Rule::kCoordinateMedian: {
      FEDGE_ASSIGN_OR_RETURN(auto a, CoordinateMedian::Create(std::move(specs), options));
      return std::unique_ptr<RobustAggregator>(std::move(a));
    }
    case RobustRuleOptions::Rule::kTrimmedMean: {
      FEDGE_ASSIGN_OR_RETURN(auto a, TrimmedMean::Create(std::move(specs), options));
      return std::unique_ptr<RobustAggregator>(std::move(a));
    }
    case RobustRuleOptions::Rule::kMultiKrum: {
      FEDGE_ASSIGN_OR_RETURN(auto a, MultiKrum::Create(std::move(specs), options));
      return std::unique_ptr<RobustAggregator>(std::move(a));
    }
  }
  return absl::InvalidArgumentError("RobustAggregator: unknown rule");
}

std::unique_ptr<Strategy> WithRobustRule(std::unique_ptr<Strategy> inner,
                                         RobustRuleOptions options) {
  return std::make_unique<RobustRuleStrategy>(std::move(inner), options);
}

// ---------------------------------------------------------------------------------------
// The rules

namespace {

// For every coordinate some update held: `combine` over the values of its holders, in
// held_ order. Coordinates nobody held stay 0 and out of the tensor's `held` mask.
template <typename Held, typename Combine>
void PerCoordinate(const std::vector<TensorSpec>& specs, const std::vector<const Held*>& updates,
                   ModelDelta& delta, Combine combine) {
  std::vector<float> vals;
  vals.reserve(updates.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    Tensor& out = delta.tensors[s];
    const int64_t size = specs[s].size();
    bool all_dense = true;
    for (const Held* h : updates) all_dense = all_dense && !h->held[s].has_value();
    CoordinateMask covered(size);
    for (int64_t i = 0; i < size; ++i) {
      vals.clear();
      for (const Held* h : updates) {
        if (!h->held[s].has_value() || h->held[s]->held(i)) vals.push_back(h->values[s][i]);
      }
      if (vals.empty()) continue;
      covered.Set(i);
      out.values[i] = static_cast<float>(combine(vals));
    }
    if (!all_dense) out.held = std::move(covered);
  }
}

absl::Status NothingToReport(absl::string_view name) {
  return absl::FailedPreconditionError(
      absl::StrCat(name, ": Report with no accumulated updates (the round has no survivors)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinateMedian>> CoordinateMedian::Create(
    std::vector<TensorSpec> specs, RobustRuleOptions options) {
  options.rule = RobustRuleOptions::Rule::kCoordinateMedian;
  FEDGE_RETURN_IF_ERROR(CheckCreate("CoordinateMedian", specs, options));
  return std::unique_ptr<CoordinateMedian>(
      new CoordinateMedian("CoordinateMedian", std::move(specs), options));
}

absl::StatusOr<ModelDelta> CoordinateMedian::Report() && {
  if (held_.empty()) return NothingToReport(name_);
  ModelDelta delta = EmptyDelta();
  std::vector<const Held*> all;
  for (const Held& h : held_) all.push_back(&h);
  PerCoordinate(specs_, all, delta, [](std::vector<float>& v) { return Median(v); });
  delta.total_weight = static_cast<double>(held_.size());
  held_.clear();
  return delta;
}

absl::StatusOr<std::unique_ptr<TrimmedMean>> TrimmedMean::Create(std::vector<TensorSpec> specs,
                                                                  RobustRuleOptions options) {
  options.rule = RobustRuleOptions::Rule::kTrimmedMean;
  FEDGE_RETURN_IF_ERROR(CheckCreate("TrimmedMean", specs, options));
  return std::unique_ptr<TrimmedMean>(new TrimmedMean("TrimmedMean", std::move(specs), options));
}

absl::StatusOr<ModelDelta> TrimmedMean::Report() && {
  if (held_.empty()) return NothingToReport(name_);
  ModelDelta delta = EmptyDelta();
  std::vector<const Held*> all;
  for (const Held& h : held_) all.push_back(&h);
  const double beta = options_.trim_fraction;
  PerCoordinate(specs_, all, delta, [beta](std::vector<float>& v) { return Trimmed(v, beta); });
  delta.total_weight = static_cast<double>(held_.size());
  held_.clear();
  return delta;
}

absl::StatusOr<std::unique_ptr<MultiKrum>> MultiKrum::Create(std::vector<TensorSpec> specs,
                                                             RobustRuleOptions options) {
  options.rule = RobustRuleOptions::Rule::kMultiKrum;
  FEDGE_RETURN_IF_ERROR(CheckCreate("MultiKrum", specs, options));
  return std::unique_ptr<MultiKrum>(new MultiKrum("MultiKrum", std::move(specs), options));
}

namespace {

// Krum's squared distance between two held updates over the coordinates both held,
// rescaled to `total` coordinates; infinity when they share none.
template <typename Held>
double KrumDistance(const Held& a, const Held& b, const std::vector<TensorSpec>& specs,
                    int64_t total) {
  double sq = 0;
  int64_t common = 0;
  for (size_t s = 0; s < specs.size(); ++s) {
    const float* x = a.values[s].data();
    const float* y = b.values[s].data();
    const int64_t size = specs[s].size();
    const bool dense = !a.held[s].has_value() && !b.held[s].has_value();
    for (int64_t i = 0; i < size; ++i) {
      if (!dense && !((!a.held[s].has_value() || a.held[s]->held(i)) &&
                      (!b.held[s].has_value() || b.held[s]->held(i)))) {
        continue;
      }
      const double d = static_cast<double>(x[i]) - y[i];
      sq += d * d;
      ++common;
    }
  }
  if (common == 0) return std::numeric_limits<double>::infinity();
  return sq * static_cast<double>(total) / static_cast<double>(common);
}

}  // namespace

absl::StatusOr<ModelDelta> MultiKrum::Report() && {
  const int64_t n = static_cast<int64_t>(held_.size());
  const int64_t f = options_.byzantine;
  if (n == 0) return NothingToReport(name_);
  if (n <= 2 * f + 2) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MultiKrum: the round has ", n, " updates; with f = ", f,
        " assumed Byzantine it needs more than 2f + 2 = ", 2 * f + 2));
  }
  int64_t total = 0;
  for (const TensorSpec& spec : specs_) total += spec.size();
  std::vector<double> dist(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      dist[i * n + j] = dist[j * n + i] = KrumDistance(held_[i], held_[j], specs_, total);
    }
  }
  // Score: the sum of the n − f − 2 smallest distances to the others.
  const int64_t neighbours = n - f - 2;
  std::vector<double> score(n);
  std::vector<double> row;
  for (int64_t i = 0; i < n; ++i) {
    row.clear();
    for (int64_t j = 0; j < n; ++j) {
      if (j != i) row.push_back(dist[i * n + j]);
    }
    std::nth_element(row.begin(), row.begin() + (neighbours - 1), row.end());
    score[i] = std::accumulate(row.begin(), row.begin() + neighbours, 0.0);
  }
  // The m lowest scores; ties go to the smaller client id (arrival order decides nothing).
  std::vector<int64_t> rank(n);
  std::iota(rank.begin(), rank.end(), 0);
  std::sort(rank.begin(), rank.end(), [&](int64_t a, int64_t b) {
    if (score[a] != score[b]) return score[a] < score[b];
    return held_[a].client_id < held_[b].client_id;
  });
  const int64_t m = options_.selected > 0 ? std::min<int64_t>(options_.selected, n - f) : n - f;
  std::vector<const Held*> chosen;
  selected_.clear();
  for (int64_t k = 0; k < m; ++k) {
    chosen.push_back(&held_[rank[k]]);
    selected_.push_back(held_[rank[k]].client_id);
  }
  ModelDelta delta = EmptyDelta();
  PerCoordinate(specs_, chosen, delta, [](std::vector<float>& v) {
    double sum = 0;
    for (float x : v) sum += x;
    return sum / static_cast<double>(v.size());
  });
  delta.total_weight = static_cast<double>(m);
  held_.clear();
  return delta;
}

}  // namespace fedge::aggregation
