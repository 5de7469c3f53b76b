// The chunk protocol's receiver (model::PayloadAssembler), driven by a sequence of
// operations from the input: chunks at chosen offsets, trailers with chosen or true CRCs.
// Invariants: a finished payload has exactly the announced size and the CRC of its bytes,
// and equals the bytes the accepted chunks carried; after an error nothing succeeds.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "model/payload.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const int64_t max_bytes = 1 << 16;
  const int64_t total = in.ConsumeIntegralInRange<int64_t>(-4, max_bytes + 4);
  auto assembler = fedge::model::PayloadAssembler::Create(total, max_bytes);
  if (!assembler.ok()) {
    FEDGE_FUZZ_ASSERT(total < 0 || total > max_bytes);
    return 0;
  }
  std::string accepted;  // what the assembler took
  bool failed = false;
  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
      case 1: {  // a chunk, usually at the next offset
        const bool honest = in.ConsumeBool();
        const int64_t offset = honest ? static_cast<int64_t>(accepted.size())
                                      : in.ConsumeIntegralInRange<int64_t>(-2, max_bytes + 2);
        const std::string bytes = in.ConsumeRandomLengthString(4096);
        const absl::Status s = assembler->Add(offset, bytes);
        if (failed) FEDGE_FUZZ_ASSERT(!s.ok());
        if (s.ok()) {
          FEDGE_FUZZ_ASSERT(offset == static_cast<int64_t>(accepted.size()));
          accepted += bytes;
          FEDGE_FUZZ_ASSERT(static_cast<int64_t>(accepted.size()) <= total);
        } else {
          failed = true;
        }
        break;
      }
      default: {  // the trailer: the true CRC of what was taken, or another
        fedge::v1::PayloadTrailer trailer = fedge::model::MakeTrailer(accepted);
        if (!in.ConsumeBool()) trailer.set_crc32(in.ConsumeIntegral<uint32_t>());
        auto payload = assembler->Finish(trailer);
        if (payload.ok()) {
          FEDGE_FUZZ_ASSERT(!failed);
          FEDGE_FUZZ_ASSERT(static_cast<int64_t>(payload->size()) == total);
          FEDGE_FUZZ_ASSERT(*payload == accepted);
          FEDGE_FUZZ_ASSERT(fedge::model::PayloadCrc32(*payload) == trailer.crc32());
        }
        return 0;  // Finish is once only
      }
    }
  }
  return 0;
}
