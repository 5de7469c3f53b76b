// Secure aggregation on the wire: conversions between privacy/secagg.h's message structs and
// the fedge.v1 protobuf messages of coordinator.proto (SecAggStepRequest / Response), shared
// by the coordinator (server/) and the device runtime (client/grpc/). Every conversion from
// the wire checks sizes and ranges before anything is allocated from them, so a hostile
// message costs at most its own (already bounded) size; the SecAgg state machines then check
// the protocol itself (keys, shares, steps).
#ifndef FEDGE_PRIVACY_SECAGG_WIRE_H_
#define FEDGE_PRIVACY_SECAGG_WIRE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "privacy/secagg.h"
#include "proto/coordinator.pb.h"

namespace fedge::privacy {

// The session a device receives in its task header (client_index left for the caller).
v1::SecureAggregationSession SessionFromConfig(const SecAggConfig& config);
// INVALID_ARGUMENT for a session a device must not join (bad sizes, indices, seed length,
// encoding bounds; a SecAgg+ session of over 1000 participants that leaves its neighbours
// to the device to derive); the plan itself is checked by SecAggPlan::Create.
absl::StatusOr<SecAggConfig> ConfigFromSession(const v1::SecureAggregationSession& session);

// Phase 0.
v1::SecAggPublicKeys KeysToWire(const SecAggAdvertiseKeys& keys);
// `client` is the sender's index as the coordinator knows it (never taken from the wire).
SecAggAdvertiseKeys KeysFromWire(uint32_t client, const v1::SecAggPublicKeys& keys);
v1::SecAggKeyList KeyListToWire(const SecAggKeysBroadcast& broadcast);
absl::StatusOr<SecAggKeysBroadcast> KeyListFromWire(const v1::SecAggKeyList& list, int n);

// Phase 1.
v1::SecAggShareKeys ShareKeysToWire(const SecAggShareKeys& msg);
absl::StatusOr<SecAggShareKeys> ShareKeysFromWire(uint32_t client, const v1::SecAggShareKeys& msg,
                                                  int n);
v1::SecAggShareList ShareListToWire(const SecAggSharesForClient& shares);
absl::StatusOr<SecAggSharesForClient> ShareListFromWire(const v1::SecAggShareList& list, int n);

// Phase 2: the masked vector as little-endian uint32.
std::string PackMasked(const std::vector<uint32_t>& masked);
absl::StatusOr<SecAggMaskedInput> MaskedFromWire(uint32_t client, const std::string& bytes,
                                                 int64_t vector_length);
v1::SecAggUnmaskingRequest UnmaskingRequestToWire(const SecAggUnmaskingRequest& request);
absl::StatusOr<SecAggUnmaskingRequest> UnmaskingRequestFromWire(
    const v1::SecAggUnmaskingRequest& request, int n);

// Phase 3.
v1::SecAggUnmasking UnmaskingToWire(const SecAggUnmaskingResponse& response);
absl::StatusOr<SecAggUnmaskingResponse> UnmaskingFromWire(uint32_t client,
                                                          const v1::SecAggUnmasking& msg, int n);

// BLAKE2b-256 of a Z_2^32 vector's little-endian bytes (RoundMetrics' sum digest).
std::string SumDigest(const std::vector<uint32_t>& sum);

}  // namespace fedge::privacy

#endif  // FEDGE_PRIVACY_SECAGG_WIRE_H_
