#include "client/local_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "data/batcher.h"
#include "model/loss.h"
#include "model/optimizer.h"
#include "model/sequential.h"
#include "privacy/dp.h"

namespace fedge::client {
namespace {

constexpr int kMaxEpochs = 10000;

absl::Status ValidateOptions(const LocalTrainingOptions& o) {
  // The same bound as a job's local_training.epochs (server::kMaxLocalEpochs): every job
  // the coordinator accepts must be trainable here.
  if (o.epochs < 1 || o.epochs > kMaxEpochs) {
    return absl::InvalidArgumentError(absl::StrCat("LocalTrainer: epochs must be in [1, ",
                                                   kMaxEpochs, "], got ", o.epochs));
  }
  if (o.batch_size < 1 || o.batch_size > 65536) {
    return absl::InvalidArgumentError(
        absl::StrCat("LocalTrainer: batch_size must be in [1, 65536], got ", o.batch_size));
  }
  if (!(o.proximal_mu >= 0.0f) || !std::isfinite(o.proximal_mu)) {
    return absl::InvalidArgumentError("LocalTrainer: proximal_mu must be finite and ≥ 0");
  }
  if (!(o.clip_norm >= 0.0) || !std::isfinite(o.clip_norm)) {
    return absl::InvalidArgumentError("LocalTrainer: clip_norm must be finite and ≥ 0");
  }
  if (o.mode == model::ComputeMode::kInt4) {
    return absl::InvalidArgumentError("LocalTrainer: int4 is for inference only");
  }
  if (!(o.kd_weight >= 0.0f && o.kd_weight <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LocalTrainer: kd_weight must be in [0, 1], got ", o.kd_weight));
  }
  if (!(o.kd_temperature > 0.0f) || !std::isfinite(o.kd_temperature)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LocalTrainer: kd_temperature must be finite and > 0, got ", o.kd_temperature));
  }
  return absl::OkStatus();
}

// Turns the trained values of `params` into Δ = w − w_received in place, refuses a diverged
// Δ, clips it to clip_norm (0: not) and records its norm before clipping.
absl::Status FinishDelta(const std::vector<model::Parameter*>& params,
                         const std::vector<std::vector<float>>& initial, double clip_norm,
                         LocalUpdate& update) {
  for (size_t i = 0; i < params.size(); ++i) {
    float* w = params[i]->value.data();
    for (int64_t j = 0; j < params[i]->size(); ++j) w[j] -= initial[i][j];
    if (!std::all_of(params[i]->value.begin(), params[i]->value.end(),
                     [](float v) { return std::isfinite(v); })) {
      return absl::InternalError(absl::StrCat("LocalTrainer: training diverged: '",
                                              params[i]->name, "' has non-finite values"));
    }
  }
  std::vector<absl::Span<float>> spans;
  for (model::Parameter* p : params) spans.push_back(absl::MakeSpan(p->value));
  if (clip_norm > 0) {
    FEDGE_ASSIGN_OR_RETURN(update.delta_norm, privacy::ClipToL2Norm(spans, clip_norm));
  } else {
    update.delta_norm = privacy::GlobalL2Norm(spans);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<model::Optimizer>> MakeLocalOptimizer(
    const LocalTrainingOptions& o) {
  if (o.optimizer == LocalTrainingOptions::Optimizer::kAdam) {
    model::AdamOptions a;
    a.learning_rate = o.learning_rate;
    a.weight_decay = o.weight_decay;
    a.beta1 = o.adam_beta1;
    a.beta2 = o.adam_beta2;
    a.epsilon = o.adam_epsilon;
    FEDGE_ASSIGN_OR_RETURN(auto adam, model::Adam::Create(a));
    return std::unique_ptr<model::Optimizer>(std::move(adam));
  }
  model::SgdOptions s;
  s.learning_rate = o.learning_rate;
  s.momentum = o.momentum;
  s.weight_decay = o.weight_decay;
  s.nesterov = o.nesterov;
  FEDGE_ASSIGN_OR_RETURN(auto sgd, model::Sgd::Create(s));
  return std::unique_ptr<model::Optimizer>(std::move(sgd));
}

absl::StatusOr<LocalTrainingOptions> OptionsFromTask(const v1::TaskHeader& task,
                                                     uint64_t seed) {
  const v1::LocalTraining& t = task.training();
  LocalTrainingOptions o;
  if (t.has_epochs()) o.epochs = t.epochs();
  if (t.has_batch_size()) o.batch_size = t.batch_size();
  o.optimizer = t.optimizer() == v1::OPTIMIZER_KIND_ADAM ? LocalTrainingOptions::Optimizer::kAdam
                                                          : LocalTrainingOptions::Optimizer::kSgd;
  if (t.has_learning_rate()) o.learning_rate = static_cast<float>(t.learning_rate());
  o.momentum = static_cast<float>(t.momentum());
  o.nesterov = t.nesterov();
  o.weight_decay = static_cast<float>(t.weight_decay());
  if (t.has_adam_beta1()) o.adam_beta1 = static_cast<float>(t.adam_beta1());
  if (t.has_adam_beta2()) o.adam_beta2 = static_cast<float>(t.adam_beta2());
  if (t.has_adam_epsilon()) o.adam_epsilon = static_cast<float>(t.adam_epsilon());
  o.max_steps = t.max_steps();
  o.proximal_mu = static_cast<float>(task.fedprox_mu());
  o.clip_norm = task.privacy().clip_norm();
  switch (t.compute_mode()) {
    case v1::COMPUTE_MODE_UNSPECIFIED:
    case v1::COMPUTE_MODE_FP32:
      o.mode = model::ComputeMode::kFp32;
      break;
    case v1::COMPUTE_MODE_INT8:
      o.mode = model::ComputeMode::kInt8;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "LocalTrainer: task asks for compute mode ", v1::ComputeMode_Name(t.compute_mode()),
          ", which cannot train"));
  }
  const v1::DistillationConfig& kd = task.distillation();
  o.kd_weight = static_cast<float>(kd.weight());
  if (kd.has_temperature()) o.kd_temperature = static_cast<float>(kd.temperature());
  switch (kd.teacher_compute_mode()) {
    case v1::COMPUTE_MODE_UNSPECIFIED:  // job.proto: the teacher runs in int8 by default
    case v1::COMPUTE_MODE_INT8:
      o.teacher_mode = model::ComputeMode::kInt8;
      break;
    case v1::COMPUTE_MODE_FP32:
      o.teacher_mode = model::ComputeMode::kFp32;
      break;
    case v1::COMPUTE_MODE_INT4:
      o.teacher_mode = model::ComputeMode::kInt4;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("LocalTrainer: task asks for teacher compute mode ",
                       static_cast<int>(kd.teacher_compute_mode())));
  }
  o.seed = seed;
  FEDGE_RETURN_IF_ERROR(ValidateOptions(o));
  return o;
}

absl::StatusOr<LocalUpdate> TrainLocally(const v1::ModelProto& received,
                                         const data::Dataset& data,
                                         const LocalTrainingOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FEDGE_RETURN_IF_ERROR(ValidateOptions(options));
  FEDGE_RETURN_IF_ERROR(data::ValidateDataset(data));
  if (data.num_examples == 0) return absl::FailedPreconditionError("LocalTrainer: no local data");
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> net,
                         model::Sequential::FromProto(received));
  if (static_cast<int>(data.feature_size()) != net->input_size() ||
      data.num_classes != net->output_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LocalTrainer: local data has ", data.feature_size(), " features and ",
        data.num_classes, " classes; the model takes ", net->input_size(), " and ",
        net->output_size()));
  }
  // The teacher, built once and run for inference only.
  std::unique_ptr<model::Sequential> teacher;
  if (options.teacher != nullptr && options.kd_weight > 0.0f) {
    absl::StatusOr<std::unique_ptr<model::Sequential>> t =
        model::Sequential::FromProto(*options.teacher);
    if (!t.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("LocalTrainer: the teacher is invalid: ", t.status().message()));
    }
    teacher = std::move(t).value();
    if (teacher->input_size() != net->input_size() ||
        teacher->output_size() != net->output_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LocalTrainer: the teacher takes ", teacher->input_size(), " inputs and gives ",
          teacher->output_size(), " outputs; the model takes ", net->input_size(),
          " and gives ", net->output_size()));
    }
  }
  std::unique_ptr<model::Optimizer> fresh;
  model::Optimizer* optimizer = options.persistent_optimizer;
  if (optimizer == nullptr) {
    FEDGE_ASSIGN_OR_RETURN(fresh, MakeLocalOptimizer(options));
    optimizer = fresh.get();
  }
  const std::vector<model::Parameter*> params = net->parameters();
  // w_received, for the proximal term and the delta.
  std::vector<std::vector<float>> initial;
  initial.reserve(params.size());
  for (const model::Parameter* p : params) initial.push_back(p->value);

  data::Batcher batcher(data, data::AllIndices(data), options.batch_size, /*shuffle=*/true,
                        options.seed);
  const int classes = net->output_size();
  data::Batch batch;
  std::vector<float> dlogits;
  LocalUpdate update;
  bool step_limit_reached = false;
  for (int epoch = 0; epoch < options.epochs && !step_limit_reached; ++epoch) {
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    while (batcher.Next(&batch)) {
      if (options.cancelled && options.cancelled()) {
        return absl::CancelledError(
            absl::StrCat("LocalTrainer: cancelled after ", update.steps, " steps"));
      }
      if (options.max_steps > 0 && update.steps >= options.max_steps) {
        step_limit_reached = true;
        break;
      }
      dlogits.resize(static_cast<size_t>(batch.size) * classes);
      net->ZeroGrad();
      const float* logits = net->Forward(batch.features.data(), batch.size, options.mode, true);
      float loss;
      if (teacher != nullptr) {
        const float* soft = teacher->Forward(batch.features.data(), batch.size,
                                             options.teacher_mode, /*training=*/false);
        loss = model::DistillationLoss(logits, soft, batch.labels.data(), batch.size, classes,
                                       options.kd_weight, options.kd_temperature,
                                       dlogits.data());
      } else {
        loss = model::SoftmaxCrossEntropy(logits, batch.labels.data(), batch.size, classes,
                                          dlogits.data());
      }
      correct += model::CountCorrect(logits, batch.labels.data(), batch.size, classes);
      net->Backward(dlogits.data());
      if (options.proximal_mu > 0.0f) {
        for (size_t i = 0; i < params.size(); ++i) {
          float* g = params[i]->grad.data();
          const float* w = params[i]->value.data();
          const float* w0 = initial[i].data();
          for (int64_t j = 0; j < params[i]->size(); ++j) g[j] += options.proximal_mu * (w[j] - w0[j]);
        }
      }
      optimizer->Step(params);
      loss_sum += static_cast<double>(loss) * batch.size;
      seen += batch.size;
      ++update.steps;
    }
    batcher.NextEpoch();
    if (seen > 0) {
      update.train_loss = loss_sum / seen;
      update.train_accuracy = static_cast<double>(correct) / seen;
    }
  }
  FEDGE_RETURN_IF_ERROR(FinishDelta(params, initial, options.clip_norm, update));
  update.delta = net->ToProto();
  update.num_examples = data.num_examples;
  update.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return update;
}


absl::StatusOr<LocalUpdate> TrainLanguageModelLocally(model::TransformerLM& model,
                                             const v1::ModelProto& received,
                                             const data::TokenWindows& windows,
                                             const LocalTrainingOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  FEDGE_RETURN_IF_ERROR(ValidateOptions(options));
  if (options.mode != model::ComputeMode::kFp32) {
    return absl::InvalidArgumentError(
        "LocalTrainer: language-model adapters train in fp32 (the base's format is the "
        "model's)");
  }
  if (options.teacher != nullptr && options.kd_weight > 0.0f) {
    return absl::InvalidArgumentError("LocalTrainer: no distillation for language models");
  }
  if (windows.len() > model.config().context) {
    return absl::InvalidArgumentError(absl::StrCat("LocalTrainer: windows of ", windows.len(),
                                                   " tokens, the model's context is ",
                                                   model.config().context));
  }
  if (windows.num_windows() < 1) {
    return absl::FailedPreconditionError("LocalTrainer: no local text");
  }
  {
    // Adapters on a frozen base, or (no adapters) every parameter.
    absl::Status s = model.has_lora() ? model.SetAdapters(received) : model.SetParameters(received);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "LocalTrainer: the received ", model.has_lora() ? "adapters" : "parameters", ": ",
          s.message()));
    }
  }
  std::unique_ptr<model::Optimizer> fresh;
  model::Optimizer* optimizer = options.persistent_optimizer;
  if (optimizer == nullptr) {
    FEDGE_ASSIGN_OR_RETURN(fresh, MakeLocalOptimizer(options));
    optimizer = fresh.get();
  }
  const std::vector<model::Parameter*> params = model.trainable_parameters();
  std::vector<std::vector<float>> initial;
  initial.reserve(params.size());
  for (const model::Parameter* p : params) initial.push_back(p->value);

  const int len = windows.len();
  const int64_t per_epoch = (windows.num_windows() + options.batch_size - 1) / options.batch_size;
  std::vector<int32_t> tokens, targets;
  LocalUpdate update;
  base::Rng rng(options.seed);
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    double loss_sum = 0;
    int64_t seen = 0;
    for (int64_t s = 0; s < per_epoch; ++s) {
      if (options.cancelled && options.cancelled()) {
        return absl::CancelledError(
            absl::StrCat("LocalTrainer: cancelled after ", update.steps, " steps"));
      }
      if (options.max_steps > 0 && update.steps >= options.max_steps) break;
      const int b = static_cast<int>(
          std::min<int64_t>(options.batch_size, windows.num_windows() - s * options.batch_size));
      tokens.resize(static_cast<size_t>(b) * len);
      targets.resize(tokens.size());
      windows.Sample(rng, b, tokens.data(), targets.data());
      model.ZeroGrad();
      const float loss = model.Loss(tokens.data(), targets.data(), b, len, /*training=*/true);
      if (options.proximal_mu > 0.0f) {
        for (size_t i = 0; i < params.size(); ++i) {
          float* g = params[i]->grad.data();
          const float* w = params[i]->value.data();
          const float* w0 = initial[i].data();
          for (int64_t j = 0; j < params[i]->size(); ++j) g[j] += options.proximal_mu * (w[j] - w0[j]);
        }
      }
      optimizer->Step(params);
      loss_sum += static_cast<double>(loss) * b;
      seen += b;
      ++update.steps;
    }
    if (seen > 0) update.train_loss = loss_sum / seen;
  }
  FEDGE_RETURN_IF_ERROR(FinishDelta(params, initial, options.clip_norm, update));
  update.delta = model.has_lora() ? model.AdaptersToProto() : model.ToProto();
  update.num_examples = windows.num_windows() * windows.len();  // target tokens
  update.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return update;
}

}  // namespace fedge::client
