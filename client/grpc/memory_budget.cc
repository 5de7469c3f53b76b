#include "client/grpc/memory_budget.h"

#include <sys/resource.h>

#include <string>

#include "absl/strings/str_format.h"

namespace fedge::client {

TaskMemoryEstimate EstimateTaskMemory(model::Sequential& net, const LocalTrainingOptions& options,
                                      int64_t data_copy_floats) {
  const int64_t slots =
      options.optimizer == LocalTrainingOptions::Optimizer::kAdam ? 2 : (options.momentum > 0 ? 1 : 0);
  TaskMemoryEstimate e;
  e.parameter_bytes = 4 * net.num_parameters() * (6 + slots);
  int64_t per_example = net.input_size();
  for (int i = 0; i < net.num_layers(); ++i) per_example += net.layer(i).output_size();
  e.activation_bytes = 4 * 3 * per_example * static_cast<int64_t>(options.batch_size);
  e.data_copy_bytes = 4 * data_copy_floats;
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
      "MemoryBudget: the task needs about %s (parameters %s, activations %s, data copy %s), "
      "over the device's budget of %s",
      Bytes(e.total()), Bytes(e.parameter_bytes), Bytes(e.activation_bytes),
      Bytes(e.data_copy_bytes), Bytes(budget_bytes)));
}

int64_t PeakRssBytes() {
  struct rusage u;
  if (::getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // KiB on Linux
}

}  // namespace fedge::client
