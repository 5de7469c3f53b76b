// Model files and specs from outside: a ModelProto (a task's model, an exported model file,
// a FedCG device's private state) built into a network, and one forward pass of a zero
// example through it. Input: [1 byte: bit 0: 0 = bytes are a ModelProto, 1 = a model
// file on disk; (byte / 2) % 3: fp32, int8 or int4 compute] [rest]. Invariant: a model that builds runs a forward pass within the bounds the
// spec was checked against (no crash, no allocation the limits do not allow).
#include <cmath>
#include <cstdint>
#include <vector>

#include "model/sequential.h"
#include "model/serialize.h"
#include "tests/fuzz/fuzz_input.h"

constexpr fedge::model::ComputeMode kModes[] = {fedge::model::ComputeMode::kFp32,
                                               fedge::model::ComputeMode::kInt8,
                                               fedge::model::ComputeMode::kInt4};

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static fedge::fuzz::ScratchFile* file = new fedge::fuzz::ScratchFile("model");
  const absl::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  fedge::v1::ModelProto proto;
  if (data[0] % 2 == 0) {
    if (!proto.ParseFromArray(rest.data(), static_cast<int>(rest.size()))) return 0;
  } else {
    auto loaded = fedge::model::LoadModel(file->Write(rest));
    if (!loaded.ok()) return 0;
    proto = std::move(loaded).value();
  }
  auto model = fedge::model::Sequential::FromProto(proto);
  if (!model.ok()) {
    // A spec alone (no parameters): does it build?
    auto bare = fedge::model::Sequential::Create(proto.spec());
    if (!bare.ok()) return 0;
    model = std::move(bare);
  }
  // Small models only: a forward pass of a large one is slow, not wrong.
  if ((*model)->num_parameters() > (1 << 20) || (*model)->input_size() > (1 << 20)) return 0;
  std::vector<float> x((*model)->input_size(), 0.0f);
  const float* y = (*model)->Forward(x.data(), 1, kModes[(data[0] / 2) % 3], false);
  FEDGE_FUZZ_ASSERT(y != nullptr || (*model)->output_size() == 0);
  return 0;
}
