// Server optimizers of "Adaptive Federated Optimization" (Reddi et al., ICLR 2021,
// Algorithm 2), with FedAvg as the plain case.
//
// Let Δ_t be the round's weighted mean client delta (ModelDelta; Δ = w_local − w_received,
// so the pseudo-gradient is g_t = −Δ_t). Per coordinate:
//   FedAvg:  x ← x + η·Δ_t                                   (η = 1: plain FedAvg)
//   FedAdam: m_t = β1·m_{t−1} + (1−β1)·Δ_t
//            v_t = β2·v_{t−1} + (1−β2)·Δ_t²
//            x ← x + η·m_t / (√v_t + τ)
//   FedYogi: m_t as FedAdam
//            v_t = v_{t−1} − (1−β2)·Δ_t²·sign(v_{t−1} − Δ_t²)
//            x ← x + η·m_t / (√v_t + τ)
// with m_{−1} = 0 and v_{−1} = initial_v (the paper requires v_{−1} ≥ τ²; default τ²). As in
// the paper, there is no bias correction. (Flower starts v at 0 instead: initial_v = 0 gives
// that.) Moments are kept in double; the model stays float. Moments are allocated at the
// first Apply, for the delta's tensors; coordinates no client held (sub-models) are skipped:
// neither x nor m, v change there.
//
// Defaults follow the paper's and Flower's: FedAdam/FedYogi η = 1e-2, β1 = 0.9, β2 = 0.99,
// τ = 1e-3.
#ifndef FEDGE_AGGREGATION_FED_OPT_H_
#define FEDGE_AGGREGATION_FED_OPT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aggregation/strategy.h"

namespace fedge::aggregation {

struct FedAvgOptions {
  double server_learning_rate = 1.0;  // η > 0
};

class FedAvg final : public Strategy {
 public:
  // Errors: kInvalidArgument for η ≤ 0 or non-finite.
  static absl::StatusOr<std::unique_ptr<FedAvg>> Create(const FedAvgOptions& options = {});

  absl::string_view name() const override { return "fedavg"; }
  absl::Status Apply(const ModelDelta& delta, ModelWeights* model) override;
  absl::StatusOr<std::string> SerializeState() const override;
  absl::Status RestoreState(absl::string_view state) override;

 private:
  explicit FedAvg(const FedAvgOptions& options) : options_(options) {}
  FedAvgOptions options_;
};

struct AdaptiveOptions {
  double server_learning_rate = 1e-2;  // η > 0
  double beta1 = 0.9;                  // [0, 1)
  double beta2 = 0.99;                 // [0, 1)
  double tau = 1e-3;                   // > 0, adaptivity
  double initial_v = -1.0;             // v_{−1}; < 0 means τ²
};

// FedAdam and FedYogi: one class, the second-moment rule chosen at creation.
class AdaptiveServerOptimizer final : public Strategy {
 public:
  enum class Rule { kAdam, kYogi };

  // Errors: kInvalidArgument naming the option out of range.
  static absl::StatusOr<std::unique_ptr<AdaptiveServerOptimizer>> Create(
      Rule rule, const AdaptiveOptions& options = {});

  absl::string_view name() const override {
    return rule_ == Rule::kAdam ? "fedadam" : "fedyogi";
  }
  absl::Status Apply(const ModelDelta& delta, ModelWeights* model) override;
  absl::StatusOr<std::string> SerializeState() const override;
  absl::Status RestoreState(absl::string_view state) override;

  int64_t steps() const { return steps_; }
  // The moments of one tensor (nullptr before the first Apply that saw it), for tests.
  const std::vector<double>* first_moment(const std::string& tensor) const;
  const std::vector<double>* second_moment(const std::string& tensor) const;

 private:
  struct Moments {
    std::vector<double> m;
    std::vector<double> v;
  };
  AdaptiveServerOptimizer(Rule rule, const AdaptiveOptions& options)
      : rule_(rule), options_(options) {}

  Rule rule_;
  AdaptiveOptions options_;
  int64_t steps_ = 0;
  absl::flat_hash_map<std::string, Moments> moments_;
};

// Convenience factories.
absl::StatusOr<std::unique_ptr<Strategy>> CreateFedAdam(const AdaptiveOptions& options = {});
absl::StatusOr<std::unique_ptr<Strategy>> CreateFedYogi(const AdaptiveOptions& options = {});

}  // namespace fedge::aggregation

#endif  // FEDGE_AGGREGATION_FED_OPT_H_
