// fedge-client: a device of a federated job. Registers with the coordinator, then trains
// every task it gets on its local shard and uploads the update, until SIGTERM/SIGINT.
//
//   fedge-client --coordinator coord.example:7070 --enrollment-token-file token
//       --shard data/client-00003.shard --state-dir /var/lib/fedge
//       --tls-ca ca.pem [--tls-cert device.pem --tls-key device.key]
//   fedge-client --coordinator 127.0.0.1:7070 --insecure ...     (loopback tests only)
//
// One line per round on stdout: round, examples, train loss, seconds, bytes down/up.
// SIGTERM finishes an upload in progress or abandons training, and exits 0 without
// leaving (the device keeps its id in --state-dir and comes back); --leave leaves.
// Exit codes: 0 stopped by a signal, 1 a permanent error, 2 bad flags.
#include <cstdio>

#include "absl/flags/usage.h"
#include "base/memory.h"
#include "client/grpc/client_cli.h"

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A federated-learning device: trains the coordinator's tasks on a local shard.\n"
      "  fedge-client --coordinator HOST:PORT --enrollment-token-file FILE --shard FILE\n"
      "               [--state-dir DIR] (--insecure | [--tls-ca PEM] [--tls-cert PEM --tls-key PEM])");
  // The device's peak RSS is its budget: freed blocks go back to the system, so training
  // reuses what loading the model freed (base/memory.h).
  fedge::base::ReturnFreedMemory();
  return fedge::client::RunClientCli(argc, argv, "fedge-client", nullptr);
}
