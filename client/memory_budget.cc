#include "client/memory_budget.h"

#include <sys/resource.h>

#include <string>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/fedcg_trainer.h"
#include "model/submodel_slicer.h"

namespace fedge::client {

absl::StatusOr<TaskMemoryEstimate> EstimateTaskMemory(const v1::ModelSpec& spec,
                                                      const v1::ModelSpec* teacher,
                                                      const LocalTrainingOptions& options,
                                                      int64_t data_copy_floats) {
  TaskMemoryEstimate e;
  e.round_bytes = model::EstimateDeviceRoundMemoryBytes(
      spec, options.batch_size, options.optimizer == LocalTrainingOptions::Optimizer::kAdam);
  if (e.round_bytes < 0) {
    return absl::InvalidArgumentError(
        "MemoryBudget: the task's model cannot be estimated against the memory budget");
  }
  if (teacher != nullptr) {
    e.teacher_bytes = model::EstimateTeacherMemoryBytes(*teacher, options.batch_size);
    if (e.teacher_bytes < 0) {
      return absl::InvalidArgumentError(
          "MemoryBudget: the task's teacher cannot be estimated against the memory budget");
    }
  }
  e.data_copy_bytes = 4 * std::max<int64_t>(0, data_copy_floats);
  return e;
}

absl::StatusOr<TaskMemoryEstimate> EstimateFedCgTaskMemory(const model::FedCgShape& shape,
                                                           int batch_size, int64_t num_examples) {
  TaskMemoryEstimate e;
  FEDGE_ASSIGN_OR_RETURN(e.round_bytes, EstimateFedCgRoundMemoryBytes(shape, batch_size));
  e.data_copy_bytes = 4 * std::max<int64_t>(0, num_examples) * shape.channels * shape.image_size *
                      shape.image_size;
  return e;
}

namespace {

std::string Bytes(int64_t b) {
  if (b >= 1'000'000) return absl::StrFormat("%.1f MB", b / 1e6);
  return absl::StrFormat("%.1f kB", b / 1e3);
}

}  // namespace

absl::Status CheckMemoryBudget(const TaskMemoryEstimate& e, int64_t budget_bytes) {
  if (budget_bytes <= 0 || e.total() <= budget_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "MemoryBudget: the task needs about %s (training round %s, teacher %s, data copy %s), "
      "over the device's budget of %s",
      Bytes(e.total()), Bytes(e.round_bytes), Bytes(e.teacher_bytes), Bytes(e.data_copy_bytes),
      Bytes(budget_bytes)));
}

int64_t PeakRssBytes() {
  struct rusage u;
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // KiB on Linux
}

}  // namespace fedge::client
