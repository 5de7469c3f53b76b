#include "client/device_round.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "google/protobuf/util/message_differencer.h"
#include "model/language_model.h"
#include "model/transformer.h"
#include "client/fedcg_trainer.h"
#include "client/memory_budget.h"
#include "client/preprocessing.h"
#include "client/secagg_device.h"
#include "model/fedcg_nets.h"
#include "model/payload.h"
#include "model/sequential.h"

namespace fedge::client {
namespace {

// Encodings a task's model and teacher may arrive in (JobConfig.transfer, distillation).
constexpr v1::TensorEncoding kTaskEncodings[] = {v1::TENSOR_ENCODING_FLOAT32,
                                                 v1::TENSOR_ENCODING_INT8_PER_CHANNEL,
                                                 v1::TENSOR_ENCODING_INT4_BLOCK32};

// Payload bytes a section described by `manifest` must have for `model`'s parameters: the
// exact size of each tensor in the encoding the manifest names for it.
absl::StatusOr<int64_t> SectionBytes(const v1::TensorManifest& manifest,
                                     const v1::ModelProto& model, absl::string_view what) {
  const std::vector<model::PayloadTensorSpec> specs = model::ParameterSpecs(model);
  if (manifest.tensors_size() != static_cast<int>(specs.size())) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceRound: the task's ", what,
                                                   " manifest lists ", manifest.tensors_size(),
                                                   " tensors; its spec has ", specs.size()));
  }
  int64_t total = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const v1::TensorEncoding e = manifest.tensors(static_cast<int>(i)).encoding();
    if (std::find(std::begin(kTaskEncodings), std::end(kTaskEncodings), e) ==
        std::end(kTaskEncodings)) {
      return absl::InvalidArgumentError(absl::StrCat("DeviceRound: the task's ", what,
                                                     " tensor ", i, " has encoding ",
                                                     v1::TensorEncoding_Name(e)));
    }
    total += model::EncodedBytes(specs[i], e);
  }
  return total;
}

// A language-model task's model, from its header alone: the base's config, and its
// adapters or (full) every parameter.
struct TaskLanguageModel {
  model::TransformerConfig config;
  model::LoraConfig lora;  // unused when full
  bool full = false;
};
absl::StatusOr<TaskLanguageModel> LanguageModelOfTask(const v1::TaskHeader& header) {
  if (!header.model_spec().has_transformer()) {
    return absl::InvalidArgumentError(
        "DeviceRound: a language-model task whose model_spec names no transformer");
  }
  TaskLanguageModel out;
  out.config = model::TransformerConfigFromSpec(header.model_spec().transformer());
  const model::TransformerConfig& config = out.config;
  FEDGE_RETURN_IF_ERROR(model::ValidateTransformerConfig(config));
  const v1::LanguageModelTask& task = header.language_model();
  out.full = task.full_parameters();
  if (out.full) {
    if (task.has_lora()) {
      return absl::InvalidArgumentError(
          "DeviceRound: a full-parameter language-model task that names adapters");
    }
  } else {
    const v1::LoraSpec& spec = task.lora();
    if (spec.rank() < 1 || spec.rank() > std::min(config.dim, config.ffn_dim) ||
        !(spec.alpha() >= 0.0f) || !std::isfinite(spec.alpha())) {
      return absl::InvalidArgumentError(absl::StrCat("DeviceRound: the task's LoRA rank ",
                                                     spec.rank(), " or alpha ", spec.alpha(),
                                                     " is out of range"));
    }
    out.lora = model::LoraConfigFromSpec(spec);
  }
  const int window = task.window();
  if (window < 1 || window > config.context) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceRound: the task's window ", window,
                                                   " is outside [1, ", config.context, "]"));
  }
  return out;
}

// A language-model task's memory-budget check: as it is, or else with activation
// checkpointing (`*checkpoint` set), which holds one block's activations instead of every
// block's at the cost of one more forward pass of the blocks a step.
absl::Status CheckLanguageModelBudget(const v1::TaskHeader& header, const DeviceResources& device,
                                      bool* checkpoint) {
  *checkpoint = false;
  if (device.memory_budget_bytes <= 0) return absl::OkStatus();
  FEDGE_ASSIGN_OR_RETURN(const auto lm, LanguageModelOfTask(header));
  FEDGE_ASSIGN_OR_RETURN(const LocalTrainingOptions options, OptionsFromTask(header, 0));
  const bool adam = options.optimizer == LocalTrainingOptions::Optimizer::kAdam;
  const int window = header.language_model().window();
  auto estimate = [&](bool with_checkpoints) {
    TaskMemoryEstimate e;
    e.round_bytes = lm.full ? model::EstimateFullRoundMemoryBytes(lm.config, options.batch_size,
                                                                  window, adam, with_checkpoints)
                            : model::EstimateLoraRoundMemoryBytes(
                                  lm.config, lm.lora, LanguageModelBaseFormat(header),
                                  options.batch_size, window, adam, with_checkpoints);
    // The device's text as token ids (a text device's examples are its tokens).
    e.data_copy_bytes = 4 * device.num_examples;
    return e;
  };
  if (CheckMemoryBudget(estimate(false), device.memory_budget_bytes).ok()) {
    return absl::OkStatus();
  }
  FEDGE_RETURN_IF_ERROR(CheckMemoryBudget(estimate(true), device.memory_budget_bytes));
  *checkpoint = true;
  return absl::OkStatus();
}

// The memory-budget check of a task, from its header (memory_budget.h).
absl::Status CheckTaskBudget(const v1::TaskHeader& header, const DeviceResources& device) {
  if (device.memory_budget_bytes <= 0) return absl::OkStatus();
  if (header.has_fed_cg()) {
    FEDGE_ASSIGN_OR_RETURN(
        const TaskMemoryEstimate estimate,
        EstimateFedCgTaskMemory(model::FedCgShapeFromParams(header.fed_cg()),
                                FedCgOptionsFromTask(header).batch_size,
                                device.num_examples + device.eval_examples));
    return CheckMemoryBudget(estimate, device.memory_budget_bytes);
  }
  FEDGE_ASSIGN_OR_RETURN(const LocalTrainingOptions options, OptionsFromTask(header, 0));
  FEDGE_ASSIGN_OR_RETURN(const v1::Preprocessing pre, ResolvePreprocessing(header.preprocessing()));
  const int64_t copy_floats = pre.kind() == v1::Preprocessing::KIND_UNIT_RANGE
                                  ? 0
                                  : device.num_examples * device.example_floats;
  FEDGE_ASSIGN_OR_RETURN(
      const TaskMemoryEstimate estimate,
      EstimateTaskMemory(header.model_spec(),
                         header.has_teacher_spec() ? &header.teacher_spec() : nullptr, options,
                         copy_floats));
  return CheckMemoryBudget(estimate, device.memory_budget_bytes);
}

}  // namespace

absl::StatusOr<DeviceTask> AdmitTask(const v1::TaskHeader& header, const DeviceResources& device) {
  DeviceTask task;
  task.header = header;
  if (header.has_fed_cg()) {
    // FedCG: the payload is the global C and G of the task's shape (model_spec names it).
    FEDGE_ASSIGN_OR_RETURN(task.model, FedCgTaskSharedModel(header));
  } else if (header.has_language_model()) {
    // A language model: the payload is the adapters (the base is the device's). The budget
    // is checked before the adapters' template is allocated.
    FEDGE_ASSIGN_OR_RETURN(const auto lm, LanguageModelOfTask(header));
    // The device's base is the job's file or, for an int4 job, its int4 device form.
    const std::string& job_base = header.language_model().base_sha256();
    const std::string& job_int4 = header.language_model().base_int4_sha256();
    const std::string& have = device.language_model_base_sha256;
    if (!job_base.empty() && !have.empty() && job_base != have &&
        (job_int4.empty() || job_int4 != have)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "DeviceRound: the job's base model has SHA-256 ", base::Printable(job_base, 64),
          ", this device's ", have));
    }
    FEDGE_RETURN_IF_ERROR(
        CheckLanguageModelBudget(header, device, &task.checkpoint_activations));
    task.model = lm.full ? model::TransformerParameterTemplate(lm.config)
                         : model::LoraAdapterTemplate(lm.config, lm.lora);
  } else {
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> net,
                           model::Sequential::Create(header.model_spec()));
    task.model = net->ToProto();
  }
  if (!header.has_language_model()) FEDGE_RETURN_IF_ERROR(CheckTaskBudget(header, device));
  FEDGE_ASSIGN_OR_RETURN(task.model_bytes, SectionBytes(header.manifest(), task.model, "model"));
  int64_t teacher_bytes = 0;
  if (header.has_teacher_spec()) {
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> teacher,
                           model::Sequential::Create(header.teacher_spec()));
    task.teacher = teacher->ToProto();
    FEDGE_ASSIGN_OR_RETURN(teacher_bytes,
                           SectionBytes(header.teacher_manifest(), *task.teacher, "teacher"));
  }
  task.payload_bytes = task.model_bytes + teacher_bytes;
  if (header.total_bytes() != task.payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DeviceRound: task announces ", header.total_bytes(),
        " payload bytes; its model and teacher take ", task.payload_bytes));
  }
  return task;
}

absl::Status DecodeTaskPayload(absl::string_view payload, DeviceTask& task) {
  if (static_cast<int64_t>(payload.size()) != task.payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("DeviceRound: the task's payload has ",
                                                   payload.size(), " bytes, expected ",
                                                   task.payload_bytes));
  }
  const std::vector<v1::TensorEncoding> allowed(std::begin(kTaskEncodings),
                                                std::end(kTaskEncodings));
  FEDGE_RETURN_IF_ERROR(model::DecodeModelParameters(
      task.header.manifest(), payload.substr(0, static_cast<size_t>(task.model_bytes)),
      &task.model, allowed));
  if (task.teacher.has_value()) {
    FEDGE_RETURN_IF_ERROR(model::DecodeModelParameters(
        task.header.teacher_manifest(), payload.substr(static_cast<size_t>(task.model_bytes)),
        &*task.teacher, allowed));
  }
  return absl::OkStatus();
}

RoundSeeds DeviceRoundSeeds(const v1::TaskHeader& task, absl::string_view client_id) {
  base::Rng rng(FedCgDeviceSeed(task, client_id), static_cast<uint64_t>(task.round()));
  RoundSeeds seeds;
  seeds.shuffle = rng.NextU64();
  seeds.update_encoding = rng.NextU64();
  return seeds;
}

uint64_t FedCgDeviceSeed(const v1::TaskHeader& task, absl::string_view client_id) {
  return task.training().shuffle_seed() ^ base::Fnv1a(client_id);
}

absl::StatusOr<LocalUpdate> TrainTask(const v1::TaskHeader& task, const v1::ModelProto& model,
                                      const v1::ModelProto* teacher, const data::Dataset& data,
                                      uint64_t shuffle_seed, std::function<bool()> cancelled) {
  FEDGE_ASSIGN_OR_RETURN(LocalTrainingOptions options, OptionsFromTask(task, shuffle_seed));
  options.cancelled = std::move(cancelled);
  options.teacher = teacher;
  return TrainLocally(model, data, options);
}

model::BaseFormat LanguageModelBaseFormat(const v1::TaskHeader& task) {
  return task.language_model().lora().base_format() == v1::LoraSpec::BASE_FORMAT_INT4
             ? model::BaseFormat::kInt4
             : model::BaseFormat::kFp32;
}

absl::StatusOr<std::unique_ptr<model::TransformerLM>> LanguageModelForTask(
    const v1::TaskHeader& task, const std::function<absl::StatusOr<v1::ModelProto>()>& load_base) {
  FEDGE_ASSIGN_OR_RETURN(const auto lm, LanguageModelOfTask(task));
  // The model and its adapters first: the frozen base's gradients go before the file is
  // read, so that the fp32 values are held at most twice (model and file), never with
  // their gradients too.
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::TransformerLM> device_model,
                         model::TransformerLM::Create(lm.config));
  // Full-parameter fine-tuning: every parameter comes with each task; no base file.
  if (lm.full) return device_model;
  // A's start from the job's seed: with freeze_a it never travels, and must be the
  // coordinator's.
  FEDGE_RETURN_IF_ERROR(device_model->AddLora(lm.lora, task.language_model().lora().seed()));
  const model::BaseFormat format = LanguageModelBaseFormat(task);
  if (format == model::BaseFormat::kInt4) {
    // An int4 base: the projections' fp32 storage goes before the file is read (their int4
    // form, of zeros until then, is replaced from the file's values, tensor by tensor).
    FEDGE_RETURN_IF_ERROR(device_model->SetBaseFormat(format));
    FEDGE_RETURN_IF_ERROR(device_model->ReleaseFp32Base());
  }
  FEDGE_ASSIGN_OR_RETURN(v1::ModelProto base, load_base());
  if (!google::protobuf::util::MessageDifferencer::Equals(base.spec().transformer(),
                                                          task.model_spec().transformer())) {
    return absl::FailedPreconditionError(
        "DeviceRound: the device's base model is not the task's architecture");
  }
  if (format == model::BaseFormat::kInt4) {
    FEDGE_RETURN_IF_ERROR(device_model->LoadInt4Base(std::move(base)));
  } else {
    FEDGE_RETURN_IF_ERROR(device_model->SetParameters(base));
    FEDGE_RETURN_IF_ERROR(device_model->SetBaseFormat(format));
  }
  return device_model;
}

absl::StatusOr<LocalUpdate> TrainLanguageModelTask(const v1::TaskHeader& task,
                                                   const v1::ModelProto& adapters,
                                                   model::TransformerLM& device_model,
                                                   const data::TokenWindows& text,
                                                   uint64_t shuffle_seed,
                                                   std::function<bool()> cancelled) {
  FEDGE_ASSIGN_OR_RETURN(const auto lm, LanguageModelOfTask(task));
  const model::TransformerConfig& have = device_model.config();
  if (!google::protobuf::util::MessageDifferencer::Equals(
          model::TransformerSpecFromConfig(have), model::TransformerSpecFromConfig(lm.config)) ||
      (lm.full ? device_model.has_lora()
               : !device_model.has_lora() || device_model.lora() != lm.lora) ||
      device_model.base_format() != LanguageModelBaseFormat(task)) {
    return absl::FailedPreconditionError(
        "DeviceRound: the device's language model is not the task's base with its adapters");
  }
  if (text.len() != task.language_model().window()) {
    return absl::FailedPreconditionError(absl::StrCat("DeviceRound: the device's text is in ",
                                                      text.len(), "-token windows, the task's ",
                                                      task.language_model().window()));
  }
  FEDGE_ASSIGN_OR_RETURN(LocalTrainingOptions options, OptionsFromTask(task, shuffle_seed));
  options.cancelled = std::move(cancelled);
  return TrainLanguageModelLocally(device_model, adapters, text, options);
}

absl::StatusOr<EncodedUpdate> EncodeUpdate(const v1::TaskHeader& t, const LocalUpdate& update,
                                           absl::string_view client_id, uint64_t encoding_seed) {
  v1::TensorEncoding encoding = t.update_encoding();
  if (encoding == v1::TENSOR_ENCODING_UNSPECIFIED) encoding = v1::TENSOR_ENCODING_FLOAT32;
  FEDGE_ASSIGN_OR_RETURN(model::EncodedPayload encoded,
                         model::EncodeModelParameters(update.delta, encoding, encoding_seed));
  // Stochastic rounding moves each value by up to one step, which can carry an update clipped
  // to exactly C past C; the coordinator refuses an update over its clip norm (RoundPrivacy).
  // So the device measures what it sends and, while that is over C, shrinks Δ by the excess
  // and encodes it again.
  const double clip = t.privacy().clip_norm();
  if (clip > 0 && encoding == v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED) {
    v1::ModelProto shrunk = update.delta;
    for (int attempt = 0;; ++attempt) {
      v1::ModelProto sent = shrunk;
      FEDGE_RETURN_IF_ERROR(model::DecodeModelParameters(encoded.manifest, encoded.bytes, &sent,
                                                         {encoding}));
      double sum = 0.0;
      for (const v1::TensorProto& p : sent.parameters()) {
        for (float v : p.values()) sum += static_cast<double>(v) * v;
      }
      const double norm = std::sqrt(sum);
      if (norm <= clip) break;
      if (attempt == 16) {
        return absl::InternalError(absl::StrCat("EncodeUpdate: the encoded update's norm ", norm,
                                                " stays over the clip norm ", clip));
      }
      const float factor = static_cast<float>(clip / norm * (1.0 - 1e-4));
      for (v1::TensorProto& p : *shrunk.mutable_parameters()) {
        for (float& v : *p.mutable_values()) v *= factor;
      }
      FEDGE_ASSIGN_OR_RETURN(encoded, model::EncodeModelParameters(shrunk, encoding,
                                                                   encoding_seed + attempt + 1));
    }
  }
  EncodedUpdate out;
  v1::UpdateHeader& h = out.header;
  h.set_client_id(std::string(client_id));
  h.set_job_id(t.job_id());
  h.set_round(t.round());
  h.set_task_id(t.task_id());
  *h.mutable_manifest() = std::move(encoded.manifest);
  h.set_total_bytes(static_cast<int64_t>(encoded.bytes.size()));
  h.set_num_examples(update.num_examples);
  v1::ClientTrainMetrics& m = *h.mutable_metrics();
  m.set_train_loss(update.train_loss);
  m.set_train_accuracy(update.train_accuracy);
  m.set_steps(update.steps);
  m.set_train_seconds(update.seconds);
  m.set_update_norm(update.delta_norm);
  if (update.eval_examples > 0) {
    m.set_eval_accuracy(update.eval_accuracy);
    m.set_eval_examples(update.eval_examples);
  }
  out.payload = std::move(encoded.bytes);
  return out;
}

absl::StatusOr<int64_t> SendUpdate(const v1::TaskHeader& task, const LocalUpdate& update,
                                   absl::string_view client_id, const SendOptions& options,
                                   DeviceLink& link) {
  if (task.secure_aggregation().num_participants() > 0) {
    SecAggDevice::Options o;
    if (options.noise_seed.has_value()) {
      o.noise_seed = DeviceNoiseSeed(*options.noise_seed, task, client_id);
    }
    o.peak_rss_bytes = options.peak_rss_bytes;
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<SecAggDevice> device,
                           SecAggDevice::Create(task, update, o));
    return RunSecureAggregation(*device, task, link);
  }
  // Stochastic rounding (INT8_STOCHASTIC_CHUNKED) draws from a seed of its own per task.
  FEDGE_ASSIGN_OR_RETURN(
      EncodedUpdate encoded,
      EncodeUpdate(task, update, client_id, DeviceRoundSeeds(task, client_id).update_encoding));
  encoded.header.mutable_metrics()->set_peak_rss_bytes(options.peak_rss_bytes);
  FEDGE_RETURN_IF_ERROR(link.Upload(task, encoded));
  return static_cast<int64_t>(encoded.payload.size());
}

v1::UpdateHeader DeclineHeader(const v1::TaskHeader& task, absl::string_view client_id,
                               absl::string_view reason) {
  v1::UpdateHeader h;
  h.set_client_id(std::string(client_id));
  h.set_job_id(task.job_id());
  h.set_round(task.round());
  h.set_task_id(task.task_id());
  h.set_refusal(std::string(reason.substr(0, 256)));
  return h;
}

}  // namespace fedge::client
