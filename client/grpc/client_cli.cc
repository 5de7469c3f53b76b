// fedge-client's command line (client_cli.h): its flags, the runtime options they make, and
// the run until SIGTERM/SIGINT.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/log.h"
#include "client/grpc/client_cli.h"
#include "client/grpc/client_runtime.h"
#include "data/shard.h"
#include "kernels/cpu.h"

ABSL_FLAG(std::string, coordinator, "",
          "gRPC target of the coordinator (required): host:port, or ipv4:HOST:PORT,HOST:PORT "
          "naming an active coordinator and its standbys (the first that answers is used)");
ABSL_FLAG(std::string, enrollment_token_file, "",
          "file holding the deployment's enrollment token (required)");
ABSL_FLAG(std::string, shard, "",
          "the device's local images: a shard file (required unless --text-shard is given)");
ABSL_FLAG(std::string, text_shard, "",
          "language-model jobs: the device's documents, a text shard (partition_brown)");
ABSL_FLAG(std::string, lm_base, "",
          "language-model jobs: the device's copy of the job's base model file (with "
          "--text-shard); without it (or for a job with another base) the device fetches the "
          "job's base from the coordinator into <state-dir>/bases, checked by its SHA-256");
ABSL_FLAG(int64_t, max_base_mb, 1024,
          "language-model jobs: largest base model the device downloads, in MiB");
ABSL_FLAG(std::string, eval_shard, "",
          "FedCG jobs: the device's own test examples (a shard file) to evaluate its private "
          "extractor with each round's global classifier on; empty: it holds out part of "
          "--shard (the job's fed_cg.eval_holdout_fraction)");
ABSL_FLAG(std::string, state_dir, "",
          "directory for the device state (client id, file mode 0600); empty: not kept");
ABSL_FLAG(bool, insecure, false, "plaintext channel (no TLS): loopback and tests only");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA certificate of the coordinator (empty: system roots)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate chain for mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM client private key for mutual TLS");
ABSL_FLAG(std::string, tls_server_name, "", "expected name in the coordinator's certificate");
ABSL_FLAG(int64_t, memory_budget_mb, 0,
          "memory the device lets training use (sent in the profile; tasks estimated to need "
          "more are refused); 0 = no budget");
ABSL_FLAG(std::string, compute_class, "", "device compute class: low, medium or high");
ABSL_FLAG(int, fetch_wait_seconds, 20, "long-poll length asked of the coordinator");
ABSL_FLAG(uint64_t, seed, 0, "seed of the reconnect jitter (0: from the clock)");
ABSL_FLAG(bool, leave, false, "leave the job's population when stopped");
ABSL_FLAG(std::string, client_id, "",
          "id to ask for at the first registration (granted only by a coordinator run with "
          "--accept-requested-client-ids; for reproducible experiments)");
ABSL_FLAG(std::string, log_level, "info", "info, warning or error");

namespace fedge::client {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int) { g_stop.store(true); }

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::StatusOr<ClientRuntimeOptions> OptionsFromFlags(int* exit_code) {
  *exit_code = 2;
  ClientRuntimeOptions o;
  o.target = absl::GetFlag(FLAGS_coordinator);
  if (o.target.empty()) return absl::InvalidArgumentError("--coordinator is required");
  const std::string token_file = absl::GetFlag(FLAGS_enrollment_token_file);
  if (token_file.empty()) return absl::InvalidArgumentError("--enrollment-token-file is required");
  const std::string shard = absl::GetFlag(FLAGS_shard);
  const std::string text_shard = absl::GetFlag(FLAGS_text_shard);
  if (shard.empty() && text_shard.empty()) {
    return absl::InvalidArgumentError("--shard (images) or --text-shard (text) is required");
  }
  if (text_shard.empty() && !absl::GetFlag(FLAGS_lm_base).empty()) {
    return absl::InvalidArgumentError("--lm-base needs --text-shard");
  }
  if (!text_shard.empty() && absl::GetFlag(FLAGS_lm_base).empty() &&
      absl::GetFlag(FLAGS_state_dir).empty()) {
    return absl::InvalidArgumentError(
        "--text-shard needs --lm-base, or --state-dir to keep the base fetched from the "
        "coordinator");
  }
  const int64_t max_base_mb = absl::GetFlag(FLAGS_max_base_mb);
  if (max_base_mb < 1 || max_base_mb > (int64_t{1} << 20)) {
    return absl::InvalidArgumentError("--max-base-mb must be in [1, 1048576]");
  }
  o.insecure = absl::GetFlag(FLAGS_insecure);
  const std::string ca = absl::GetFlag(FLAGS_tls_ca), cert = absl::GetFlag(FLAGS_tls_cert),
                    key = absl::GetFlag(FLAGS_tls_key);
  if (o.insecure && (!ca.empty() || !cert.empty() || !key.empty())) {
    return absl::InvalidArgumentError("--insecure cannot be combined with --tls-*");
  }
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  const std::string cc = absl::AsciiStrToLower(absl::GetFlag(FLAGS_compute_class));
  if (cc == "low") {
    o.profile.set_compute_class(v1::COMPUTE_CLASS_LOW);
  } else if (cc == "medium") {
    o.profile.set_compute_class(v1::COMPUTE_CLASS_MEDIUM);
  } else if (cc == "high") {
    o.profile.set_compute_class(v1::COMPUTE_CLASS_HIGH);
  } else if (!cc.empty()) {
    return absl::InvalidArgumentError("--compute-class: low, medium or high");
  }
  const int64_t budget = absl::GetFlag(FLAGS_memory_budget_mb);
  if (budget < 0) return absl::InvalidArgumentError("--memory-budget-mb must be ≥ 0");
  o.profile.set_memory_budget_bytes(budget << 20);
  o.fetch_wait_seconds = absl::GetFlag(FLAGS_fetch_wait_seconds);
  if (o.fetch_wait_seconds < 0 || o.fetch_wait_seconds > 3600) {
    return absl::InvalidArgumentError("--fetch-wait-seconds must be in [0, 3600]");
  }

  *exit_code = 1;  // from here on: files and data
  auto token = ReadFile(token_file, "--enrollment-token-file");
  if (!token.ok()) return token.status();
  o.enrollment_token = std::string(absl::StripAsciiWhitespace(*token));
  if (o.enrollment_token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--enrollment-token-file ", token_file, " is empty"));
  }
  if (!ca.empty()) {
    auto pem = ReadFile(ca, "--tls-ca");
    if (!pem.ok()) return pem.status();
    o.tls_root_ca_pem = *pem;
  }
  if (!cert.empty()) {
    auto c = ReadFile(cert, "--tls-cert");
    if (!c.ok()) return c.status();
    auto k = ReadFile(key, "--tls-key");
    if (!k.ok()) return k.status();
    o.tls_cert_chain_pem = *c;
    o.tls_private_key_pem = *k;
  }
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  // 8-bit images stay 8-bit in memory (a quarter of the floats); batches convert them.
  data::ShardReadOptions compact;
  compact.compact_u8 = true;
  if (!shard.empty()) {
    auto data = data::ReadShard(shard, compact);
    if (!data.ok()) return data.status();
    o.data = std::make_shared<const data::Dataset>(std::move(data).value());
  }
  if (!text_shard.empty()) {
    auto text = data::ReadTextShard(text_shard);
    if (!text.ok()) return text.status();
    o.text = std::move(text).value();
    o.lm_base_path = absl::GetFlag(FLAGS_lm_base);
  }
  if (const std::string eval = absl::GetFlag(FLAGS_eval_shard); !eval.empty()) {
    auto eval_data = data::ReadShard(eval, compact);
    if (!eval_data.ok()) return eval_data.status();
    o.eval_data = std::make_shared<const data::Dataset>(std::move(eval_data).value());
  }
  if (const std::string dir = absl::GetFlag(FLAGS_state_dir); !dir.empty()) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::UnavailableError(absl::StrCat("--state-dir ", dir, ": ", std::strerror(errno)));
    }
    o.state_path = dir + "/client.state";
    if (!text_shard.empty()) o.lm_base_cache_dir = dir + "/bases";
    o.max_base_bytes = max_base_mb << 20;
  }
  o.requested_client_id = absl::GetFlag(FLAGS_client_id);
  o.seed = absl::GetFlag(FLAGS_seed);
  if (o.seed == 0) o.seed = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  o.leave_on_stop = absl::GetFlag(FLAGS_leave);
  o.profile.set_platform(
#if defined(__aarch64__)
      "linux-aarch64"
#elif defined(__x86_64__)
      "linux-x86_64"
#else
      "linux"
#endif
  );
  o.profile.set_client_version("fedge-client 0.1.0");
  o.on_round = [](const RoundReport& r) {
    std::printf("round %lld  job %s  examples %lld  train loss %.4f acc %.4f  %.2fs (train %.2fs)  "
                "down %.2f MB up %.2f MB  peak RSS %.1f MB\n",
                static_cast<long long>(r.round), r.job_id.c_str(),
                static_cast<long long>(r.num_examples), r.train_loss, r.train_accuracy,
                r.total_seconds, r.train_seconds, r.bytes_down / 1e6, r.bytes_up / 1e6,
                r.peak_rss_bytes / 1e6);
    if (r.eval_examples > 0) {
      // FedCG: the private extractor with the task's global classifier, before training.
      std::printf("          FedCG: accuracy %.4f on %lld held-out examples (E + global C)\n",
                  r.eval_accuracy, static_cast<long long>(r.eval_examples));
    }
    std::fflush(stdout);
  };
  return o;
}

}  // namespace

int RunClientCli(int argc, char** argv, const std::string& program,
                 const std::function<absl::Status(ClientRuntimeOptions&)>& customize) {
  base::AcceptDashedFlags(argc, argv);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\nTry --help.\n", program.c_str(), rest[1]);
    return 2;
  }
  const std::string level = absl::AsciiStrToLower(absl::GetFlag(FLAGS_log_level));
  if (level == "info") {
    base::SetMinLogLevel(base::LogLevel::INFO);
  } else if (level == "warning") {
    base::SetMinLogLevel(base::LogLevel::WARNING);
  } else if (level == "error") {
    base::SetMinLogLevel(base::LogLevel::ERROR);
  } else {
    std::fprintf(stderr, "%s: --log-level: info, warning or error\n", program.c_str());
    return 2;
  }
  int exit_code = 2;
  auto options = OptionsFromFlags(&exit_code);
  if (options.ok() && customize) {
    if (absl::Status s = customize(*options); !s.ok()) {
      options = s;
      exit_code = 2;  // the caller's own flags
    }
  }
  if (!options.ok()) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(),
                 std::string(options.status().message()).c_str());
    if (exit_code == 2) std::fprintf(stderr, "Try --help.\n");
    return exit_code;
  }
  const std::string local =
      options->data != nullptr
          ? absl::StrCat(options->data->num_examples, " local examples")
          : absl::StrCat(options->text.size(), " local documents");
  auto runtime = ClientRuntime::Create(*std::move(options));
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), runtime.status().ToString().c_str());
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  FEDGE_LOG(INFO) << program << ": " << local << ", coordinator "
                  << absl::GetFlag(FLAGS_coordinator) << ", quantized kernels "
                  << kernels::IsaName(kernels::BestIsa());
  const absl::Status s = (*runtime)->Run(g_stop);
  const ClientRuntimeStats st = (*runtime)->stats();
  FEDGE_LOG(INFO) << program << ": stopped; " << st.rounds_completed << " rounds, "
                  << st.tasks_abandoned << " tasks abandoned, " << st.connection_failures
                  << " connection failures";
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace fedge::client

