// Secure-aggregation messages from the wire, as a device or the coordinator decodes them:
// the session a coordinator announces, key lists, share keys and share lists, masked
// vectors, unmasking requests and responses. Input: [1 byte: which message] [1 byte: n,
// the session's size] [rest: the message's bytes].
#include <cstdint>
#include <string>

#include "privacy/secagg_wire.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int n = 1 + data[1];
  const std::string rest(reinterpret_cast<const char*>(data + 2), size - 2);
  using namespace fedge;
  switch (data[0] % 7) {
    case 0: {
      v1::SecureAggregationSession m;
      if (m.ParseFromString(rest)) (void)privacy::ConfigFromSession(m);
      break;
    }
    case 1: {
      v1::SecAggKeyList m;
      if (m.ParseFromString(rest)) (void)privacy::KeyListFromWire(m, n);
      break;
    }
    case 2: {
      v1::SecAggShareKeys m;
      if (m.ParseFromString(rest)) (void)privacy::ShareKeysFromWire(data[1] % n, m, n);
      break;
    }
    case 3: {
      v1::SecAggShareList m;
      if (m.ParseFromString(rest)) (void)privacy::ShareListFromWire(m, n);
      break;
    }
    case 4:
      (void)privacy::MaskedFromWire(0, rest, n * 7);
      break;
    case 5: {
      v1::SecAggUnmaskingRequest m;
      if (m.ParseFromString(rest)) (void)privacy::UnmaskingRequestFromWire(m, n);
      break;
    }
    default: {
      v1::SecAggUnmasking m;
      if (m.ParseFromString(rest)) (void)privacy::UnmaskingFromWire(data[1] % n, m, n);
      break;
    }
  }
  return 0;
}
