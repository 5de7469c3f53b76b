// The round planner (a room of server::Coordinator): who trains which sub-model, with which
// teacher, and the task header each sampled device receives. Built once per job from its
// config; one RoundModels per round holds the models that round's tasks share.
//
//   FEDGE_ASSIGN_OR_RETURN(auto planner, RoundPlanner::Create(config));
//   RoundPlanner::RoundModels models(central_model, planner->tiers().size());
//   FEDGE_ASSIGN_OR_RETURN(ClientPlan plan, planner->PlanClient(models, round, id, profile));
//   TaskAssignment task = planner->Assign(plan, context);   // what FetchTask returns
//
// Sub-models (HeteroFL / FjORD; Federated Dropout): with tiers in the job, a device gets a
// tier from its profile (SubModelConfig rules, or the largest tier whose estimated training
// memory fits its budget) and a task holding that tier's sub-model: leading extraction cuts
// one model per tier and round (shared by its tasks and as a teacher); random subsets cut
// one per device, seeded by (sub_models.seed, client, round). The estimates are the ones
// devices check their budget against (client/memory_budget.h), so a device never refuses
// the tier it was given.
// Distillation: a device whose sub-model is smaller than the full model gets a teacher: the
// full central model when its budget holds it beside its own training (or the budget is
// unknown), else the largest tier that fits (never one smaller than its own); devices
// holding the full model get none.
//
// Thread safety: const methods may run concurrently; RoundModels is not thread-safe (the
// coordinator plans a round under its lock).
#ifndef FEDGE_SERVER_ROUND_PLANNER_H_
#define FEDGE_SERVER_ROUND_PLANNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/submodel_slicer.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"
#include "server/secure_round.h"

namespace fedge::server {

// What a sampled client receives: the header (job, round, task id, deadline, architecture,
// training configuration, preprocessing, FedProx μ) and the round's model, shared by every
// task of the round. The transport encodes the model into the payload and fills the
// header's manifest and byte count (server/task_payload.h).
struct TaskAssignment {
  v1::TaskHeader header;
  std::shared_ptr<const v1::ModelProto> model;
  // How the transport encodes `model` (JobConfig.transfer.task_encoding).
  v1::TensorEncoding model_encoding = v1::TENSOR_ENCODING_FLOAT32;
  // The distillation teacher (header.teacher_spec), or null; encoded as `teacher_encoding`
  // in a second section of the payload.
  std::shared_ptr<const v1::ModelProto> teacher;
  v1::TensorEncoding teacher_encoding = v1::TENSOR_ENCODING_INT8_PER_CHANNEL;
};

// One sampled client's part of a round: its tier, the model it trains and its teacher.
struct ClientPlan {
  int tier = -1;  // index into RoundPlanner::tiers(); -1 = the full model (no tiers)
  std::shared_ptr<const model::SubModelSlicer> slicer;  // null = the full model
  std::shared_ptr<const v1::ModelProto> model;
  std::shared_ptr<const v1::ModelProto> teacher;
  int teacher_tier = -1;  // -1 = the full model
};

class RoundPlanner {
 public:
  // A sub-model tier of the job, with what the planner estimated for it.
  struct Tier {
    std::string name;
    double width_ratio = 1;
    v1::ComputeMode compute_mode = v1::COMPUTE_MODE_FP32;  // local training
    v1::ModelSpec spec;                                     // leading-extraction sub-model
    std::shared_ptr<const model::SubModelSlicer> leading;  // its slicer, built once per job
    int64_t training_bytes = 0;  // EstimateDeviceRoundMemoryBytes at the job's batch
    int64_t teacher_bytes = 0;   // as a teacher: weights in the teacher's mode + a batch
  };

  // One round's shared models: the central model and the tiers' leading sub-models, each
  // cut once when a task first needs it.
  class RoundModels {
   public:
    RoundModels(std::shared_ptr<const v1::ModelProto> central, size_t tiers)
        : central_(std::move(central)), tier_models_(tiers) {}
    const std::shared_ptr<const v1::ModelProto>& central() const { return central_; }

   private:
    friend class RoundPlanner;
    std::shared_ptr<const v1::ModelProto> central_;
    std::vector<std::shared_ptr<const v1::ModelProto>> tier_models_;
  };

  // Where a task sits: what the header says beyond the plan.
  struct TaskContext {
    std::string job_id;
    std::string client_id;
    int64_t round = 0;
    int attempt = 0;
    absl::Time deadline = absl::InfiniteFuture();
    double clip_norm = 0;                 // the round's (fixed or adaptive); 0 = none
    const SecureRound* secure = nullptr;  // the round's session, if any
  };

  // Errors: a tier the slicer refuses (model/submodel_slicer.h).
  static absl::StatusOr<std::unique_ptr<RoundPlanner>> Create(const v1::JobConfig& config);

  const std::vector<Tier>& tiers() const { return tiers_; }
  // The tier (index into tiers(), -1 without tiers) for a device profile.
  int AssignTier(const v1::DeviceProfile& profile) const;
  // `client_id`'s part of round `round` (its tier from `profile`, its model, its teacher).
  absl::StatusOr<ClientPlan> PlanClient(RoundModels& models, int64_t round,
                                        const std::string& client_id,
                                        const v1::DeviceProfile& profile) const;
  // The task `plan` gives its device.
  TaskAssignment Assign(const ClientPlan& plan, const TaskContext& context) const;
  // Payload bytes of `model`'s parameters in `encoding` (model/payload.h's layouts).
  static int64_t EncodedBytes(const v1::ModelProto& model, v1::TensorEncoding encoding);

 private:
  explicit RoundPlanner(v1::JobConfig config) : config_(std::move(config)) {}
  // Tier `tier`'s leading sub-model of the round (with the job's scalers when it has them).
  absl::StatusOr<std::shared_ptr<const v1::ModelProto>> TierModel(RoundModels& models,
                                                                  int tier) const;
  // A teacher for `plan` (a tier smaller than the full model) within `budget` bytes.
  absl::Status PlanTeacher(RoundModels& models, int64_t budget, ClientPlan& plan) const;

  const v1::JobConfig config_;
  std::vector<Tier> tiers_;  // empty: everyone trains the full model
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_ROUND_PLANNER_H_
