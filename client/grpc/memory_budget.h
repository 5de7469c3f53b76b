// Whether a task fits the device's memory budget (DeviceProfile.memory_budget_bytes), judged
// before its model is downloaded, and the process's peak RSS for reports.
//
// The estimate counts what one round of client::TrainLocally holds at its peak, in fp32:
//   parameters ×(received model + weights + gradients + initial copy + delta + encoded
//   update + optimizer slots: SGD with momentum 1, Adam 2) + a batch's activations and their
//   gradients (input and every layer's output, ×3 for layers' saved state) + the
//   preprocessed copy of the local data when the task's preprocessing makes one.
// It leaves out the runtime's fixed cost (code, gRPC), which the budget does not cover.
#ifndef FEDGE_CLIENT_GRPC_MEMORY_BUDGET_H_
#define FEDGE_CLIENT_GRPC_MEMORY_BUDGET_H_

#include <cstdint>

#include "absl/status/status.h"
#include "client/local_trainer.h"
#include "model/sequential.h"

namespace fedge::client {

struct TaskMemoryEstimate {
  int64_t parameter_bytes = 0;
  int64_t activation_bytes = 0;
  int64_t data_copy_bytes = 0;
  int64_t total() const { return parameter_bytes + activation_bytes + data_copy_bytes; }
};

// `data_copy_floats`: floats of the preprocessed copy of the local data (0 when the task
// trains on the raw data).
TaskMemoryEstimate EstimateTaskMemory(model::Sequential& net, const LocalTrainingOptions& options,
                                      int64_t data_copy_floats);

// OK when `budget_bytes` is 0 (no budget) or the estimate fits; else RESOURCE_EXHAUSTED
// saying how much the task needs and what the budget is.
absl::Status CheckMemoryBudget(const TaskMemoryEstimate& estimate, int64_t budget_bytes);

// The process's peak resident set size so far, in bytes (0 when unknown).
int64_t PeakRssBytes();

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_GRPC_MEMORY_BUDGET_H_
