// Tensor payloads as a coordinator or device decodes them: a manifest (protobuf) and the
// payload bytes, against a fixed set of expected tensors, in every decodable encoding.
// Input: [1 byte: expected set] [2 bytes LE: manifest length m] [m bytes: TensorManifest]
// [rest: payload]. Invariant: what decodes has the expected shapes and finite values.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "model/payload.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using fedge::model::PayloadTensorSpec;

std::vector<PayloadTensorSpec> Expected(uint8_t which) {
  switch (which % 3) {
    case 0: return {{"fc.w", {3, 4}}, {"fc.b", {4}}};
    case 1: return {{"conv.w", {2, 1, 3, 3}}, {"empty", {0}}, {"bias", {5}}};
    default: return {{"big", {64, 33}}};
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const std::vector<PayloadTensorSpec> expected = Expected(data[0]);
  const size_t m = std::min<size_t>(data[1] | (size_t{data[2]} << 8), size - 3);
  fedge::v1::TensorManifest manifest;
  if (!manifest.ParseFromArray(data + 3, static_cast<int>(m))) return 0;
  const absl::string_view payload(reinterpret_cast<const char*>(data + 3 + m), size - 3 - m);
  auto decoded = fedge::model::DecodeTensors(manifest, payload, expected);
  if (!decoded.ok()) return 0;
  FEDGE_FUZZ_ASSERT(decoded->size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    int64_t numel = 1;
    for (int64_t d : expected[i].shape) numel *= d;
    FEDGE_FUZZ_ASSERT(static_cast<int64_t>((*decoded)[i].values.size()) == numel);
    for (float v : (*decoded)[i].values) FEDGE_FUZZ_ASSERT(std::isfinite(v));
  }
  return 0;
}
