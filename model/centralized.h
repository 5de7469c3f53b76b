// Centralized (single-machine) training: the baseline that federated runs are measured
// against, and the recipe that meets the foundation's accuracy bar on Fashion-MNIST.
//
// Recipe: SGD with Nesterov momentum, L2 weight decay, one epoch of linear warm-up to the
// peak learning rate (at most a quarter of the run), then cosine decay to zero; seeded
// initialization and shuffling.
#ifndef FEDGE_MODEL_CENTRALIZED_H_
#define FEDGE_MODEL_CENTRALIZED_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "model/sequential.h"
#include "model/trainer.h"

namespace fedge::model {

struct CentralizedOptions {
  std::string architecture = "mlp";  // a name for ArchitectureByName
  ComputeMode mode = ComputeMode::kFp32;
  int epochs = 15;
  int batch_size = 64;
  float learning_rate = 0.05f;  // peak
  float momentum = 0.9f;        // Nesterov when > 0
  float weight_decay = 5e-4f;
  uint64_t seed = 1;
};

struct CentralizedEpoch {
  int epoch = 0;  // 1-based
  float learning_rate = 0;  // at the epoch's first step
  TrainEpochResult train;
  EvalResult test;
};

// Trains a new model on `train`, evaluating on `test` (in the same compute mode) after every
// epoch and reporting it to `on_epoch` (may be null). Returns the trained model.
absl::StatusOr<std::unique_ptr<Sequential>> TrainCentralized(
    const CentralizedOptions& options, const data::Dataset& train, const data::Dataset& test,
    const std::function<void(const CentralizedEpoch&)>& on_epoch);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_CENTRALIZED_H_
