#include "model/lm_training.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "model/lr_schedule.h"
#include "model/optimizer.h"

namespace fedge::model {

double ClipGradientNorm(const std::vector<Parameter*>& params, double max_norm) {
  double ss = 0.0;
  for (const Parameter* p : params) {
    if (!p->trainable) continue;
    for (float g : p->grad) ss += static_cast<double>(g) * g;
  }
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (Parameter* p : params) {
      for (float& g : p->grad) g *= scale;
    }
  }
  return norm;
}

absl::StatusOr<float> TrainLanguageModel(
    TransformerLM& model, const data::TokenWindows& windows, const LmTrainOptions& options,
    int64_t report_every, const std::function<void(const LmTrainProgress&)>& progress) {
  if (options.batch < 1 || options.steps < 1 || !(options.learning_rate > 0) ||
      options.clip_norm < 0 || report_every < 1 || options.threads < 1 ||
      options.threads > options.batch) {
    return absl::InvalidArgumentError(
        "TrainLanguageModel: batch, steps, learning rate and report interval must be "
        "positive, the clip norm not negative, threads in [1, batch]");
  }
  if (windows.len() > model.config().context) {
    return absl::InvalidArgumentError(absl::StrCat("TrainLanguageModel: windows of ",
                                                   windows.len(), " tokens, context ",
                                                   model.config().context));
  }
  AdamOptions adam_options;
  adam_options.learning_rate = options.learning_rate;
  FEDGE_ASSIGN_OR_RETURN(auto adam, Adam::Create(adam_options));
  const WarmupCosineSchedule schedule(options.learning_rate, options.warmup_steps,
                                      options.steps);
  base::Rng rng(options.seed);
  const int len = windows.len();
  const size_t n = static_cast<size_t>(options.batch) * len;
  std::vector<int32_t> tokens(n), targets(n);
  const std::vector<Parameter*> params = model.trainable_parameters();
  // Replicas for threads 1 …; thread t takes windows [t·batch/threads, (t+1)·batch/threads).
  std::vector<std::unique_ptr<TransformerLM>> replicas;
  for (int t = 1; t < options.threads; ++t) replicas.push_back(model.Clone());
  auto sync_replicas = [&] {
    for (auto& r : replicas) {
      const std::vector<Parameter*> rp = r->trainable_parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        rp[i]->value = params[i]->value;
        ++rp[i]->version;
      }
    }
  };
  sync_replicas();
  auto first_window = [&](int t) { return options.batch * t / options.threads; };
  std::vector<float> part_loss(options.threads);
  double loss_sum = 0.0;
  int64_t loss_steps = 0;
  float last = 0.0f;
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < options.steps; ++step) {
    windows.Sample(rng, options.batch, tokens.data(), targets.data());
    auto run_part = [&](int t) {
      TransformerLM& m = t == 0 ? model : *replicas[t - 1];
      const int w0 = first_window(t), w1 = first_window(t + 1);
      const size_t off = static_cast<size_t>(w0) * len;
      m.ZeroGrad();
      part_loss[t] = m.Loss(tokens.data() + off, targets.data() + off, w1 - w0, len, true);
    };
    std::vector<std::thread> workers;
    for (int t = 1; t < options.threads; ++t) workers.emplace_back(run_part, t);
    run_part(0);
    for (auto& w : workers) w.join();
    // Each part's loss and gradient are means over its windows: weight them by its share.
    float step_loss = part_loss[0] * (first_window(1) - first_window(0)) / options.batch;
    if (!replicas.empty()) {
      const float w0 = static_cast<float>(first_window(1)) / options.batch;
      for (Parameter* p : params) {
        for (float& g : p->grad) g *= w0;
      }
    }
    for (int t = 1; t < options.threads; ++t) {
      const float w = static_cast<float>(first_window(t + 1) - first_window(t)) / options.batch;
      step_loss += part_loss[t] * w;
      const std::vector<Parameter*> rp = replicas[t - 1]->trainable_parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        float* g = params[i]->grad.data();
        const float* rg = rp[i]->grad.data();
        for (size_t j = 0; j < params[i]->grad.size(); ++j) g[j] += w * rg[j];
      }
    }
    loss_sum += step_loss;
    ++loss_steps;
    if (options.clip_norm > 0) ClipGradientNorm(params, options.clip_norm);
    adam->set_learning_rate(schedule(step));
    adam->Step(params);
    sync_replicas();
    if ((step + 1) % report_every == 0 || step + 1 == options.steps) {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - start).count();
      last = static_cast<float>(loss_sum / loss_steps);
      if (progress) {
        LmTrainProgress p;
        p.step = step + 1;
        p.loss = last;
        p.learning_rate = schedule(step);
        p.tokens_per_second = seconds > 0 ? loss_steps * static_cast<double>(n) / seconds : 0;
        progress(p);
      }
      loss_sum = 0.0;
      loss_steps = 0;
      start = now;
    }
  }
  return last;
}

LmEvaluation EvaluateLanguageModel(TransformerLM& model, const data::TokenWindows& windows,
                                   int batch) {
  const int len = windows.len();
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * len);
  std::vector<int32_t> targets(tokens.size());
  double total = 0.0;
  int64_t scored = 0;
  for (int64_t w = 0; w < windows.num_windows(); w += batch) {
    const int b = static_cast<int>(std::min<int64_t>(batch, windows.num_windows() - w));
    for (int i = 0; i < b; ++i) {
      windows.Window(w + i, tokens.data() + static_cast<size_t>(i) * len,
                     targets.data() + static_cast<size_t>(i) * len);
    }
    total += static_cast<double>(model.Loss(tokens.data(), targets.data(), b, len, false)) * b *
             len;
    scored += static_cast<int64_t>(b) * len;
  }
  LmEvaluation e;
  e.tokens = scored;
  e.loss = scored > 0 ? total / scored : 0.0;
  e.perplexity = std::exp(e.loss);
  return e;
}

}  // namespace fedge::model
