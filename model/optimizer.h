// Optimizers over a fixed list of parameters (the same list, in the same order, on every
// Step). Update rules follow PyTorch's torch.optim.SGD and torch.optim.Adam so that
// hyper-parameters carry over. Each Step bumps every trainable parameter's version and leaves
// parameters with trainable == false (batch norm's running statistics) untouched.
#ifndef FEDGE_MODEL_OPTIMIZER_H_
#define FEDGE_MODEL_OPTIMIZER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "model/layer.h"

namespace fedge::model {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Applies one update from each parameter's grad. REQUIRES: the same parameter list as the
  // first call.
  virtual void Step(const std::vector<Parameter*>& params) = 0;
  // Forgets the running state (momentum, moments).
  virtual void Reset() = 0;
  float learning_rate() const { return lr_; }
  void set_learning_rate(float lr) { lr_ = lr; }

 protected:
  explicit Optimizer(float lr) : lr_(lr) {}
  float lr_;
};

struct SgdOptions {
  float learning_rate = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

// v ← μ·v + (g + wd·w);  w ← w − lr·(nesterov ? g + wd·w + μ·v : v)
class Sgd final : public Optimizer {
 public:
  static absl::StatusOr<std::unique_ptr<Sgd>> Create(const SgdOptions& options);
  void Step(const std::vector<Parameter*>& params) override;
  void Reset() override { velocity_.clear(); }

 private:
  explicit Sgd(const SgdOptions& o) : Optimizer(o.learning_rate), options_(o) {}
  SgdOptions options_;
  std::vector<std::vector<float>> velocity_;
};

struct AdamOptions {
  float learning_rate = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  float weight_decay = 0.0f;  // L2 added to the gradient, as torch.optim.Adam
};

class Adam final : public Optimizer {
 public:
  // The running state, for checkpoints: the step count and the first and second moment
  // estimates, one vector per parameter in the order Step is given them (empty before the
  // first Step).
  struct State {
    int64_t step = 0;
    std::vector<std::vector<float>> m, v;
  };

  static absl::StatusOr<std::unique_ptr<Adam>> Create(const AdamOptions& options);
  void Step(const std::vector<Parameter*>& params) override;
  void Reset() override;

  const State& state() const { return state_; }
  // Resumes from a checkpointed state. Errors (kInvalidArgument, state unchanged): step < 0,
  // m and v of different shapes, moments without a step or a step without moments. The next
  // Step REQUIRES parameters of the moments' sizes (or, with empty moments, any).
  absl::Status RestoreState(State state);

 private:
  explicit Adam(const AdamOptions& o) : Optimizer(o.learning_rate), options_(o) {}
  AdamOptions options_;
  State state_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_OPTIMIZER_H_
