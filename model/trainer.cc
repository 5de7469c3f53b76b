#include "model/trainer.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "base/status_macros.h"
#include "model/loss.h"

namespace fedge::model {

EvalResult Evaluate(Sequential& net, const data::Dataset& data, ComputeMode mode,
                    int batch_size) {
  FEDGE_CHECK(static_cast<int>(data.feature_size()) == net.input_size());
  FEDGE_CHECK(data.num_classes == net.output_size());
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  const int classes = net.output_size();
  // 8-bit storage is converted a batch at a time (float storage is read in place).
  std::vector<float> converted;
  for (int start = 0; start < data.num_examples; start += batch_size) {
    const int n = std::min(batch_size, data.num_examples - start);
    const float* x = nullptr;
    if (data.is_u8()) {
      const size_t fs = data.feature_size();
      converted.resize(static_cast<size_t>(n) * fs);
      for (int e = 0; e < n; ++e) data.CopyExample(start + e, converted.data() + e * fs);
      x = converted.data();
    } else {
      x = data.example(start);
    }
    const float* logits = net.Forward(x, n, mode, /*training=*/false);
    const int32_t* labels = data.labels.data() + start;
    loss_sum += static_cast<double>(SoftmaxCrossEntropy(logits, labels, n, classes, nullptr)) * n;
    correct += CountCorrect(logits, labels, n, classes);
  }
  r.examples = data.num_examples;
  if (r.examples > 0) {
    r.loss = loss_sum / r.examples;
    r.accuracy = static_cast<double>(correct) / r.examples;
  }
  return r;
}

TrainEpochResult TrainEpoch(Sequential& net, Optimizer& optimizer, data::Batcher& batcher,
                            const TrainEpochOptions& options, int64_t* global_step) {
  const auto start = std::chrono::steady_clock::now();
  TrainEpochResult r;
  const int classes = net.output_size();
  const std::vector<Parameter*> params = net.parameters();
  data::Batch batch;
  std::vector<float> dlogits;
  double loss_sum = 0;
  int64_t correct = 0;
  while (batcher.Next(&batch)) {
    if (options.learning_rate) optimizer.set_learning_rate(options.learning_rate(*global_step));
    dlogits.resize(static_cast<size_t>(batch.size) * classes);
    net.ZeroGrad();
    const float* logits = net.Forward(batch.features.data(), batch.size, options.mode, true);
    const float loss =
        SoftmaxCrossEntropy(logits, batch.labels.data(), batch.size, classes, dlogits.data());
    correct += CountCorrect(logits, batch.labels.data(), batch.size, classes);
    net.Backward(dlogits.data());
    optimizer.Step(params);
    loss_sum += static_cast<double>(loss) * batch.size;
    r.examples += batch.size;
    ++*global_step;
  }
  batcher.NextEpoch();
  if (r.examples > 0) {
    r.loss = loss_sum / r.examples;
    r.accuracy = static_cast<double>(correct) / r.examples;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace fedge::model
