// Local training and evaluation loops over a data::Dataset: what a device (or the
// centralized baseline) runs. Transport-free.
#ifndef FEDGE_MODEL_TRAINER_H_
#define FEDGE_MODEL_TRAINER_H_

#include <cstdint>
#include <functional>

#include "data/batcher.h"
#include "data/dataset.h"
#include "model/optimizer.h"
#include "model/sequential.h"

namespace fedge::model {

struct EvalResult {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // fraction of arg-max hits
  int64_t examples = 0;
};

// Mean loss and accuracy of `net` over `data` (inference mode, batches of `batch_size`).
// REQUIRES: data's feature size == net.input_size() and num_classes == net.output_size().
EvalResult Evaluate(Sequential& net, const data::Dataset& data, ComputeMode mode,
                    int batch_size = 500);

struct TrainEpochOptions {
  ComputeMode mode = ComputeMode::kFp32;
  // Called before every step with the global step index (counted by the caller's
  // `*global_step`); returns the learning rate to use. Null keeps the optimizer's rate.
  std::function<float(int64_t)> learning_rate;
};

struct TrainEpochResult {
  double loss = 0;      // mean training loss over the epoch's examples
  double accuracy = 0;  // training accuracy (of the forward passes as they ran)
  int64_t examples = 0;
  double seconds = 0;
};

// One pass over the batcher's current epoch with softmax cross-entropy, then advances the
// batcher to its next epoch. `global_step` is incremented once per step.
TrainEpochResult TrainEpoch(Sequential& net, Optimizer& optimizer, data::Batcher& batcher,
                            const TrainEpochOptions& options, int64_t* global_step);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_TRAINER_H_
