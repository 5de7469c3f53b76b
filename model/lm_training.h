// Training and evaluation loops of the language model (model/transformer.h) on token
// windows (data/token_windows.h): the central pre-training's, and the device's.
#ifndef FEDGE_MODEL_LM_TRAINING_H_
#define FEDGE_MODEL_LM_TRAINING_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "data/token_windows.h"
#include "model/layer.h"
#include "model/transformer.h"

namespace fedge::model {

struct LmTrainOptions {
  int batch = 8;                 // windows per step
  int64_t steps = 1000;
  float learning_rate = 3e-3f;   // Adam's peak rate: linear warm-up, then cosine to zero
  int64_t warmup_steps = 100;
  float clip_norm = 1.0f;        // the gradients' global L2 norm is clipped to this; 0: none
  uint64_t seed = 1;             // the windows' sampling
  // Data parallelism: each step's batch is split over this many threads, each with a
  // replica of the model; the gradients are summed in the model's own before the step.
  // The result equals one thread's up to the order of the sums.
  int threads = 1;
};

struct LmTrainProgress {
  int64_t step = 0;          // steps done
  float loss = 0;            // mean training loss over the steps since the last report
  float learning_rate = 0;   // this step's
  double tokens_per_second = 0;
};

// Trains every parameter with Adam on `options.steps` batches of windows sampled from
// `windows` (whose length must be ≤ the model's context). Calls `progress` (may be empty)
// every `report_every` steps and after the last. Returns the mean training loss of the last
// report. INVALID_ARGUMENT for bad options or windows longer than the context.
absl::StatusOr<float> TrainLanguageModel(
    TransformerLM& model, const data::TokenWindows& windows, const LmTrainOptions& options,
    int64_t report_every = 50,
    const std::function<void(const LmTrainProgress&)>& progress = {});

struct LmEvaluation {
  double loss = 0;        // mean next-token cross-entropy, nats per token
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // targets scored
};
// The model on every non-overlapping window of `windows`, `batch` windows at a time.
LmEvaluation EvaluateLanguageModel(TransformerLM& model, const data::TokenWindows& windows,
                                   int batch = 8);

// Scales every gradient so that their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_); returns the norm before scaling.
double ClipGradientNorm(const std::vector<Parameter*>& params, double max_norm);

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LM_TRAINING_H_
