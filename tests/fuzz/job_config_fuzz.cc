// Job configs as an operator's StartJob carries them (text format): parsed, validated, and
// when valid, the job's model and strategy built (MakeJobModel). Invariant: validation is idempotent, and a valid job builds.
#include <cstdint>
#include <string>

#include "server/job_config.h"
#include "server/job_strategy.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fedge::server::kMaxJobConfigTextBytes) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = fedge::server::LoadJobConfig(text, "fuzz");
  if (!config.ok()) return 0;
  auto again = fedge::server::ValidateJobConfig(*config);
  FEDGE_FUZZ_ASSERT(again.ok());
  FEDGE_FUZZ_ASSERT(again->SerializeAsString() == config->SerializeAsString());
  auto job = fedge::server::MakeJobModel(*config);
  (void)job;  // may refuse (e.g. secure aggregation of a large model), never crash
  return 0;
}
