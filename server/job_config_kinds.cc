// Job validation of language-model and FedCG jobs (server/job_config_kinds.h).
#include "server/job_config_kinds.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "model/fedcg_nets.h"
#include "model/transformer.h"

namespace fedge::server::job_config_internal {

// A language-model job (JobConfig.language_model): what it names and what it cannot have,
// each refusal naming the field. The base file is read when the coordinator starts the job
// (MakeJobModel), which fills model_spec.transformer from it; a spec already there (a
// stored job) is checked here.
void CheckLanguageModel(v1::JobConfig& job, ConfigProblems& p) {
  v1::LanguageModelJob& lm = *job.mutable_language_model();
  if (!job.architecture().empty()) {
    p.Add("architecture", "must be omitted with language_model (the base file is the model)");
  }
  if (job.has_model_spec()) {
    if (!job.model_spec().has_transformer() || job.model_spec().layers_size() > 0 ||
        job.model_spec().input_shape_size() > 0) {
      p.Add("model_spec", "must be omitted with language_model (it is filled from the base)");
    } else {
      const absl::Status valid = model::ValidateTransformerConfig(
          model::TransformerConfigFromSpec(job.model_spec().transformer()));
      if (!valid.ok()) p.Add("model_spec.transformer", valid.message());
    }
  }
  if (lm.base_path().empty()) {
    p.Add("language_model.base_path", "is required: the base model file under --data-root");
  }
  if (!lm.base_sha256().empty() &&
      (lm.base_sha256().size() != 64 ||
       !std::all_of(lm.base_sha256().begin(), lm.base_sha256().end(),
                    [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))) {
    p.Add("language_model.base_sha256", "must be 64 lowercase hex characters (a SHA-256)");
  }
  if (lm.full_parameters()) {
    if (lm.has_lora()) {
      p.Add("language_model.lora", "must be unset with full_parameters (every parameter trains)");
    }
  } else {
    v1::LoraSpec& lora = *lm.mutable_lora();
    p.IntRange("language_model.lora.rank", lora.rank(), 1, 1024);
    if (!lora.has_alpha()) lora.set_alpha(2.0f * static_cast<float>(lora.rank()));
    p.Positive("language_model.lora.alpha", lora.alpha());
    if (!lora.attention() && !lora.mlp() && !lora.output()) {
      lora.set_attention(true);
      lora.set_mlp(true);
    }
    if (lora.base_format() == v1::LoraSpec::BASE_FORMAT_UNSPECIFIED) {
      lora.set_base_format(v1::LoraSpec::BASE_FORMAT_FP32);
    }
  }
  p.IntRange("language_model.window", lm.window(), 0, 4096);
  if (job.strategy().has_fed_cg()) {
    p.Add("strategy.fed_cg", "cannot run with language_model");
  }
  if (job.sub_models().tiers_size() > 0) {
    p.Add("sub_models.tiers", "cannot run with language_model (every device gets the base)");
  }
  if (job.distillation().weight() > 0) {
    p.Add("distillation.weight", "must be 0 with language_model");
  }
  if (job.local_training().compute_mode() == v1::COMPUTE_MODE_INT8) {
    p.Add("local_training.compute_mode",
          "must be FP32 with language_model (the base's format is language_model.lora's)");
  }
  // The adapters travel as fp32 or int8 per row (the int4 blocks of 32 are not measured
  // on adapters: B's rows hold `rank` values).
  if (job.transfer().task_encoding() == v1::TENSOR_ENCODING_INT4_BLOCK32) {
    p.Add("transfer.task_encoding",
          "must be FLOAT32 or INT8_PER_CHANNEL with language_model (the adapters)");
  }
}

void CheckLanguageModelEvaluation(const v1::JobConfig& job, ConfigProblems& p) {
  const v1::EvaluationConfig& e = job.evaluation();
  if (!e.dataset().empty() || !e.data_path().empty()) {
    p.Add("evaluation", "names no image data with language_model: the held-out text is "
                        "language_model.eval_text_path");
  }
}

// FedCG's local training defaults (the paper's: 20 epochs, batch 8, Adam 3e-4), filled
// before CheckLocalTraining fills the generic ones.
void FillFedCgTrainingDefaults(v1::LocalTraining& t) {
  if (!t.has_epochs()) t.set_epochs(20);
  if (!t.has_batch_size()) t.set_batch_size(8);
  if (!t.has_learning_rate()) t.set_learning_rate(3e-4);
  if (t.optimizer() == v1::OPTIMIZER_KIND_UNSPECIFIED) t.set_optimizer(v1::OPTIMIZER_KIND_ADAM);
}

// The model FedCG jobs carry (proto/job.proto, FedCgParams): a spec that names the shape.
v1::ModelSpec FedCgModelSpec(const v1::FedCgParams& f) {
  v1::ModelSpec spec;
  spec.set_name("fedcg");
  spec.add_input_shape(f.image_size());
  spec.add_input_shape(f.image_size());
  spec.add_input_shape(f.channels());
  return spec;
}

// What a FedCG job cannot have, each refusal naming the field and why (proto/job.proto,
// FedCgParams). Secure aggregation is refused in CheckPrivacy.
void CheckFedCg(v1::JobConfig& job, ConfigProblems& p) {
  const v1::FedCgParams& f = job.strategy().fed_cg();
  if (!job.architecture().empty()) {
    p.Add("architecture", "must be omitted with strategy.fed_cg (FedCG's networks are "
                          "model/fedcg_nets.h's for strategy.fed_cg's shape)");
  } else if (job.has_model_spec() &&
             !google::protobuf::util::MessageDifferencer::Equals(job.model_spec(),
                                                                 FedCgModelSpec(f))) {
    p.Add("model_spec", "must be omitted with strategy.fed_cg (FedCG's networks are "
                        "model/fedcg_nets.h's for strategy.fed_cg's shape)");
  } else {
    *job.mutable_model_spec() = FedCgModelSpec(f);
  }
  if (job.strategy().server_learning_rate() != 1.0) {
    p.Add("strategy.server_learning_rate",
          absl::StrCat("must be 1 with strategy.fed_cg (FedCG averages C and G, then distills), "
                       "got ", job.strategy().server_learning_rate()));
  }
  const v1::LocalTraining& t = job.local_training();
  if (t.optimizer() != v1::OPTIMIZER_KIND_ADAM) {
    p.Add("local_training.optimizer", "must be ADAM with strategy.fed_cg (FedCG's devices "
                                      "train E and C with Adam)");
  }
  if (t.compute_mode() != v1::COMPUTE_MODE_FP32) {
    p.Add("local_training.compute_mode",
          "must be FP32 with strategy.fed_cg (FedCG's devices train in fp32 only)");
  }
  if (t.max_steps() != 0) {
    p.Add("local_training.max_steps",
          "must be 0 with strategy.fed_cg (FedCG's devices run whole epochs)");
  }
  if (job.preprocessing().kind() != v1::Preprocessing::KIND_UNIT_RANGE) {
    p.Add("preprocessing.kind",
          "must be left at UNIT_RANGE with strategy.fed_cg (FedCG's devices resize their "
          "images and map them to [-1, 1] themselves)");
  }
  if (job.distillation().weight() != 0) {
    p.Add("distillation.weight",
          "must be 0 with strategy.fed_cg (FedCG distills on the server; the teacher "
          "distillation of sub-models does not apply)");
  }
  if (job.sub_models().tiers_size() > 0) {
    p.Add("sub_models.tiers", "must be empty with strategy.fed_cg (E, C, G and D are fixed "
                              "networks; FedCG has no sub-models)");
  }
  const v1::PrivacyConfig& pr = job.privacy();
  if (pr.noise_multiplier() != 0) {
    p.Add("privacy.noise_multiplier",
          "must be 0 with strategy.fed_cg: FedCG's server distillation uses each client's "
          "individual, unnoised classifier and generator (C_i, G_i), which the DP guarantee "
          "(central or distributed) would not cover");
  }
  if (pr.clip_norm() != 0) {
    p.Add("privacy.clip_norm",
          "must be 0 with strategy.fed_cg: FedCG's server distillation uses each client's "
          "unclipped C_i, G_i (clipping belongs to DP, which FedCG cannot offer)");
  }
  if (f.gan_architecture() == v1::FEDCG_GAN_CONV_BATCHNORM) {
    // One int8/int4 scale per tensor would round a batch norm's small running variances to
    // zero (and a quantized delta could push them below it).
    const v1::TransferConfig& tr = job.transfer();
    auto quantized = [](v1::TensorEncoding e) {
      return e != v1::TENSOR_ENCODING_UNSPECIFIED && e != v1::TENSOR_ENCODING_FLOAT32;
    };
    if (quantized(tr.task_encoding())) {
      p.Add("transfer.task_encoding", "must be FLOAT32 with strategy.fed_cg.gan_architecture "
                                      "CONV_BATCHNORM (G's batch norm running variances)");
    }
    if (quantized(tr.update_encoding())) {
      p.Add("transfer.update_encoding", "must be FLOAT32 with strategy.fed_cg.gan_architecture "
                                        "CONV_BATCHNORM (G's batch norm running variances)");
    }
  }
}

}  // namespace fedge::server::job_config_internal
