#include "server/job_config.h"

#include <algorithm>

#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/message_differencer.h"
#include "base/status_macros.h"
#include "model/fedcg_nets.h"
#include "model/sequential.h"
#include "model/transformer.h"
#include "model/zoo.h"
#include "server/config_text.h"
#include "server/job_config_kinds.h"

namespace fedge::server {

using job_config_internal::CheckFedCg;
using job_config_internal::CheckLanguageModel;
using job_config_internal::CheckLanguageModelEvaluation;
using job_config_internal::FillFedCgTrainingDefaults;

namespace {

// Collects the text-format parser's errors with 1-based positions.

// Accumulates "field: problem" lines so that one pass reports every bad field.
// Every problem of a job, named by field.
class Problems : public ConfigProblems {
 public:
  Problems() : ConfigProblems("JobConfig: invalid job") {}
};

bool ValidJobName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void CheckModel(v1::JobConfig& job, Problems& p) {
  const bool has_arch = !job.architecture().empty();
  const bool has_spec = job.has_model_spec();
  if (!has_arch && !has_spec) {
    p.Add("architecture", "or model_spec is required");
    return;
  }
  if (has_arch) {
    absl::StatusOr<v1::ModelSpec> named = model::ArchitectureByName(job.architecture());
    if (!named.ok()) {
      p.Add("architecture", absl::StrCat("names no known model: '", job.architecture(),
                                         "' (expected mlp or cnn)"));
      return;
    }
    if (has_spec && !google::protobuf::util::MessageDifferencer::Equals(*named, job.model_spec())) {
      p.Add("model_spec", absl::StrCat("differs from architecture '", job.architecture(),
                                       "': give one of them"));
      return;
    }
    *job.mutable_model_spec() = *std::move(named);
    return;
  }
  // The size first, from the spec alone: a hostile or mistaken spec is refused before the
  // network is built (building allocates its values and gradients).
  const int64_t params = model::SpecParameterCount(job.model_spec());
  if (params > kMaxJobParameters) {
    p.Add("model_spec", absl::StrCat("has ", params, " parameters; a job's model may have at most ",
                                     kMaxJobParameters));
    return;
  }
  absl::StatusOr<std::unique_ptr<model::Sequential>> net =
      model::Sequential::Create(job.model_spec());
  if (!net.ok()) p.Add("model_spec", absl::StrCat("is not a valid model: ", net.status().message()));
  for (const v1::LayerSpec& l : job.model_spec().layers()) {
    // Batch norm's running statistics are not deltas that clipping, DP noise or a server
    // optimizer may treat as gradients; FedCG's generator is their only user.
    if (l.has_batch_norm2d() || l.has_conv_transpose2d()) {
      p.Add("model_spec", absl::StrCat("layer '", l.name(), "': batch_norm2d and "
                                       "conv_transpose2d are FedCG generator layers only"));
    }
  }
}

void CheckStrategy(v1::StrategyConfig& s, Problems& p) {
  double default_lr = 1.0;
  switch (s.kind_case()) {
    case v1::StrategyConfig::KIND_NOT_SET:
      s.mutable_fed_avg();
      [[fallthrough]];
    case v1::StrategyConfig::kFedAvg:
      p.HalfOpenUnit("strategy.fed_avg.server_momentum", s.fed_avg().server_momentum());
      break;
    case v1::StrategyConfig::kFedProx: {
      v1::FedProxParams& f = *s.mutable_fed_prox();
      if (!f.has_mu()) f.set_mu(0.01);
      p.NonNegative("strategy.fed_prox.mu", f.mu());
      break;
    }
    case v1::StrategyConfig::kFedCg: {
      v1::FedCgParams& f = *s.mutable_fed_cg();
      if (!f.has_distill_steps()) f.set_distill_steps(2000);
      if (!f.has_distill_batch()) f.set_distill_batch(8);
      if (!f.has_distill_learning_rate()) f.set_distill_learning_rate(3e-4);
      if (!f.has_noise_dim()) f.set_noise_dim(100);
      if (!f.has_image_size()) f.set_image_size(32);
      if (!f.has_channels()) f.set_channels(1);
      if (!f.has_num_classes()) f.set_num_classes(10);
      if (!f.has_embed_dim()) f.set_embed_dim(10);
      if (!f.has_gan_epochs()) f.set_gan_epochs(20);
      if (!f.has_gan_learning_rate()) f.set_gan_learning_rate(3e-4);
      if (!f.has_gamma_ramp_rounds()) f.set_gamma_ramp_rounds(50);
      if (!f.has_eval_holdout_fraction()) f.set_eval_holdout_fraction(0.1);
      p.IntRange("strategy.fed_cg.distill_steps", f.distill_steps(), 0, 1000000);
      p.IntRange("strategy.fed_cg.distill_batch", f.distill_batch(), 1, 4096);
      p.Positive("strategy.fed_cg.distill_learning_rate", f.distill_learning_rate());
      p.IntRange("strategy.fed_cg.noise_dim", f.noise_dim(), 1, 4096);
      p.IntRange("strategy.fed_cg.image_size", f.image_size(), 16, 256);
      p.IntRange("strategy.fed_cg.channels", f.channels(), 1, 4);
      p.IntRange("strategy.fed_cg.num_classes", f.num_classes(), 2, 1000);
      p.IntRange("strategy.fed_cg.embed_dim", f.embed_dim(), 1, 4096);
      p.IntRange("strategy.fed_cg.gan_epochs", f.gan_epochs(), 0, kMaxLocalEpochs);
      p.Positive("strategy.fed_cg.gan_learning_rate", f.gan_learning_rate());
      p.IntRange("strategy.fed_cg.gamma_ramp_rounds", f.gamma_ramp_rounds(), 0, kMaxRounds);
      if (f.gan_architecture() != v1::FEDCG_GAN_DENSE &&
          f.gan_architecture() != v1::FEDCG_GAN_CONV_BATCHNORM) {
        p.Add("strategy.fed_cg.gan_architecture",
              absl::StrCat("unknown architecture ", f.gan_architecture()));
      } else if (f.image_size() >= 16 && f.image_size() <= 256) {
        const absl::Status shape = model::CheckFedCgGanShape(model::FedCgShapeFromParams(f));
        if (!shape.ok()) p.Add("strategy.fed_cg.gan_architecture", shape.message());
      }
      // Spectral normalization is the dense D's; the convolutional D has batch norm instead.
      const bool dense = f.gan_architecture() == v1::FEDCG_GAN_DENSE;
      if (!f.has_discriminator_spectral_norm()) {
        f.set_discriminator_spectral_norm(dense);
      } else if (f.discriminator_spectral_norm() && !dense) {
        p.Add("strategy.fed_cg.discriminator_spectral_norm",
              "applies to the DENSE gan_architecture only (FEDCG_GAN_CONV_BATCHNORM's "
              "discriminator uses batch norm); leave it unset or false");
      }
      if (!std::isfinite(f.eval_holdout_fraction()) || f.eval_holdout_fraction() < 0 ||
          f.eval_holdout_fraction() > 0.5) {
        p.Add("strategy.fed_cg.eval_holdout_fraction",
              absl::StrCat("must be in [0, 0.5], got ", f.eval_holdout_fraction()));
      }
      break;
    }
    case v1::StrategyConfig::kFedAdam:
    case v1::StrategyConfig::kFedYogi: {
      const bool adam = s.kind_case() == v1::StrategyConfig::kFedAdam;
      const std::string prefix = adam ? "strategy.fed_adam." : "strategy.fed_yogi.";
      v1::AdaptiveServerOptimizerParams& a = adam ? *s.mutable_fed_adam() : *s.mutable_fed_yogi();
      if (!a.has_beta1()) a.set_beta1(0.9);
      if (!a.has_beta2()) a.set_beta2(0.99);
      if (!a.has_tau()) a.set_tau(1e-3);
      p.HalfOpenUnit(prefix + "beta1", a.beta1());
      p.HalfOpenUnit(prefix + "beta2", a.beta2());
      p.Positive(prefix + "tau", a.tau());
      default_lr = 0.01;
      break;
    }
  }
  if (!s.has_server_learning_rate()) s.set_server_learning_rate(default_lr);
  p.Positive("strategy.server_learning_rate", s.server_learning_rate());
}

void CheckRounds(v1::JobConfig& job, Problems& p) {
  p.IntRange("rounds", job.rounds(), 1, kMaxRounds);

  v1::ClientSelection& sel = *job.mutable_selection();
  switch (sel.size_case()) {
    case v1::ClientSelection::SIZE_NOT_SET:
      sel.set_clients_per_round(kDefaultClientsPerRound);
      break;
    case v1::ClientSelection::kClientsPerRound:
      p.IntRange("selection.clients_per_round", sel.clients_per_round(), 1, kMaxClientsPerRound);
      break;
    case v1::ClientSelection::kFraction:
      if (!std::isfinite(sel.fraction()) || !(sel.fraction() > 0) || sel.fraction() > 1) {
        p.Add("selection.fraction", absl::StrCat("must be in (0, 1], got ", sel.fraction()));
      }
      break;
  }
  p.IntRange("selection.min_registered", sel.min_registered(), 0, kMaxClientsPerRound);

  v1::RoundPolicy& rp = *job.mutable_round_policy();
  const bool count_known = sel.has_clients_per_round();
  if (rp.has_quorum()) {
    p.IntRange("round_policy.quorum", rp.quorum(), 1, kMaxClientsPerRound);
    if (count_known && rp.quorum() > sel.clients_per_round()) {
      p.Add("round_policy.quorum", absl::StrCat("(", rp.quorum(),
                                                ") must be <= selection.clients_per_round (",
                                                sel.clients_per_round(), ")"));
    }
  } else if (count_known) {
    rp.set_quorum(sel.clients_per_round());
  }
  if (!rp.has_deadline_seconds()) rp.set_deadline_seconds(kDefaultDeadlineSeconds);
  if (!rp.has_max_failed_attempts()) rp.set_max_failed_attempts(kDefaultMaxFailedAttempts);
  p.IntRange("round_policy.max_failed_attempts", rp.max_failed_attempts(), 0, 1000000);
  if (!std::isfinite(rp.deadline_seconds()) || rp.deadline_seconds() < 0 ||
      rp.deadline_seconds() > kMaxDeadlineSeconds) {
    p.Add("round_policy.deadline_seconds",
          absl::StrCat("must be in [0, ", kMaxDeadlineSeconds, "], got ", rp.deadline_seconds()));
  }
}

void CheckLocalTraining(v1::LocalTraining& t, Problems& p) {
  if (!t.has_epochs()) t.set_epochs(1);
  if (!t.has_batch_size()) t.set_batch_size(64);
  if (!t.has_learning_rate()) t.set_learning_rate(0.01);
  if (!t.has_adam_beta1()) t.set_adam_beta1(0.9);
  if (!t.has_adam_beta2()) t.set_adam_beta2(0.999);
  if (!t.has_adam_epsilon()) t.set_adam_epsilon(1e-8);
  if (t.optimizer() == v1::OPTIMIZER_KIND_UNSPECIFIED) t.set_optimizer(v1::OPTIMIZER_KIND_SGD);
  if (t.compute_mode() == v1::COMPUTE_MODE_UNSPECIFIED) t.set_compute_mode(v1::COMPUTE_MODE_FP32);

  p.IntRange("local_training.epochs", t.epochs(), 1, kMaxLocalEpochs);
  p.IntRange("local_training.batch_size", t.batch_size(), 1, kMaxBatchSize);
  p.Positive("local_training.learning_rate", t.learning_rate());
  p.HalfOpenUnit("local_training.momentum", t.momentum());
  p.NonNegative("local_training.weight_decay", t.weight_decay());
  p.HalfOpenUnit("local_training.adam_beta1", t.adam_beta1());
  p.HalfOpenUnit("local_training.adam_beta2", t.adam_beta2());
  p.Positive("local_training.adam_epsilon", t.adam_epsilon());
  p.IntRange("local_training.max_steps", t.max_steps(), 0, int64_t{1} << 30);
  if (t.nesterov() && !(t.optimizer() == v1::OPTIMIZER_KIND_SGD && t.momentum() > 0)) {
    p.Add("local_training.nesterov", "requires optimizer SGD with momentum > 0");
  }
  if (t.optimizer() == v1::OPTIMIZER_KIND_ADAM && t.momentum() != 0) {
    p.Add("local_training.momentum", "applies to SGD only (Adam uses adam_beta1)");
  }
  if (t.compute_mode() == v1::COMPUTE_MODE_INT4) {
    p.Add("local_training.compute_mode", "must be FP32 or INT8 (INT4 is for inference only)");
  }
}

void CheckPreprocessing(v1::Preprocessing& pre, Problems& p) {
  if (pre.kind() == v1::Preprocessing::KIND_UNSPECIFIED) {
    pre.set_kind(v1::Preprocessing::KIND_UNIT_RANGE);
  }
  if (pre.kind() == v1::Preprocessing::KIND_STANDARDIZE) {
    if (!pre.has_mean()) pre.set_mean(0.2860);
    if (!pre.has_std()) pre.set_std(0.3530);
    if (!std::isfinite(pre.mean())) p.Add("preprocessing.mean", "must be finite");
    p.Positive("preprocessing.std", pre.std());
  } else if (pre.has_mean() || pre.has_std()) {
    p.Add("preprocessing.mean", "and std apply to kind STANDARDIZE only");
  }
}

void CheckDistillation(v1::DistillationConfig& d, Problems& p) {
  if (!d.has_temperature()) d.set_temperature(2.0);
  if (d.teacher() == v1::DistillationConfig::TEACHER_UNSPECIFIED) {
    d.set_teacher(v1::DistillationConfig::TEACHER_CENTRAL_MODEL);
  }
  if (d.teacher_compute_mode() == v1::COMPUTE_MODE_UNSPECIFIED) {
    d.set_teacher_compute_mode(v1::COMPUTE_MODE_INT8);
  }
  if (!std::isfinite(d.weight()) || d.weight() < 0 || d.weight() > 1) {
    p.Add("distillation.weight", absl::StrCat("(lambda) must be in [0, 1], got ", d.weight()));
  }
  p.Positive("distillation.temperature", d.temperature());
}

void CheckSubModels(v1::SubModelConfig& s, Problems& p) {
  if (s.extraction() == v1::SubModelConfig::EXTRACTION_UNSPECIFIED) {
    s.set_extraction(v1::SubModelConfig::EXTRACTION_LEADING);
  }
  std::set<std::string> names;
  for (int i = 0; i < s.tiers_size(); ++i) {
    const v1::SubModelTier& tier = s.tiers(i);
    const std::string field = absl::StrCat("sub_models.tiers[", i, "]");
    if (tier.name().empty()) p.Add(field + ".name", "must not be empty");
    if (!names.insert(tier.name()).second) {
      p.Add(field + ".name", absl::StrCat("'", tier.name(), "' is used twice"));
    }
    const double r = tier.width_ratio();
    if (!std::isfinite(r) || !(r > 0) || r > 1) {
      p.Add(field + ".width_ratio", absl::StrCat("must be in (0, 1], got ", r));
    }
    if (tier.compute_mode() == v1::COMPUTE_MODE_INT4) {
      p.Add(field + ".compute_mode", "must be FP32 or INT8 (INT4 is for inference only)");
    }
  }
  if (s.assignment() == v1::SubModelConfig::ASSIGNMENT_UNSPECIFIED) {
    s.set_assignment(v1::SubModelConfig::ASSIGNMENT_RULES);
  }
  if (!s.has_scaler()) s.set_scaler(true);
  if (s.assignment() == v1::SubModelConfig::ASSIGNMENT_LARGEST_FITTING && s.rules_size() > 0) {
    p.Add("sub_models.rules", "must be empty with assignment LARGEST_FITTING");
  }
  if (s.tiers_size() == 0 && (s.rules_size() > 0 || !s.default_tier().empty())) {
    p.Add("sub_models.tiers", "must not be empty when rules or default_tier are given");
  }
  for (int i = 0; i < s.rules_size(); ++i) {
    const v1::TierRule& rule = s.rules(i);
    const std::string field = absl::StrCat("sub_models.rules[", i, "]");
    if (names.count(rule.tier()) == 0) {
      p.Add(field + ".tier", absl::StrCat("'", rule.tier(), "' names no tier"));
    }
    if (rule.min_memory_budget_bytes() < 0) {
      p.Add(field + ".min_memory_budget_bytes", "must be >= 0");
    }
  }
  if (!s.default_tier().empty() && names.count(s.default_tier()) == 0) {
    p.Add("sub_models.default_tier", absl::StrCat("'", s.default_tier(), "' names no tier"));
  }
}

void CheckTransfer(v1::TransferConfig& t, Problems& p) {
  if (t.task_encoding() == v1::TENSOR_ENCODING_UNSPECIFIED) {
    t.set_task_encoding(v1::TENSOR_ENCODING_FLOAT32);
  }
  if (t.update_encoding() == v1::TENSOR_ENCODING_UNSPECIFIED) {
    t.set_update_encoding(v1::TENSOR_ENCODING_FLOAT32);
  }
  switch (t.task_encoding()) {
    case v1::TENSOR_ENCODING_FLOAT32:
    case v1::TENSOR_ENCODING_INT8_PER_CHANNEL:
    case v1::TENSOR_ENCODING_INT4_BLOCK32:
      break;
    default:
      p.Add("transfer.task_encoding",
            absl::StrCat("must be FLOAT32, INT8_PER_CHANNEL or INT4_BLOCK32, got ",
                         v1::TensorEncoding_Name(t.task_encoding())));
  }
  if (t.update_encoding() != v1::TENSOR_ENCODING_FLOAT32 &&
      t.update_encoding() != v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED) {
    p.Add("transfer.update_encoding",
          absl::StrCat("must be FLOAT32 or INT8_STOCHASTIC_CHUNKED, got ",
                       v1::TensorEncoding_Name(t.update_encoding())));
  }
}

void CheckPrivacy(v1::JobConfig& job, Problems& p) {
  v1::PrivacyConfig& pr = *job.mutable_privacy();
  if (!pr.has_delta()) pr.set_delta(1e-5);
  p.NonNegative("privacy.clip_norm", pr.clip_norm());
  p.NonNegative("privacy.noise_multiplier", pr.noise_multiplier());
  if (pr.noise_multiplier() > 0 && !(pr.clip_norm() > 0)) {
    p.Add("privacy.noise_multiplier", "> 0 requires privacy.clip_norm > 0");
  }
  if (!std::isfinite(pr.delta()) || !(pr.delta() > 0) || !(pr.delta() < 1)) {
    p.Add("privacy.delta", absl::StrCat("must be in (0, 1), got ", pr.delta()));
  }
  p.NonNegative("privacy.epsilon_budget", pr.epsilon_budget());
  if (pr.epsilon_budget() > 0 && !(pr.noise_multiplier() > 0)) {
    p.Add("privacy.epsilon_budget", "> 0 requires privacy.noise_multiplier > 0");
  }
  if (pr.has_adaptive_clipping()) {
    v1::AdaptiveClippingConfig& ac = *pr.mutable_adaptive_clipping();
    if (!ac.has_target_quantile()) ac.set_target_quantile(0.5);
    if (!ac.has_learning_rate()) ac.set_learning_rate(0.2);
    const double z = pr.noise_multiplier();
    if (!(z > 0)) {
      p.Add("privacy.adaptive_clipping", "needs privacy.noise_multiplier > 0 (DP-FedAvg)");
    }
    if (!(ac.target_quantile() > 0 && ac.target_quantile() < 1)) {
      p.Add("privacy.adaptive_clipping.target_quantile",
            absl::StrCat("must be in (0, 1), got ", ac.target_quantile()));
    }
    if (!(ac.learning_rate() > 0) || !std::isfinite(ac.learning_rate())) {
      p.Add("privacy.adaptive_clipping.learning_rate",
            absl::StrCat("must be finite and > 0, got ", ac.learning_rate()));
    }
    if (ac.count_noise_stddev() == 0 && z > 0) {
      // The paper's m/20, kept above z/2 so that the count leaves budget for the update.
      const double m = std::max(1, job.selection().clients_per_round());
      ac.set_count_noise_stddev(std::max(m / 20, z / 2 + 0.05));
    }
    if (z > 0 && !(2 * ac.count_noise_stddev() > z)) {
      p.Add("privacy.adaptive_clipping.count_noise_stddev",
            absl::StrCat("must be > noise_multiplier / 2 = ", z / 2, ", got ",
                         ac.count_noise_stddev()));
    }
  }
  const int t = pr.secure_aggregation_threshold();
  if (t != 0 && job.strategy().has_fed_cg()) {
    p.Add("strategy.fed_cg",
          "FedCG's server distillation needs each client's classifier and generator, which "
          "secure aggregation (privacy.secure_aggregation_threshold) hides from the server: "
          "turn one of them off");
  }
  if (t != 0) {
    if (t < 2) {
      p.Add("privacy.secure_aggregation_threshold",
            absl::StrCat("must be 0 (off) or >= 2, got ", t));
    } else if (job.round_policy().has_quorum() && t > job.round_policy().quorum()) {
      p.Add("privacy.secure_aggregation_threshold",
            absl::StrCat("(", t, ") must be <= round_policy.quorum (", job.round_policy().quorum(),
                         ")"));
    }
    if (!(pr.clip_norm() > 0)) {
      p.Add("privacy.secure_aggregation_threshold",
            "> 0 requires privacy.clip_norm > 0 (it bounds the fixed-point encoding of updates)");
    }
  }
  const int k = pr.secure_aggregation_neighbors(), ts = pr.secure_aggregation_share_threshold();
  if ((k != 0 || ts != 0 || pr.secure_aggregation_plus()) && t == 0) {
    p.Add("privacy.secure_aggregation_plus", "needs privacy.secure_aggregation_threshold > 0");
  }
  if ((k != 0 || ts != 0) && !pr.secure_aggregation_plus()) {
    p.Add("privacy.secure_aggregation_neighbors",
          "neighbours and share threshold apply to SecAgg+ (privacy.secure_aggregation_plus)");
  }
  if (k < 0 || k % 2 != 0) {
    p.Add("privacy.secure_aggregation_neighbors", absl::StrCat("must be even and >= 0, got ", k));
  }
  if (ts < 0 || (ts > 0 && k > 0 && ts > k + 1) || ts == 1) {
    p.Add("privacy.secure_aggregation_share_threshold",
          absl::StrCat("must be 0 (derived) or in [2, neighbours + 1], got ", ts));
  }
  if (ts > 0 && k == 0) {
    // With k derived from the round's size, a fixed t_s may not fit it: the job would be
    // accepted and then every round would fail to set its session up.
    p.Add("privacy.secure_aggregation_share_threshold",
          "needs privacy.secure_aggregation_neighbors (a share threshold with derived "
          "neighbours may not fit them)");
  }
}

// Hostile updates (proto/job.proto, RobustnessConfig): defaults, ranges, and the
// combinations a robust rule cannot work with. REQUIRES: local_training, round_policy,
// privacy and strategy filled.
void CheckRobustness(v1::JobConfig& job, Problems& p) {
  using Rule = v1::RobustnessConfig;
  v1::RobustnessConfig& r = *job.mutable_robustness();
  if (r.aggregation_rule() == Rule::AGGREGATION_RULE_UNSPECIFIED) {
    r.set_aggregation_rule(Rule::AGGREGATION_RULE_WEIGHTED_MEAN);
  }
  const v1::LocalTraining& t = job.local_training();
  if (!r.has_max_examples_per_update()) {
    // max_steps bounds a device's steps over the whole round (client/local_trainer.cc), so
    // it trains on at most max_steps × batch_size distinct examples.
    // A language model's examples are tokens: each step trains on batch_size windows.
    int64_t per_example = 1;
    if (job.has_language_model()) {
      const int window = job.language_model().window();
      per_example = window > 0                                ? window
                    : job.model_spec().has_transformer() ? job.model_spec().transformer().context()
                                                         : 4096;  // the longest context
    }
    r.set_max_examples_per_update(
        t.max_steps() > 0 ? int64_t{t.max_steps()} * t.batch_size() * per_example : 0);
  }
  if (!r.has_max_weight_multiple()) r.set_max_weight_multiple(2);
  if (!r.has_norm_bound_multiple()) r.set_norm_bound_multiple(2);
  const bool weighted_mean = r.aggregation_rule() == Rule::AGGREGATION_RULE_WEIGHTED_MEAN;
  if (job.strategy().exact_sums() && (!weighted_mean || job.strategy().has_fed_cg())) {
    p.Add("strategy.exact_sums",
          "applies to the weighted mean only: not with another robustness.aggregation_rule, "
          "nor with FedCG");
  }
  if (!r.has_direction_check()) r.set_direction_check(weighted_mean);
  if (!r.has_min_direction_agreement()) r.set_min_direction_agreement(0);
  if (!(r.min_direction_agreement() >= -1 && r.min_direction_agreement() <= 1)) {
    p.Add("robustness.min_direction_agreement",
          absl::StrCat("must be in [-1, 1], got ", r.min_direction_agreement()));
  }
  p.IntRange("robustness.max_examples_per_update", r.max_examples_per_update(), 0,
             int64_t{1} << 40);
  auto zero_or_at_least_one = [&](const std::string& field, double v) {
    if (!std::isfinite(v) || (v != 0 && !(v >= 1)) || v > 1e6) {
      p.Add(field, absl::StrCat("must be 0 (off) or in [1, 1e6], got ", v));
    }
  };
  zero_or_at_least_one("robustness.max_weight_multiple", r.max_weight_multiple());
  zero_or_at_least_one("robustness.norm_bound_multiple", r.norm_bound_multiple());
  p.NonNegative("robustness.max_update_norm", r.max_update_norm());
  const bool trimmed = r.aggregation_rule() == Rule::AGGREGATION_RULE_TRIMMED_MEAN;
  const bool krum = r.aggregation_rule() == Rule::AGGREGATION_RULE_MULTI_KRUM;
  if (trimmed && !r.has_trim_fraction()) r.set_trim_fraction(0.1);
  if (krum && !r.has_krum_byzantine()) r.set_krum_byzantine(1);
  if (r.has_trim_fraction() && !trimmed) {
    p.Add("robustness.trim_fraction", "applies to TRIMMED_MEAN only");
  }
  if (krum && r.direction_check()) {
    p.Add("robustness.direction_check",
          "must be false with MULTI_KRUM (it selects updates by their distances already)");
  }
  if ((r.has_krum_byzantine() || r.krum_selected() != 0) && !krum) {
    p.Add("robustness.krum_byzantine", "and krum_selected apply to MULTI_KRUM only");
  }
  if (trimmed && !(r.trim_fraction() >= 0 && r.trim_fraction() < 0.5)) {
    p.Add("robustness.trim_fraction",
          absl::StrCat("(beta) must be in [0, 0.5), got ", r.trim_fraction()));
  }
  if (krum) {
    const int f = r.krum_byzantine();
    const int quorum = job.round_policy().quorum();
    p.IntRange("robustness.krum_byzantine", f, 0, kMaxClientsPerRound / 2);
    if (f >= 0 && !(job.round_policy().has_quorum() && quorum >= 2 * int64_t{f} + 3)) {
      p.Add("round_policy.quorum",
            absl::StrCat("must be >= 2f + 3 = ", 2 * int64_t{f} + 3,
                         " with MULTI_KRUM (Krum needs n > 2f + 2 updates)"));
    } else if (f >= 0 && (r.krum_selected() < 0 || r.krum_selected() > quorum - f)) {
      p.Add("robustness.krum_selected", absl::StrCat("must be in [0, quorum - f = ", quorum - f,
                                                     "], got ", r.krum_selected()));
    }
  }
  if (r.aggregation_rule() == Rule::AGGREGATION_RULE_WEIGHTED_MEAN) return;
  const std::string rule = Rule::AggregationRule_Name(r.aggregation_rule());
  if (job.privacy().secure_aggregation_threshold() > 0) {
    p.Add("robustness.aggregation_rule",
          absl::StrCat(rule, " needs each update, which secure aggregation "
                             "(privacy.secure_aggregation_threshold) hides from the server"));
  }
  if (job.strategy().has_fed_cg()) {
    p.Add("robustness.aggregation_rule",
          absl::StrCat(rule, " cannot run with strategy.fed_cg (FedCG averages C and G, then "
                             "distills the clients' own pairs)"));
  }
  if (job.privacy().noise_multiplier() > 0) {
    p.Add("robustness.aggregation_rule",
          absl::StrCat(rule, " cannot run with DP noise (privacy.noise_multiplier): the noise "
                             "is calibrated to the mean's sensitivity, not this rule's"));
  }
}

// `images`: an image job's evaluation data (a language model's is its held-out text, named
// in language_model).
void CheckEvaluation(v1::EvaluationConfig& e, bool images, Problems& p) {
  if (images && e.data_path().empty()) {
    if (e.dataset().empty()) e.set_dataset(kDefaultEvaluationDataset);
    if (e.dataset() != kDefaultEvaluationDataset) {
      p.Add("evaluation.dataset",
            absl::StrCat("'", e.dataset(), "' is unknown (expected fashion-mnist or a data_path)"));
    }
  }
  if (!e.has_batch_size()) e.set_batch_size(256);
  if (!e.has_every_rounds()) e.set_every_rounds(1);
  p.IntRange("evaluation.batch_size", e.batch_size(), 1, kMaxBatchSize);
  p.IntRange("evaluation.max_examples", e.max_examples(), 0, int64_t{1} << 31);
  p.IntRange("evaluation.every_rounds", e.every_rounds(), 1, kMaxRounds);
}

}  // namespace

absl::StatusOr<v1::JobConfig> ParseJobConfig(absl::string_view text, absl::string_view source) {
  if (text.size() > kMaxJobConfigTextBytes) {
    return absl::InvalidArgumentError(absl::StrCat("JobConfig: ", source, " has ", text.size(),
                                                   " bytes, more than the limit of ",
                                                   kMaxJobConfigTextBytes));
  }
  v1::JobConfig job;
  FEDGE_RETURN_IF_ERROR(ParseTextProto(text, source, "JobConfig", &job));
  return job;
}

absl::StatusOr<v1::JobConfig> ValidateJobConfig(const v1::JobConfig& config) {
  v1::JobConfig job = config;
  Problems p;
  if (!ValidJobName(job.name())) {
    p.Add("name", absl::StrCat("must be 1-64 characters from [A-Za-z0-9_.-], got '", job.name(),
                               "'"));
  }
  const bool fed_cg = job.strategy().has_fed_cg();
  const bool language_model = job.has_language_model();
  // FedCG's model is checked in CheckFedCg, a language model's in CheckLanguageModel.
  if (!fed_cg && !language_model) CheckModel(job, p);
  if (language_model) CheckLanguageModel(job, p);
  CheckStrategy(*job.mutable_strategy(), p);
  CheckRounds(job, p);
  if (fed_cg) FillFedCgTrainingDefaults(*job.mutable_local_training());
  CheckLocalTraining(*job.mutable_local_training(), p);
  CheckPreprocessing(*job.mutable_preprocessing(), p);
  CheckDistillation(*job.mutable_distillation(), p);
  CheckSubModels(*job.mutable_sub_models(), p);
  CheckTransfer(*job.mutable_transfer(), p);
  CheckPrivacy(job, p);
  if (language_model) CheckLanguageModelEvaluation(job, p);
  CheckEvaluation(*job.mutable_evaluation(), /*images=*/!language_model, p);
  if (fed_cg) CheckFedCg(job, p);
  CheckRobustness(job, p);
  if (!job.has_keep_checkpoints()) job.set_keep_checkpoints(kDefaultKeepCheckpoints);
  p.IntRange("keep_checkpoints", job.keep_checkpoints(), 1, kMaxKeepCheckpoints);
  if (!p.empty()) return p.ToStatus();
  return job;
}

absl::StatusOr<v1::JobConfig> LoadJobConfig(absl::string_view text, absl::string_view source) {
  absl::StatusOr<v1::JobConfig> parsed = ParseJobConfig(text, source);
  if (!parsed.ok()) return parsed.status();
  return ValidateJobConfig(*parsed);
}

}  // namespace fedge::server
