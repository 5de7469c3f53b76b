// fedge-client's command line as a library: its flags (--coordinator, --shard, --tls-*,
// ...; `fedge-client --help`), the ClientRuntimeOptions they make, and the device's run until
// SIGTERM/SIGINT. fedge-client's main is this with nothing added; bench/hostile_client.cc
// is the same device with an attack added through `customize`, so that the defences are
// measured against the client that ships.
#ifndef FEDGE_CLIENT_GRPC_CLIENT_CLI_H_
#define FEDGE_CLIENT_GRPC_CLIENT_CLI_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "client/grpc/client_runtime.h"

namespace fedge::client {

// Parses the command line (the caller sets the usage message first), builds the options,
// lets `customize` (may be null) change them, and runs the device. Returns the process exit
// code: 0 stopped by a signal, 1 a permanent error, 2 bad flags (a `customize` error
// included: its message is printed prefixed with `program`).
int RunClientCli(int argc, char** argv, const std::string& program,
                 const std::function<absl::Status(ClientRuntimeOptions&)>& customize);

}  // namespace fedge::client

#endif  // FEDGE_CLIENT_GRPC_CLIENT_CLI_H_
