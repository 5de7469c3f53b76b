// The device's identity on disk: the client id the coordinator assigned, so that a device
// that restarts asks for the same id again (RegisterRequest.previous_client_id) instead of
// enrolling as a new client. The session token is not stored: a restarted device always
// re-registers with the enrollment token and gets a fresh session.
//
// File format: text lines "key value"; version 1 knows "client_id" and "device_key" (the
// secret the coordinator gave with the id, which proves the id at a later registration:
// without it a device re-registering gets a new id). Unknown keys are ignored so that later
// versions can add lines.
// A FedCG device's private extractor E and discriminator D (client_runtime.h, FedCG tasks)
// are kept beside it, in "<state file>.fedcg" (SaveFedCgPrivateState): same rules (atomic,
// mode 0600, refused when others can read it), binary, rewritten after every FedCG training.
// Writes are atomic (temporary file in the same directory, fsync, rename) and the file is
// created with permissions 0600; Load refuses a file that other users can read or write.
#ifndef FEDGE_CLIENT_DEVICE_STATE_H_
#define FEDGE_CLIENT_DEVICE_STATE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/model.pb.h"

namespace fedge::client {

struct DeviceState {
  std::string client_id;
  std::string device_key;  // empty in a file written before device keys
};

// NOT_FOUND when the file does not exist (a new device); PERMISSION_DENIED when it is
// readable or writable by group or others; INVALID_ARGUMENT ("DeviceState: <path>: ...")
// for a malformed file; UNAVAILABLE for I/O errors.
absl::StatusOr<DeviceState> LoadDeviceState(const std::string& path);

// Writes `state` to `path` atomically with mode 0600. Creates no directories.
absl::Status SaveDeviceState(const std::string& path, const DeviceState& state);

// `bytes` to `path` atomically (temporary file, fsync, rename) with mode 0600.
absl::Status WriteOwnerOnly(const std::string& path, const std::string& bytes);

// FedCG: the private E and D of the device's current FedCG job, as a binary ModelProto whose
// spec.name is the job id and whose parameters are the E.* and D.* tensors (their Adam moments
// are not kept). Load: NOT_FOUND, PERMISSION_DENIED as LoadDeviceState; INVALID_ARGUMENT for
// a file that does not parse or is over 256 MiB.
absl::Status SaveFedCgPrivateState(const std::string& path, const v1::ModelProto& state);
absl::StatusOr<v1::ModelProto> LoadFedCgPrivateState(const std::string& path);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_DEVICE_STATE_H_
