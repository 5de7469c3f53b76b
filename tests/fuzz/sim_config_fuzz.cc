// Simulator configs (fedge-sim --config): parsed and validated. Invariant: validation is
// idempotent.
#include <cstdint>

#include "sim/sim_config.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 20)) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = fedge::sim::ParseSimConfig(text, "fuzz");
  if (!parsed.ok()) return 0;
  auto config = fedge::sim::ValidateSimConfig(*parsed);
  if (!config.ok()) return 0;
  auto again = fedge::sim::ValidateSimConfig(*config);
  FEDGE_FUZZ_ASSERT(again.ok());
  FEDGE_FUZZ_ASSERT(again->SerializeAsString() == config->SerializeAsString());
  return 0;
}
