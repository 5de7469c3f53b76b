// Whether a task fits the device's memory budget (DeviceProfile.memory_budget_bytes), judged
// before its model is downloaded, and the process's peak RSS for reports.
//
// The estimate is the one the coordinator picks tiers by (model/submodel_slicer.h), so that a
// device never refuses the tier it was given: what one round holds at its peak
// (EstimateDeviceRoundMemoryBytes: weights, gradients, optimizer slots, the received model,
// Δ and its encoding, a batch's activations and gradients, conv scratch), the distillation
// teacher when the task has one (EstimateTeacherMemoryBytes), and the preprocessed copy of
// the local data when the task's preprocessing makes one. It leaves out the runtime's fixed
// cost (code, gRPC), which the budget does not cover.
#ifndef FEDGE_CLIENT_MEMORY_BUDGET_H_
#define FEDGE_CLIENT_MEMORY_BUDGET_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/local_trainer.h"
#include "model/fedcg_nets.h"
#include "model/sequential.h"

namespace fedge::client {

struct TaskMemoryEstimate {
  int64_t round_bytes = 0;    // the model's training round
  int64_t teacher_bytes = 0;  // the distillation teacher
  int64_t data_copy_bytes = 0;
  int64_t total() const { return round_bytes + teacher_bytes + data_copy_bytes; }
};

// `teacher` may be null (no distillation). `data_copy_floats`: floats of the preprocessed
// copy of the local data (0 when the task trains on the raw data). INVALID_ARGUMENT when
// the model or the teacher cannot be estimated (a layer the estimate does not know, a batch
// size < 1): a budget cannot be checked against nothing, so such a task is refused rather
// than taken as free.
absl::StatusOr<TaskMemoryEstimate> EstimateTaskMemory(const v1::ModelSpec& spec,
                                                      const v1::ModelSpec* teacher,
                                                      const LocalTrainingOptions& options,
                                                      int64_t data_copy_floats);

// A FedCG task's estimate (client/fedcg_trainer.h, EstimateFedCgRoundMemoryBytes) for its
// networks' shape and batch size, with FedCG's copy of the local data (FedCgInputs: every
// example resized to image_size² × channels floats). No teacher. Errors: as the estimate.
absl::StatusOr<TaskMemoryEstimate> EstimateFedCgTaskMemory(const model::FedCgShape& shape,
                                                           int batch_size, int64_t num_examples);

// OK when `budget_bytes` is 0 (no budget) or the estimate fits; else RESOURCE_EXHAUSTED
// saying how much the task needs and what the budget is.
absl::Status CheckMemoryBudget(const TaskMemoryEstimate& estimate, int64_t budget_bytes);

// The process's peak resident set size so far, in bytes (0 when unknown).
int64_t PeakRssBytes();

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_MEMORY_BUDGET_H_
