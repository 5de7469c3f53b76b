#include "model/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fedge::model {
namespace {

// log-softmax of row x / temperature into out; returns nothing. Stable (max subtracted).
void LogSoftmax(const float* x, int n, float inv_t, double* out) {
  double mx = x[0] * static_cast<double>(inv_t);
  for (int j = 1; j < n; ++j) mx = std::max(mx, x[j] * static_cast<double>(inv_t));
  double sum = 0;
  for (int j = 0; j < n; ++j) sum += std::exp(x[j] * static_cast<double>(inv_t) - mx);
  const double lse = mx + std::log(sum);
  for (int j = 0; j < n; ++j) out[j] = x[j] * static_cast<double>(inv_t) - lse;
}

}  // namespace

float SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int batch, int classes,
                          float* grad) {
  std::vector<double> ls(classes);
  double total = 0;
  const double inv_b = 1.0 / batch;
  for (int i = 0; i < batch; ++i) {
    const float* row = logits + static_cast<size_t>(i) * classes;
    LogSoftmax(row, classes, 1.0f, ls.data());
    total -= ls[labels[i]];
    if (grad != nullptr) {
      float* g = grad + static_cast<size_t>(i) * classes;
      for (int j = 0; j < classes; ++j) {
        g[j] = static_cast<float>((std::exp(ls[j]) - (j == labels[i] ? 1.0 : 0.0)) * inv_b);
      }
    }
  }
  return static_cast<float>(total * inv_b);
}

float DistillationLoss(const float* student, const float* teacher, const int32_t* labels,
                       int batch, int classes, float lambda, float temperature, float* grad) {
  std::vector<double> ls(classes), ls_t(classes), lt_t(classes);
  const float inv_t = 1.0f / temperature;
  const double t = temperature;
  const double inv_b = 1.0 / batch;
  double total = 0;
  for (int i = 0; i < batch; ++i) {
    const float* s = student + static_cast<size_t>(i) * classes;
    const float* tr = teacher + static_cast<size_t>(i) * classes;
    LogSoftmax(s, classes, 1.0f, ls.data());
    LogSoftmax(s, classes, inv_t, ls_t.data());
    LogSoftmax(tr, classes, inv_t, lt_t.data());
    double kl = 0;
    for (int j = 0; j < classes; ++j) kl += std::exp(lt_t[j]) * (lt_t[j] - ls_t[j]);
    total += (1.0 - lambda) * -ls[labels[i]] + lambda * t * t * kl;
    if (grad != nullptr) {
      float* g = grad + static_cast<size_t>(i) * classes;
      for (int j = 0; j < classes; ++j) {
        const double hard = std::exp(ls[j]) - (j == labels[i] ? 1.0 : 0.0);
        const double soft = t * (std::exp(ls_t[j]) - std::exp(lt_t[j]));
        g[j] = static_cast<float>(((1.0 - lambda) * hard + lambda * soft) * inv_b);
      }
    }
  }
  return static_cast<float>(total * inv_b);
}

float MeanSquaredError(const float* pred, const float* target, int64_t n, float* grad) {
  double total = 0;
  const double inv_n = 1.0 / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(pred[i]) - target[i];
    total += d * d;
    if (grad != nullptr) grad[i] = static_cast<float>(2.0 * d * inv_n);
  }
  return static_cast<float>(total * inv_n);
}

float BinaryCrossEntropyWithLogits(const float* logits, const float* targets, int64_t n,
                                   float* grad) {
  double total = 0;
  const double inv_n = 1.0 / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double x = logits[i], t = targets[i];
    total += std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::fabs(x)));
    if (grad != nullptr) {
      const double s = x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
      grad[i] = static_cast<float>((s - t) * inv_n);
    }
  }
  return static_cast<float>(total * inv_n);
}

int CountCorrect(const float* logits, const int32_t* labels, int batch, int classes) {
  int correct = 0;
  for (int i = 0; i < batch; ++i) {
    const float* row = logits + static_cast<size_t>(i) * classes;
    correct += static_cast<int>(std::max_element(row, row + classes) - row) == labels[i];
  }
  return correct;
}

}  // namespace fedge::model
