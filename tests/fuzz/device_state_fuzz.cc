// The device's state files (its id and device key; a FedCG device's private networks), as
// fedge-client reads them at start. Input: [1 byte: 0 = state file, else FedCG state]
// [rest: the file]. Invariant: a state that loads saves and loads back the same.
#include <cstdint>

#include "client/device_state.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static auto* file = new fedge::fuzz::ScratchFile("state");
  static auto* copy = new fedge::fuzz::ScratchFile("state-copy");
  const absl::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] == 0) {
    auto state = fedge::client::LoadDeviceState(file->Write(rest));
    if (!state.ok()) return 0;
    const std::string& path = copy->Write("");
    FEDGE_FUZZ_ASSERT(fedge::client::SaveDeviceState(path, *state).ok());
    auto back = fedge::client::LoadDeviceState(path);
    FEDGE_FUZZ_ASSERT(back.ok() && back->client_id == state->client_id &&
                      back->device_key == state->device_key);
  } else {
    auto fedcg = fedge::client::LoadFedCgPrivateState(file->Write(rest));
    (void)fedcg;
  }
  return 0;
}
