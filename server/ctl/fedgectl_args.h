// fedgectl's command line, parsed without touching the network (so it can be tested).
//
//   fedgectl [connection flags] COMMAND [ARGS] [command flags]
//   Commands:
//     job start FILE | job start --config FILE [--dry-run]
//     status [JOB]              watch [JOB] [--replay]       clients [--all]
//     rounds [JOB]              export [JOB] --out FILE [--round N]
//     stop JOB [--reason TEXT]  help
//     enrollment create NAME [--uses N] [--expires-hours H] | enrollment list |
//     enrollment revoke NAME    devices revoke ID [--reason TEXT]
//     privacy --sampling-rate Q --rounds R --delta D (--noise-multiplier Z | --target-epsilon E)
//       offline: ε (and the RDP order attaining it) of R rounds of DP-FedAvg, or the noise
//       multiplier that reaches ε = E; no coordinator needed.
//     sample MODEL_FILE [--base FILE] [--prompt TEXT] [--tokens N] [--temperature T]
//            [--top-k K] [--seed S]
//       offline: text from a language-model file (lm_pretrain's), or from an exported
//       language-model job's adapters on their base (--base).
//   Connection: --coordinator HOST:PORT, the coordinator's admin listener (default
//     $FEDGE_COORDINATOR, else 127.0.0.1:50052), TLS by default: --tls-ca PEM
//     [--tls-cert PEM --tls-key PEM] [--tls-server-name NAME], or --insecure (plaintext;
//     loopback and tests only); --timeout SECONDS for one call. The operator's token:
//     --token-file FILE, else $FEDGE_OPERATOR_TOKEN.
// Flags may come anywhere, as --flag VALUE or --flag=VALUE, with dashes or underscores.
#ifndef FEDGE_SERVER_CTL_FEDGECTL_ARGS_H_
#define FEDGE_SERVER_CTL_FEDGECTL_ARGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedge::ctl {

inline constexpr char kDefaultCoordinator[] = "127.0.0.1:50052";

struct CtlConnection {
  std::string target = kDefaultCoordinator;
  bool insecure = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;  // file paths / name
  std::string token_file;  // --token-file
  std::string token;       // the operator's token, once read (not from the command line)
  double timeout_seconds = 30;
};

struct CtlCommand {
  enum class Kind { kHelp, kJobStart, kStatus, kWatch, kClients, kRounds, kExport, kStop,
                    kPrivacy, kEnrollmentCreate, kEnrollmentList, kEnrollmentRevoke,
                    kDeviceRevoke, kSample };
  Kind kind = Kind::kHelp;
  CtlConnection connection;
  std::string job_id;       // status, watch, rounds, export (optional), stop (required)
  std::string config_path;  // job start
  bool dry_run = false;     // job start
  bool replay = false;      // watch: first the completed rounds
  bool include_inactive = false;  // clients --all
  std::string out_path;     // export
  int64_t round = 0;        // export; 0 = latest checkpoint
  std::string reason;       // stop, devices revoke
  std::string name;         // enrollment create/revoke (token name), devices revoke (id)
  int64_t max_uses = 0;     // enrollment create; 0 = unlimited
  double expires_hours = 0; // enrollment create; 0 = never
  // privacy: q, z (0 when --target-epsilon is given), R, δ, target ε (0 = compute ε).
  double sampling_rate = 0, noise_multiplier = 0, delta = 0, target_epsilon = 0;
  int64_t rounds = 0;
  // sample: the model file (model_path), the prompt and the sampling options.
  std::string model_path, prompt, base_path;
  int64_t max_tokens = 100;
  double temperature = 0.8;
  int64_t top_k = 40;
  uint64_t seed = 1;
};

// `args` excludes the program name. `env_coordinator` is $FEDGE_COORDINATOR (may be empty).
// INVALID_ARGUMENT with a message for the user on a usage error (exit code 2).
absl::StatusOr<CtlCommand> ParseCtlArgs(const std::vector<std::string>& args,
                                        const std::string& env_coordinator = "");

// The usage text.
const char* CtlUsage();

}  // namespace fedge::ctl

#endif  // FEDGE_SERVER_CTL_FEDGECTL_ARGS_H_
