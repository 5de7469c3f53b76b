#include "server/round_planner.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "model/payload.h"

namespace fedge::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

v1::TensorEncoding TeacherEncoding(v1::ComputeMode mode) {
  switch (mode) {
    case v1::COMPUTE_MODE_FP32:
      return v1::TENSOR_ENCODING_FLOAT32;
    case v1::COMPUTE_MODE_INT4:
      return v1::TENSOR_ENCODING_INT4_BLOCK32;
    default:
      return v1::TENSOR_ENCODING_INT8_PER_CHANNEL;
  }
}

}  // namespace

int64_t RoundPlanner::EncodedBytes(const v1::ModelProto& model, v1::TensorEncoding encoding) {
  int64_t total = 0;
  for (const model::PayloadTensorSpec& spec : model::ParameterSpecs(model)) {
    total += model::EncodedBytes(spec, encoding);
  }
  return total;
}

absl::StatusOr<std::unique_ptr<RoundPlanner>> RoundPlanner::Create(const v1::JobConfig& config) {
  std::unique_ptr<RoundPlanner> planner(new RoundPlanner(config));
  const v1::LocalTraining& training = config.local_training();
  for (const v1::SubModelTier& t : config.sub_models().tiers()) {
    Tier tier;
    tier.name = t.name();
    tier.width_ratio = t.width_ratio();
    tier.compute_mode = t.compute_mode() != v1::COMPUTE_MODE_UNSPECIFIED ? t.compute_mode()
                                                                         : training.compute_mode();
    FEDGE_ASSIGN_OR_RETURN(model::SubModelSlicer slicer,
                           model::SubModelSlicer::Create(config.model_spec(), t.width_ratio(),
                                                         model::SubModelExtraction::kLeading, 0));
    tier.leading = std::make_shared<const model::SubModelSlicer>(std::move(slicer));
    tier.spec = tier.leading->sub_spec();
    // The device checks its budget against the same estimates (client/memory_budget.h).
    tier.training_bytes = model::EstimateDeviceRoundMemoryBytes(
        tier.spec, training.batch_size(), training.optimizer() == v1::OPTIMIZER_KIND_ADAM);
    tier.teacher_bytes = model::EstimateTeacherMemoryBytes(tier.spec, training.batch_size());
    planner->tiers_.push_back(std::move(tier));
  }
  return planner;
}

int RoundPlanner::AssignTier(const v1::DeviceProfile& profile) const {
  if (tiers_.empty()) return -1;
  const v1::SubModelConfig& sub = config_.sub_models();
  auto index_of = [&](const std::string& name) {
    for (size_t i = 0; i < tiers_.size(); ++i) {
      if (tiers_[i].name == name) return static_cast<int>(i);
    }
    return -1;
  };
  if (sub.assignment() == v1::SubModelConfig::ASSIGNMENT_LARGEST_FITTING) {
    int best = -1;
    if (profile.memory_budget_bytes() > 0) {
      for (size_t i = 0; i < tiers_.size(); ++i) {
        if (tiers_[i].training_bytes > profile.memory_budget_bytes()) continue;
        if (best < 0 || tiers_[i].width_ratio > tiers_[best].width_ratio) best = static_cast<int>(i);
      }
    }
    if (best >= 0) return best;
  } else {
    for (const v1::TierRule& rule : sub.rules()) {
      if (profile.memory_budget_bytes() < rule.min_memory_budget_bytes()) continue;
      if (rule.min_compute_class() != v1::COMPUTE_CLASS_UNSPECIFIED &&
          profile.compute_class() < rule.min_compute_class()) {
        continue;
      }
      if (!absl::StartsWith(profile.platform(), rule.platform_prefix())) continue;
      return index_of(rule.tier());
    }
  }
  if (!sub.default_tier().empty()) return index_of(sub.default_tier());
  int smallest = 0;
  for (size_t i = 1; i < tiers_.size(); ++i) {
    if (tiers_[i].width_ratio < tiers_[smallest].width_ratio) smallest = static_cast<int>(i);
  }
  return smallest;
}

absl::StatusOr<ClientPlan> RoundPlanner::PlanClient(RoundModels& models, int64_t round,
                                                    const std::string& client_id,
                                                    const v1::DeviceProfile& profile) const {
  ClientPlan plan;
  plan.tier = AssignTier(profile);
  plan.model = models.central_;
  if (plan.tier < 0) return plan;
  const Tier& tier = tiers_[plan.tier];
  const v1::SubModelConfig& sub = config_.sub_models();
  if (sub.extraction() == v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET) {
    // Federated Dropout: this client's own subset, drawn from (seed, client, round).
    const uint64_t seed =
        base::Rng(sub.seed() ^ base::Fnv1a(client_id), static_cast<uint64_t>(round)).NextU64();
    FEDGE_ASSIGN_OR_RETURN(model::SubModelSlicer slicer,
                           model::SubModelSlicer::Create(config_.model_spec(), tier.width_ratio,
                                                         model::SubModelExtraction::kRandomSubset,
                                                         seed));
    plan.slicer = std::make_shared<const model::SubModelSlicer>(std::move(slicer));
    FEDGE_ASSIGN_OR_RETURN(v1::ModelProto m, plan.slicer->Slice(*models.central_));
    if (sub.scaler()) *m.mutable_spec() = plan.slicer->scaled_sub_spec();
    plan.model = std::make_shared<const v1::ModelProto>(std::move(m));
  } else if (tier.width_ratio < 1) {
    plan.slicer = tier.leading;
    FEDGE_ASSIGN_OR_RETURN(plan.model, TierModel(models, plan.tier));
  }
  if (config_.distillation().weight() <= 0 || tier.width_ratio >= 1) return plan;
  FEDGE_RETURN_IF_ERROR(PlanTeacher(models, profile.memory_budget_bytes(), plan));
  return plan;
}

absl::Status RoundPlanner::PlanTeacher(RoundModels& models, int64_t budget,
                                       ClientPlan& plan) const {
  // The full model when it fits beside the client's own training (or the budget is
  // unknown), else the largest tier that does (never one smaller than the client's own).
  const Tier& tier = tiers_[plan.tier];
  const int64_t free_bytes = budget > 0 ? budget - tier.training_bytes : INT64_MAX;
  auto fits = [&](int64_t teacher_bytes) { return teacher_bytes <= free_bytes; };
  // Candidates: the full model, then tiers larger than the client's, largest first.
  int64_t full_teacher_bytes = INT64_MAX;
  for (const Tier& t : tiers_) {
    if (t.width_ratio >= 1) full_teacher_bytes = std::min(full_teacher_bytes, t.teacher_bytes);
  }
  if (full_teacher_bytes == INT64_MAX) {
    full_teacher_bytes = model::EstimateTeacherMemoryBytes(config_.model_spec(),
                                                           config_.local_training().batch_size());
  }
  const bool central_first =
      config_.distillation().teacher() != v1::DistillationConfig::TEACHER_LARGEST_FITTING_TIER;
  if (central_first && fits(full_teacher_bytes)) {
    plan.teacher = models.central_;
    return absl::OkStatus();
  }
  int best = -1;
  for (size_t i = 0; i < tiers_.size(); ++i) {
    const Tier& t = tiers_[i];
    if (t.width_ratio <= tier.width_ratio || !fits(t.teacher_bytes)) continue;
    if (best < 0 || t.width_ratio > tiers_[best].width_ratio) best = static_cast<int>(i);
  }
  if (best < 0) return absl::OkStatus();  // nothing larger fits: train without a teacher
  if (tiers_[best].width_ratio >= 1) {
    plan.teacher = models.central_;
    return absl::OkStatus();
  }
  FEDGE_ASSIGN_OR_RETURN(plan.teacher, TierModel(models, best));
  plan.teacher_tier = best;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const v1::ModelProto>> RoundPlanner::TierModel(RoundModels& models,
                                                                              int tier) const {
  std::shared_ptr<const v1::ModelProto>& cached = models.tier_models_[tier];
  if (cached == nullptr) {
    const model::SubModelSlicer& slicer = *tiers_[tier].leading;
    FEDGE_ASSIGN_OR_RETURN(v1::ModelProto m, slicer.Slice(*models.central_));
    // With the job's scalers (they scale in inference too, so the same model serves the
    // tier's own tasks and, as a teacher, smaller tiers).
    if (config_.sub_models().scaler()) *m.mutable_spec() = slicer.scaled_sub_spec();
    cached = std::make_shared<const v1::ModelProto>(std::move(m));
  }
  return cached;
}

TaskAssignment RoundPlanner::Assign(const ClientPlan& plan, const TaskContext& ctx) const {
  TaskAssignment task;
  v1::TaskHeader& h = task.header;
  h.set_job_id(ctx.job_id);
  h.set_round(ctx.round);
  h.set_task_id(absl::StrCat(ctx.job_id, "/", ctx.round, "/", ctx.attempt, "/", ctx.client_id));
  if (ctx.deadline != absl::InfiniteFuture()) h.set_deadline_unix_ms(UnixMs(ctx.deadline));
  const v1::JobConfig& cfg = config_;
  *h.mutable_model_spec() = plan.model->spec();
  *h.mutable_training() = cfg.local_training();
  *h.mutable_preprocessing() = cfg.preprocessing();
  if (cfg.strategy().has_fed_prox()) h.set_fedprox_mu(cfg.strategy().fed_prox().mu());
  if (cfg.strategy().has_fed_cg()) *h.mutable_fed_cg() = cfg.strategy().fed_cg();
  if (cfg.has_language_model()) {
    v1::LanguageModelTask* lm = h.mutable_language_model();
    lm->set_base_sha256(cfg.language_model().base_sha256());
    lm->set_base_int4_sha256(cfg.language_model().base_int4_sha256());
    if (cfg.language_model().full_parameters()) {
      lm->set_full_parameters(true);
    } else {
      *lm->mutable_lora() = cfg.language_model().lora();
      // A's random start: what a device draws its frozen A from (FFA-LoRA), as the
      // coordinator drew the job's.
      lm->mutable_lora()->set_seed(cfg.init_seed());
    }
    lm->set_window(cfg.language_model().window() > 0 ? cfg.language_model().window()
                                                     : cfg.model_spec().transformer().context());
  }
  *h.mutable_privacy() = cfg.privacy();
  if (ctx.clip_norm > 0) h.mutable_privacy()->set_clip_norm(ctx.clip_norm);
  h.set_update_encoding(cfg.transfer().update_encoding());
  if (ctx.secure != nullptr) *h.mutable_secure_aggregation() = ctx.secure->SessionFor(ctx.client_id);
  if (plan.tier >= 0) {
    const Tier& tier = tiers_[plan.tier];
    h.set_tier(tier.name);
    h.set_width_ratio(tier.width_ratio);
    h.mutable_training()->set_compute_mode(tier.compute_mode);
  } else {
    h.set_width_ratio(1.0);
  }
  task.model = plan.model;
  task.model_encoding = cfg.transfer().task_encoding();
  if (plan.teacher != nullptr) {
    *h.mutable_distillation() = cfg.distillation();
    *h.mutable_teacher_spec() = plan.teacher->spec();
    if (plan.teacher_tier >= 0) h.set_teacher_tier(tiers_[plan.teacher_tier].name);
    task.teacher = plan.teacher;
    task.teacher_encoding = TeacherEncoding(cfg.distillation().teacher_compute_mode());
  }
  return task;
}

}  // namespace fedge::server
