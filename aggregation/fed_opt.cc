#include "aggregation/fed_opt.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "aggregation/state_codec.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"

namespace fedge::aggregation {
namespace {

using internal::OpenState;
using internal::StateReader;
using internal::StateWriter;

// For each delta tensor, the model tensor of the same name and shape; checked before any
// change so that a mismatch leaves the model untouched.
absl::StatusOr<std::vector<Tensor*>> MatchTensors(absl::string_view who,
                                                  const ModelDelta& delta,
                                                  ModelWeights* model) {
  absl::flat_hash_map<std::string, Tensor*> by_name;
  for (Tensor& t : *model) by_name[t.name] = &t;
  std::vector<Tensor*> out;
  for (const Tensor& d : delta.tensors) {
    auto it = by_name.find(d.name);
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": delta tensor ", d.name, " is not in the model"));
    }
    Tensor* m = it->second;
    if (m->shape != d.shape || m->values.size() != d.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": delta tensor ", d.name, " has shape [", absl::StrJoin(d.shape, ","),
          "], the model's is [", absl::StrJoin(m->shape, ","), "]"));
    }
    if (d.held.has_value() && d.held->size() != static_cast<int64_t>(d.values.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": delta tensor ", d.name, " has a held mask of the wrong size"));
    }
    out.push_back(m);
  }
  return out;
}

inline bool Held(const Tensor& d, size_t i) {
  return !d.held.has_value() || d.held->held(static_cast<int64_t>(i));
}

constexpr absl::string_view kFedAvgMagic = "FEDGEAV1";
constexpr absl::string_view kAdaptiveMagic = "FEDGEAO1";

}  // namespace

absl::StatusOr<std::unique_ptr<FedAvg>> FedAvg::Create(const FedAvgOptions& options) {
  if (!(options.server_learning_rate > 0.0) || !std::isfinite(options.server_learning_rate)) {
    return absl::InvalidArgumentError(absl::StrCat("FedAvg: server_learning_rate is ",
                                                   options.server_learning_rate,
                                                   "; expected a positive finite number"));
  }
  return std::unique_ptr<FedAvg>(new FedAvg(options));
}

absl::Status FedAvg::Apply(const ModelDelta& delta, ModelWeights* model) {
  FEDGE_ASSIGN_OR_RETURN(std::vector<Tensor*> targets, MatchTensors("FedAvg", delta, model));
  const float eta = static_cast<float>(options_.server_learning_rate);
  for (size_t t = 0; t < delta.tensors.size(); ++t) {
    const Tensor& d = delta.tensors[t];
    float* x = targets[t]->values.data();
    // Coordinates nobody held carry Δ = 0, so x + η·0 leaves them unchanged bit for bit.
    if (eta == 1.0f) {
      for (size_t i = 0; i < d.values.size(); ++i) x[i] += d.values[i];
    } else {
      for (size_t i = 0; i < d.values.size(); ++i) x[i] += eta * d.values[i];
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FedAvg::SerializeState() const {
  StateWriter w;
  w.PutBytes(kFedAvgMagic.data(), kFedAvgMagic.size());
  return w.Finish();
}

absl::Status FedAvg::RestoreState(absl::string_view state) {
  FEDGE_ASSIGN_OR_RETURN(absl::string_view body, OpenState("FedAvg", kFedAvgMagic, state));
  if (!body.empty()) return absl::DataLossError("FedAvg: state has trailing bytes");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AdaptiveServerOptimizer>> AdaptiveServerOptimizer::Create(
    Rule rule, const AdaptiveOptions& options) {
  const char* who = rule == Rule::kAdam ? "FedAdam" : "FedYogi";
  auto bad = [&](const char* field, double value, const char* expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": ", field, " is ", value, "; expected ", expected));
  };
  if (!(options.server_learning_rate > 0.0) || !std::isfinite(options.server_learning_rate)) {
    return bad("server_learning_rate", options.server_learning_rate, "a positive number");
  }
  if (!(options.beta1 >= 0.0 && options.beta1 < 1.0)) return bad("beta1", options.beta1, "[0, 1)");
  if (!(options.beta2 >= 0.0 && options.beta2 < 1.0)) return bad("beta2", options.beta2, "[0, 1)");
  if (!(options.tau > 0.0) || !std::isfinite(options.tau)) {
    return bad("tau", options.tau, "a positive number");
  }
  if (!std::isfinite(options.initial_v)) {
    return bad("initial_v", options.initial_v, "a finite number (< 0 for tau^2)");
  }
  AdaptiveOptions o = options;
  if (o.initial_v < 0.0) o.initial_v = o.tau * o.tau;
  return std::unique_ptr<AdaptiveServerOptimizer>(new AdaptiveServerOptimizer(rule, o));
}

absl::Status AdaptiveServerOptimizer::Apply(const ModelDelta& delta, ModelWeights* model) {
  const std::string who(rule_ == Rule::kAdam ? "FedAdam" : "FedYogi");
  FEDGE_ASSIGN_OR_RETURN(std::vector<Tensor*> targets, MatchTensors(who, delta, model));
  for (const Tensor& d : delta.tensors) {
    auto it = moments_.find(d.name);
    if (it != moments_.end() && it->second.m.size() != d.values.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, ": delta tensor ", d.name, " has ", d.values.size(),
          " values, the optimizer state has ", it->second.m.size()));
    }
  }
  const double eta = options_.server_learning_rate, b1 = options_.beta1,
               b2 = options_.beta2, tau = options_.tau;
  for (size_t t = 0; t < delta.tensors.size(); ++t) {
    const Tensor& d = delta.tensors[t];
    Moments& mo = moments_[d.name];
    if (mo.m.empty() && !d.values.empty()) {
      mo.m.assign(d.values.size(), 0.0);
      mo.v.assign(d.values.size(), options_.initial_v);
    }
    float* x = targets[t]->values.data();
    for (size_t i = 0; i < d.values.size(); ++i) {
      if (!Held(d, i)) continue;
      const double delta_i = d.values[i];
      const double sq = delta_i * delta_i;
      double& m = mo.m[i];
      double& v = mo.v[i];
      m = b1 * m + (1.0 - b1) * delta_i;
      if (rule_ == Rule::kAdam) {
        v = b2 * v + (1.0 - b2) * sq;
      } else {
        const double diff = v - sq;
        const double sign = diff > 0.0 ? 1.0 : (diff < 0.0 ? -1.0 : 0.0);
        v = v - (1.0 - b2) * sq * sign;
      }
      x[i] = static_cast<float>(x[i] + eta * m / (std::sqrt(v) + tau));
    }
  }
  ++steps_;
  return absl::OkStatus();
}

const std::vector<double>* AdaptiveServerOptimizer::first_moment(
    const std::string& tensor) const {
  auto it = moments_.find(tensor);
  return it == moments_.end() ? nullptr : &it->second.m;
}

const std::vector<double>* AdaptiveServerOptimizer::second_moment(
    const std::string& tensor) const {
  auto it = moments_.find(tensor);
  return it == moments_.end() ? nullptr : &it->second.v;
}

absl::StatusOr<std::string> AdaptiveServerOptimizer::SerializeState() const {
  StateWriter w;
  w.PutBytes(kAdaptiveMagic.data(), kAdaptiveMagic.size());
  w.Put<uint8_t>(rule_ == Rule::kAdam ? 0 : 1);
  w.Put<int64_t>(steps_);
  w.Put<uint32_t>(static_cast<uint32_t>(moments_.size()));
  // Sorted by name so that equal states serialize to equal bytes.
  std::vector<const std::pair<const std::string, Moments>*> entries;
  for (const auto& e : moments_) entries.push_back(&e);
  std::sort(entries.begin(), entries.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  for (const auto* e : entries) {
    w.Put<uint32_t>(static_cast<uint32_t>(e->first.size()));
    w.PutBytes(e->first.data(), e->first.size());
    w.Put<uint64_t>(e->second.m.size());
    w.PutBytes(e->second.m.data(), e->second.m.size() * sizeof(double));
    w.PutBytes(e->second.v.data(), e->second.v.size() * sizeof(double));
  }
  return w.Finish();
}

absl::Status AdaptiveServerOptimizer::RestoreState(absl::string_view state) {
  const std::string who(rule_ == Rule::kAdam ? "FedAdam" : "FedYogi");
  FEDGE_ASSIGN_OR_RETURN(absl::string_view body, OpenState(who, kAdaptiveMagic, state));
  StateReader r(body);
  uint8_t rule;
  int64_t steps;
  uint32_t count;
  auto truncated = [&] { return absl::DataLossError(who + ": state is truncated"); };
  if (!r.Get(&rule) || !r.Get(&steps) || !r.Get(&count)) return truncated();
  if (rule != (rule_ == Rule::kAdam ? 0 : 1)) {
    return absl::DataLossError(who + ": state was written by the other adaptive rule");
  }
  absl::flat_hash_map<std::string, Moments> moments;
  for (uint32_t k = 0; k < count; ++k) {
    uint32_t name_len;
    uint64_t size;
    if (!r.Get(&name_len) || name_len > r.remaining()) return truncated();
    std::string name(name_len, '\0');
    if (!r.GetBytes(name.data(), name_len) || !r.Get(&size)) return truncated();
    if (size > r.remaining() / (2 * sizeof(double))) return truncated();
    Moments& mo = moments[name];
    mo.m.resize(size);
    mo.v.resize(size);
    r.GetBytes(mo.m.data(), size * sizeof(double));
    r.GetBytes(mo.v.data(), size * sizeof(double));
  }
  if (r.remaining() != 0) return absl::DataLossError(who + ": state has trailing bytes");
  steps_ = steps;
  moments_ = std::move(moments);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Strategy>> CreateFedAdam(const AdaptiveOptions& options) {
  FEDGE_ASSIGN_OR_RETURN(auto s, AdaptiveServerOptimizer::Create(
                                     AdaptiveServerOptimizer::Rule::kAdam, options));
  return std::unique_ptr<Strategy>(std::move(s));
}

absl::StatusOr<std::unique_ptr<Strategy>> CreateFedYogi(const AdaptiveOptions& options) {
  FEDGE_ASSIGN_OR_RETURN(auto s, AdaptiveServerOptimizer::Create(
                                     AdaptiveServerOptimizer::Rule::kYogi, options));
  return std::unique_ptr<Strategy>(std::move(s));
}

}  // namespace fedge::aggregation
