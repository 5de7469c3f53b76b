// fedge-coordinator: the round coordinator as a gRPC server (docs/architecture.md, "The round").
//
//   fedge-coordinator --state-dir /var/lib/fedge --enrollment-token-file /etc/fedge/token
//       --tls-cert server.crt --tls-key server.key [--tls-client-ca devices-ca.crt]
//       [--listen 0.0.0.0:50051] [--admin-listen 127.0.0.1:50052] [--operator-ca ops-ca.crt]
//       [--tick-ms 200] [--metrics-listen 127.0.0.1:9464] [--console-listen 127.0.0.1:8080]
//   fedge-coordinator --role relay --upstream ROOT:ADMINPORT --relay-token-file F
//       (--tls-cert server.crt --tls-key server.key [--upstream-ca root-ca.crt] | --insecure)
//       [--listen 0.0.0.0:50051]                         # a relay (docs/relays.md)
//   fedge-coordinator operators add NAME [--role viewer|operator|relay] [--expires-days N] --state-dir DIR
//   fedge-coordinator operators revoke NAME --state-dir DIR
//   fedge-coordinator operators list --state-dir DIR
//
// Devices connect to --listen; operators (fedgectl) to --admin-listen, each with a token
// that `operators add` prints once (docs/security.md). The operators subcommands edit
// <state-dir>/operators and work while the coordinator runs: a revocation takes effect on
// the next call.
//
// State (jobs, rounds, registry, checkpoints) lives in <state-dir>/coordinator.db; a
// restart resumes the running job from its last completed round. The enrollment token
// file must be non-empty and not readable by others (chmod 600). TLS is on when given a
// certificate and key (mutual TLS with --tls-client-ca); plaintext needs --insecure.
// SIGTERM / SIGINT: stop ticking, end long polls, let calls in flight finish for
// --shutdown-grace-seconds, then exit.
// --metrics-listen serves Prometheus text metrics at GET /metrics over plain HTTP (no
// TLS, no auth: bind it to loopback or a monitoring network).
// --console-listen serves the operators' web console (console_http.h): HTTPS with the
// server's certificate, or plain HTTP on loopback; the same operator tokens and roles.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/flags.h"
#include "base/log.h"
#include "base/memory.h"
#include "base/status_macros.h"
#include "server/coordinator.h"
#include "server/grpc/grpc_server.h"
#include "server/grpc/console_http.h"
#include "server/grpc/metrics_http.h"
#include "server/grpc/relay_link.h"
#include "server/metrics_exporter.h"
#include "server/operator_tokens.h"
#include "server/store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "Address to serve gRPC on (host:port).");
ABSL_FLAG(std::string, state_dir, "",
          "Directory of the coordinator's local state: the SQLite store (unless --store) and "
          "the operators file. Required.");
ABSL_FLAG(std::string, store, "",
          "Where jobs, rounds, devices and checkpoints live: empty for SQLite in --state-dir, or "
          "a postgresql://USER@HOST:PORT/DB URL. Coordinators sharing one database elect one "
          "active by a lease; the others wait as standbys and take over when it lapses.");
ABSL_FLAG(int, lease_seconds, 15,
          "With --store postgresql://: how long the active coordinator's lease lasts unrenewed "
          "(renewed every third of it); a standby takes over within this plus a third.");
ABSL_FLAG(std::string, enrollment_token_file, "",
          "File holding the deployment's enrollment token (mode 600). Required.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain (TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(bool, insecure, false, "Serve plaintext without TLS (testing on loopback only).");
ABSL_FLAG(std::string, admin_listen, "127.0.0.1:50052",
          "Address of the operators' Admin service (host:port); with --insecure it must be "
          "loopback. Devices' certificates and tokens grant nothing there.");
ABSL_FLAG(std::string, operator_ca, "",
          "PEM CA bundle of the operators' client certificates: when set, the admin listener "
          "also requires a certificate it signed (use a CA other than the devices').");
ABSL_FLAG(std::string, role, "",
          "Serving: root (default: the coordinator that plans rounds and keeps the state) or "
          "relay (serves devices for a root: --upstream). operators add: the new token's "
          "role, viewer (default: status, rounds, watch, devices), operator (also start, "
          "stop, export, revoke devices) or relay (a relay's calls to this root only).");
ABSL_FLAG(std::string, upstream, "",
          "--role relay: the root's operators' listener (its --admin-listen), host:port.");
ABSL_FLAG(std::string, relay_token_file, "",
          "--role relay: file holding the relay's token (mode 600), made at the root by "
          "`fedge-coordinator operators add NAME --role relay`; NAME is the relay's id.");
ABSL_FLAG(std::string, upstream_ca, "",
          "--role relay: PEM CA bundle that signed the root's certificate (default: the "
          "system's roots); with --insecure the root is reached in plaintext.");
ABSL_FLAG(int, relay_sync_ms, 1000,
          "--role relay: how often the relay syncs with its root and closes its rounds (ms).");
ABSL_FLAG(int64_t, expires_days, 0,
          "operators add: days until the new token expires (0: never; revoke it instead)");
ABSL_FLAG(int, tick_ms, 200, "How often rounds are opened and closed (ms).");
ABSL_FLAG(bool, accept_requested_client_ids, false,
          "Give a new device the id it asks for (fedge-client --client-id) instead of a random "
          "one: reproducible experiments only (e.g. a fleet compared with fedge-sim).");
ABSL_FLAG(int, liveness_seconds, 60, "A client silent this long is not sampled / is dropped.");
ABSL_FLAG(int, max_wait_seconds, 30, "Longest a FetchTask long poll is held.");
ABSL_FLAG(int, max_message_mb, 8, "Largest gRPC message accepted (MiB).");
ABSL_FLAG(int, aggregation_batch, 8,
          "Updates validated on arrival and held until this many are there, then averaged "
          "in one pass over the running sum (1: each on arrival).");
ABSL_FLAG(int, aggregation_batch_mb, 256,
          "Flush the held updates earlier once their values take this many MiB.");
ABSL_FLAG(int, aggregation_threads, 2, "Threads that share a batched accumulation.");
ABSL_FLAG(int, max_threads, 1024,
          "Most gRPC calls served at once (one thread each, long polls included); beyond it "
          "calls fail with RESOURCE_EXHAUSTED and clients back off.");
ABSL_FLAG(int, max_streams_per_peer, 512,
          "FetchTask long polls and upload streams in flight from one address at once; beyond "
          "it calls fail with RESOURCE_EXHAUSTED and devices back off.");
ABSL_FLAG(int, max_base_downloads, 8,
          "Language-model base files sent to devices at once (FetchBaseModel, one thread "
          "each); beyond it devices are told to retry later.");
ABSL_FLAG(double, register_per_second, 20,
          "Registrations accepted per second from one address (after the burst).");
ABSL_FLAG(double, register_burst, 500, "Registrations accepted at once from one address.");
ABSL_FLAG(double, register_per_token_per_second, 100,
          "Registrations accepted per second with one enrollment token (after the burst).");
ABSL_FLAG(double, register_per_token_burst, 2000,
          "Registrations accepted at once with one enrollment token.");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP); empty = off.");
ABSL_FLAG(std::string, console_listen, "",
          "Serve the operators' web console at HOST:PORT (HTTPS with --tls-cert, else plain "
          "HTTP on loopback only); empty = off.");
ABSL_FLAG(int, shutdown_grace_seconds, 5, "On SIGTERM, how long calls in flight may finish.");
ABSL_FLAG(std::string, data_root, "/usr/share/datasets",
          "The only directory a job's evaluation.data_path may name (relative to it).");
ABSL_FLAG(bool, reflection, false,
          "Serve gRPC server reflection (lists every service to whoever connects; for "
          "debugging with grpcurl).");

namespace fedge {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("fedge-coordinator: cannot read ", what, " ", path));
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().size() > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("fedge-coordinator: ", what, " ", path, " is over 1 MiB"));
  }
  return s.str();
}

// A secret from a file of `what` (flag `flag`): required, not open to others, not empty.
absl::StatusOr<std::string> ReadSecret(const std::string& path, const char* what,
                                       const char* flag) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("fedge-coordinator: ", flag, " is required"));
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("fedge-coordinator: ", what, " ", path, " does not exist"));
  }
  if ((st.st_mode & (S_IROTH | S_IWOTH)) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "fedge-coordinator: ", what, " ", path, " is readable or writable by others; chmod 600 it"));
  }
  absl::StatusOr<std::string> token = ReadFile(path, what);
  if (!token.ok()) return token.status();
  std::string t(absl::StripAsciiWhitespace(*token));
  if (t.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("fedge-coordinator: ", what, " ", path, " is empty"));
  }
  return t;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("fedge-coordinator: --tls-cert and --tls-key go together");
  }
  if (cert.empty()) {
    if (!ca.empty()) {
      return absl::InvalidArgumentError("fedge-coordinator: --tls-client-ca needs --tls-cert and --tls-key");
    }
    if (!absl::GetFlag(FLAGS_insecure)) {
      return absl::InvalidArgumentError(
          "fedge-coordinator: no TLS certificate; give --tls-cert and --tls-key, or --insecure "
          "to serve plaintext (loopback testing only)");
    }
    FEDGE_LOG(WARNING) << "**************************************************************";
    FEDGE_LOG(WARNING) << "fedge-coordinator: --insecure: serving PLAINTEXT gRPC. Tokens and";
    FEDGE_LOG(WARNING) << "model updates travel unencrypted. Use only on a trusted loopback.";
    FEDGE_LOG(WARNING) << "**************************************************************";
    return grpc::InsecureServerCredentials();
  }
  if (absl::GetFlag(FLAGS_insecure)) {
    return absl::InvalidArgumentError("fedge-coordinator: --insecure contradicts --tls-cert");
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  absl::StatusOr<std::string> c = ReadFile(cert, "TLS certificate");
  if (!c.ok()) return c.status();
  absl::StatusOr<std::string> k = ReadFile(key, "TLS key");
  if (!k.ok()) return k.status();
  pair.cert_chain = *c;
  pair.private_key = *k;
  ssl.pem_key_cert_pairs.push_back(pair);
  if (!ca.empty()) {
    absl::StatusOr<std::string> roots = ReadFile(ca, "TLS client CA");
    if (!roots.ok()) return roots.status();
    ssl.pem_root_certs = *roots;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    FEDGE_LOG(INFO) << "fedge-coordinator: mutual TLS (clients need a certificate signed by " << ca << ")";
  } else {
    FEDGE_LOG(INFO) << "fedge-coordinator: TLS";
  }
  return grpc::SslServerCredentials(ssl);
}

// The admin listener's credentials: the server's certificate, and the operators' CA as the
// client CA when given; plaintext only with --insecure (then on loopback only).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeAdminCredentials() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    ca = absl::GetFlag(FLAGS_operator_ca);
  if (cert.empty()) {
    if (!ca.empty()) {
      return absl::InvalidArgumentError("fedge-coordinator: --operator-ca needs --tls-cert and --tls-key");
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  FEDGE_ASSIGN_OR_RETURN(pair.cert_chain, ReadFile(cert, "TLS certificate"));
  FEDGE_ASSIGN_OR_RETURN(pair.private_key, ReadFile(key, "TLS key"));
  ssl.pem_key_cert_pairs.push_back(pair);
  if (!ca.empty()) {
    FEDGE_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(ca, "operator CA"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// The coordinator's options that root and relay share, from the flags.
absl::StatusOr<server::CoordinatorOptions> CoordinatorOptionsFromFlags() {
  server::CoordinatorOptions co;
  co.data_root = absl::GetFlag(FLAGS_data_root);
  co.liveness_timeout = absl::Seconds(absl::GetFlag(FLAGS_liveness_seconds));
  co.accept_requested_client_ids = absl::GetFlag(FLAGS_accept_requested_client_ids);
  co.aggregation_batch = absl::GetFlag(FLAGS_aggregation_batch);
  co.aggregation_batch_bytes = int64_t{absl::GetFlag(FLAGS_aggregation_batch_mb)} << 20;
  // The heap keeps freed memory for large models only (base/memory.h): a small model's
  // coordinator then gives back its job start-up's transient memory.
  co.on_job_model = [](int64_t model_bytes) {
    const bool kept = base::SizeFreedMemoryPolicy(model_bytes);
    FEDGE_LOG(INFO) << "fedge-coordinator: a model of " << model_bytes / 1024 << " KiB: freed memory "
                    << (kept ? "kept for the next round's buffers" : "returned to the system");
  };
  co.aggregation_threads = absl::GetFlag(FLAGS_aggregation_threads);
  co.registrations_per_token_per_second = absl::GetFlag(FLAGS_register_per_token_per_second);
  co.registrations_per_token_burst = absl::GetFlag(FLAGS_register_per_token_burst);
  if (!(co.registrations_per_token_per_second > 0) || !(co.registrations_per_token_burst >= 1)) {
    return absl::InvalidArgumentError(
        "fedge-coordinator: --register-per-token-per-second must be > 0 and "
        "--register-per-token-burst >= 1");
  }
  return co;
}

// The devices' listener's options that root and relay share, from the flags (no
// credentials, no admin listener).
absl::StatusOr<server::GrpcServerOptions> ServerOptionsFromFlags() {
  server::GrpcServerOptions so;
  so.listen_address = absl::GetFlag(FLAGS_listen);
  so.tick_interval = absl::Milliseconds(absl::GetFlag(FLAGS_tick_ms));
  so.limits.liveness_timeout = absl::Seconds(absl::GetFlag(FLAGS_liveness_seconds));
  so.limits.max_wait = absl::Seconds(absl::GetFlag(FLAGS_max_wait_seconds));
  so.limits.max_message_bytes = int64_t{absl::GetFlag(FLAGS_max_message_mb)} << 20;
  so.max_threads = absl::GetFlag(FLAGS_max_threads);
  so.reflection = absl::GetFlag(FLAGS_reflection);
  so.limits.register_per_second = absl::GetFlag(FLAGS_register_per_second);
  so.limits.register_burst = absl::GetFlag(FLAGS_register_burst);
  so.limits.max_streams_per_peer = absl::GetFlag(FLAGS_max_streams_per_peer);
  so.limits.max_base_downloads = absl::GetFlag(FLAGS_max_base_downloads);
  if (so.limits.max_streams_per_peer < 1) {
    return absl::InvalidArgumentError("fedge-coordinator: --max-streams-per-peer must be >= 1");
  }
  if (so.limits.max_base_downloads < 1) {
    return absl::InvalidArgumentError("fedge-coordinator: --max-base-downloads must be >= 1");
  }
  if (!(so.limits.register_per_second > 0) || !(so.limits.register_burst >= 1)) {
    return absl::InvalidArgumentError(
        "fedge-coordinator: --register-per-second must be > 0 and --register-burst >= 1");
  }
  return so;
}

// `fedge-coordinator operators add|revoke|list ...`; the exit code.
int RunOperators(const std::vector<char*>& args) {
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  const std::string verb = args.size() > 2 ? args[2] : "";
  const bool named = verb == "add" || verb == "revoke";
  if (state_dir.empty() || (verb != "list" && !named) || args.size() != (named ? 4u : 3u)) {
    std::fprintf(stderr,
                 "usage: fedge-coordinator operators add NAME [--role viewer|operator|relay] [--expires-days N] --state-dir DIR\n"
                 "       fedge-coordinator operators revoke NAME --state-dir DIR\n"
                 "       fedge-coordinator operators list --state-dir DIR\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  server::OperatorTokens tokens(server::OperatorTokens::PathIn(state_dir));
  absl::Status status;
  if (verb == "add") {
    const std::string role_name = absl::GetFlag(FLAGS_role).empty() ? "viewer" : absl::GetFlag(FLAGS_role);
    absl::StatusOr<server::OperatorRole> role = server::ParseOperatorRole(role_name);
    if (role.ok() && *role == server::OperatorRole::kRelay) {
      // A relay's token name is its id.
      if (absl::Status id = server::CheckRelayId(args[3]); !id.ok()) role = id;
    }
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    const int64_t days = absl::GetFlag(FLAGS_expires_days);
    if (days < 0 || days > 36500) {
      std::fprintf(stderr, "fedge-coordinator: --expires-days must be in [0, 36500]\n");
      return 2;
    }
    absl::StatusOr<std::string> token =
        role.ok() ? tokens.Add(args[3], *role, now, days > 0 ? now + days * 86400 : 0)
                  : role.status();
    if (token.ok()) {
      std::fprintf(stderr, "fedge-coordinator: operator %s (%s) added to %s; its token, shown "
                           "once (give it to fedgectl with --token-file or $FEDGE_OPERATOR_TOKEN):\n",
                   args[3], server::OperatorRoleName(*role), tokens.path().c_str());
      std::printf("%s\n", token->c_str());
    }
    status = token.status();
  } else if (verb == "revoke") {
    status = tokens.Revoke(args[3]);
    if (status.ok()) std::fprintf(stderr, "fedge-coordinator: operator %s revoked\n", args[3]);
  } else {
    absl::StatusOr<std::vector<server::Operator>> all = tokens.List();
    if (all.ok()) {
      auto when = [](int64_t unix_s) {
        return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(unix_s),
                                absl::UTCTimeZone());
      };
      const int64_t now = absl::ToUnixSeconds(absl::Now());
      std::printf("%-24s %-9s %-20s %-20s %s\n", "NAME", "ROLE", "CREATED (UTC)", "EXPIRES",
                  "STATE");
      for (const server::Operator& op : *all) {
        const bool expired = op.expires_unix_s > 0 && now >= op.expires_unix_s;
        std::printf("%-24s %-9s %-20s %-20s %s\n", op.name.c_str(),
                    server::OperatorRoleName(op.role), when(op.created_unix_s).c_str(),
                    op.expires_unix_s > 0 ? when(op.expires_unix_s).c_str() : "never",
                    op.revoked ? "revoked" : expired ? "expired" : "active");
      }
    }
    status = all.status();
  }
  if (!status.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

// The Prometheus endpoint over `coordinator` (--metrics-listen; none when the flag is
// empty): its exporter and HTTP server, which Stop ends.
struct MetricsEndpoint {
  std::unique_ptr<server::MetricsExporter> exporter;
  std::unique_ptr<server::MetricsHttpServer> http;
  void Stop() {
    if (http != nullptr) http->Stop();
  }
};

absl::StatusOr<MetricsEndpoint> StartMetrics(server::Coordinator* coordinator) {
  MetricsEndpoint e;
  const std::string m = absl::GetFlag(FLAGS_metrics_listen);
  if (m.empty()) return e;
  e.exporter = std::make_unique<server::MetricsExporter>(coordinator);
  FEDGE_ASSIGN_OR_RETURN(e.http, server::MetricsHttpServer::Start(m, e.exporter.get()));
  FEDGE_LOG(INFO) << "fedge-coordinator: Prometheus metrics at http://" << m << "/metrics (port "
                  << e.http->port() << ")";
  return e;
}

// The credentials a relay reaches its root with.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeUpstreamCredentials() {
  const std::string ca = absl::GetFlag(FLAGS_upstream_ca);
  if (absl::GetFlag(FLAGS_insecure)) {
    if (!ca.empty()) {
      return absl::InvalidArgumentError("fedge-coordinator: --insecure contradicts --upstream-ca");
    }
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  if (!ca.empty()) {
    FEDGE_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(ca, "upstream CA"));
  }
  return grpc::SslCredentials(ssl);
}

// `fedge-coordinator --role relay --upstream ROOT ...` (docs/relays.md): serves devices as a
// coordinator does, for its root's rounds; keeps no state. The exit code.
int RunRelay(sigset_t& signals) {
  if (absl::GetFlag(FLAGS_upstream).empty()) {
    std::fprintf(stderr, "fedge-coordinator: --role relay needs --upstream HOST:PORT (the "
                         "root's --admin-listen)\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_store).empty() || !absl::GetFlag(FLAGS_console_listen).empty()) {
    std::fprintf(stderr, "fedge-coordinator: a relay keeps no store and serves no console "
                         "(its root does)\n");
    return 2;
  }
  absl::StatusOr<std::string> token = ReadSecret(absl::GetFlag(FLAGS_relay_token_file),
                                                 "relay token file", "--relay-token-file");
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      token.ok() ? MakeCredentials() : token.status();
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> upstream =
      credentials.ok() ? MakeUpstreamCredentials() : credentials.status();
  absl::StatusOr<server::CoordinatorOptions> options =
      upstream.ok() ? CoordinatorOptionsFromFlags() : upstream.status();
  absl::StatusOr<server::GrpcServerOptions> server_options =
      options.ok() ? ServerOptionsFromFlags() : options.status();
  if (!server_options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server_options.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_relay_sync_ms) < 50 || absl::GetFlag(FLAGS_liveness_seconds) < 1) {
    std::fprintf(stderr, "fedge-coordinator: --relay-sync-ms must be >= 50 and "
                         "--liveness-seconds >= 1\n");
    return 2;
  }
  server::RelayLinkOptions lo;
  lo.upstream = absl::GetFlag(FLAGS_upstream);
  lo.credentials = *upstream;
  lo.token = *token;
  lo.sync_interval = absl::Milliseconds(absl::GetFlag(FLAGS_relay_sync_ms));
  lo.max_message_bytes = int64_t{absl::GetFlag(FLAGS_max_message_mb)} << 20;
  server::RelayLink link(lo);
  // The root may start after its relays: wait for it (SIGTERM stops the wait).
  absl::StatusOr<std::string> relay_id = link.Check();
  for (std::string last; !relay_id.ok(); relay_id = link.Check()) {
    if (absl::IsUnauthenticated(relay_id.status()) || absl::IsPermissionDenied(relay_id.status())) {
      std::fprintf(stderr, "fedge-coordinator: %s\n", std::string(relay_id.status().message()).c_str());
      return 1;
    }
    if (std::string(relay_id.status().message()) != last) {
      FEDGE_LOG(WARNING) << "fedge-coordinator: " << relay_id.status().message()
                         << "; waiting for the root";
      last = std::string(relay_id.status().message());
    }
    const timespec second{1, 0};
    if (sigtimedwait(&signals, nullptr, &second) >= 0) return 0;
  }
  server::CoordinatorOptions co = *std::move(options);
  co.relay_id = *relay_id;
  co.upstream_register = [&link](const v1::RegisterRequest& r) { return link.RegisterDevice(r); };
  absl::StatusOr<std::unique_ptr<server::Coordinator>> relay =
      server::Coordinator::Create(co, nullptr);
  if (!relay.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", relay.status().ToString().c_str());
    return 1;
  }
  server::GrpcServerOptions so = *std::move(server_options);
  so.credentials = *credentials;
  so.tick_interval = absl::ZeroDuration();  // the link ticks, between syncs
  absl::StatusOr<std::unique_ptr<server::GrpcCoordinatorServer>> server =
      server::GrpcCoordinatorServer::Start(so, relay->get(), nullptr);
  if (!server.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", server.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<MetricsEndpoint> metrics = StartMetrics(relay->get());
  if (!metrics.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", metrics.status().ToString().c_str());
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  link.Start(relay->get());
  FEDGE_LOG(INFO) << "fedge-coordinator: relay " << *relay_id << " serving devices on "
                  << so.listen_address << " (port " << (*server)->port() << ") for the root at "
                  << lo.upstream;
  int signal = 0;
  sigwait(&signals, &signal);
  FEDGE_LOG(INFO) << "fedge-coordinator: relay " << (signal == SIGTERM ? "SIGTERM" : "SIGINT")
                  << ", shutting down";
  link.Stop();
  metrics->Stop();
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  FEDGE_LOG(INFO) << "fedge-coordinator: relay stopped";
  return 0;
}

int Run() {
  // Signals are taken synchronously by this thread (sigwait, or polled while a standby);
  // every thread started from here on (gRPC's among them) inherits the blocked mask, so
  // none of them can take a SIGTERM and end the process without a shutdown.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "relay") return RunRelay(signals);
  if (!role.empty() && role != "root") {
    std::fprintf(stderr, "fedge-coordinator: --role is root or relay (got '%s')\n", role.c_str());
    return 2;
  }
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  if (state_dir.empty()) {
    std::fprintf(stderr, "fedge-coordinator: --state-dir is required\n");
    return 2;
  }
  absl::StatusOr<std::string> token = ReadSecret(absl::GetFlag(FLAGS_enrollment_token_file),
                                                 "enrollment token file", "--enrollment-token-file");
  if (!token.ok()) {
    std::fprintf(stderr, "%s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeCredentials();
  if (!credentials.ok()) {
    std::fprintf(stderr, "%s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> admin_credentials = MakeAdminCredentials();
  if (!admin_credentials.ok()) {
    std::fprintf(stderr, "%s\n", std::string(admin_credentials.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_tick_ms) < 1 || absl::GetFlag(FLAGS_liveness_seconds) < 1 ||
      absl::GetFlag(FLAGS_max_wait_seconds) < 0 || absl::GetFlag(FLAGS_max_message_mb) < 2 ||
      absl::GetFlag(FLAGS_max_message_mb) > 1024 || absl::GetFlag(FLAGS_max_threads) < 8) {
    std::fprintf(stderr,
                 "fedge-coordinator: --tick-ms and --liveness-seconds must be ≥ 1, "
                 "--max-wait-seconds ≥ 0, --max-message-mb in [2, 1024], --max-threads ≥ 8\n");
    return 2;
  }


  const std::string store_location =
      absl::GetFlag(FLAGS_store).empty() ? state_dir : absl::GetFlag(FLAGS_store);
  if (!absl::GetFlag(FLAGS_store).empty() && !server::Store::IsPostgresUrl(store_location)) {
    std::fprintf(stderr, "fedge-coordinator: --store takes a postgresql:// URL (SQLite lives in "
                         "--state-dir)\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_lease_seconds) < 1) {
    std::fprintf(stderr, "fedge-coordinator: --lease-seconds must be >= 1\n");
    return 2;
  }
  // A coordinator that lost its lease (cut off from the database long enough for a standby
  // to take over) stops: its writes are refused already; SIGTERM ends it like an operator's.
  static std::atomic<bool> lease_lost{false};
  server::StoreOptions store_options;
  store_options.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  store_options.on_lease_lost = [](const absl::Status&) {
    lease_lost = true;
    kill(getpid(), SIGTERM);
  };
  // A standby stops waiting on SIGTERM/SIGINT (they are blocked here: take them by polling).
  store_options.on_standby = [&signals](absl::string_view, int64_t) {
    const timespec now{0, 0};
    return sigtimedwait(&signals, nullptr, &now) < 0;
  };
  absl::StatusOr<std::unique_ptr<server::Store>> store =
      server::Store::Open(store_location, store_options);
  if (absl::IsCancelled(store.status())) {
    FEDGE_LOG(INFO) << "fedge-coordinator: stopped while a standby";
    return 0;
  }
  if (!store.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", store.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<server::CoordinatorOptions> options = CoordinatorOptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  server::CoordinatorOptions co = *std::move(options);
  co.enrollment_token = *token;
  absl::StatusOr<std::unique_ptr<server::Coordinator>> coordinator =
      server::Coordinator::Create(co, store->get());
  if (!coordinator.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", coordinator.status().ToString().c_str());
    return 1;
  }
  server::OperatorTokens operators(server::OperatorTokens::PathIn(state_dir));
  if (absl::StatusOr<std::vector<server::Operator>> all = operators.List(); !all.ok()) {
    FEDGE_LOG(WARNING) << "fedge-coordinator: " << all.status().message()
                       << " (Admin calls are refused until it is fixed)";
  } else if (all->empty()) {
    FEDGE_LOG(WARNING) << "fedge-coordinator: no operator yet; every Admin call is refused until "
                          "`fedge-coordinator operators add NAME --role operator --state-dir "
                       << state_dir << "` creates one";
  }
  absl::StatusOr<server::GrpcServerOptions> server_options = ServerOptionsFromFlags();
  if (!server_options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server_options.status().message()).c_str());
    return 2;
  }
  server::GrpcServerOptions so = *std::move(server_options);
  so.credentials = *credentials;
  so.admin_listen_address = absl::GetFlag(FLAGS_admin_listen);
  so.admin_credentials = *admin_credentials;
  so.admin_plaintext = absl::GetFlag(FLAGS_tls_cert).empty();
  so.operators = &operators;
  absl::StatusOr<std::unique_ptr<server::GrpcCoordinatorServer>> server =
      server::GrpcCoordinatorServer::Start(so, coordinator->get(), store->get());
  if (!server.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", server.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<MetricsEndpoint> metrics = StartMetrics(coordinator->get());
  if (!metrics.ok()) {
    std::fprintf(stderr, "fedge-coordinator: %s\n", metrics.status().ToString().c_str());
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  // The console's API: the operators' tokens and roles, as on the admin listener.
  std::unique_ptr<server::AdminApi> console_api;
  std::unique_ptr<server::ConsoleHttpServer> console;
  if (const std::string c = absl::GetFlag(FLAGS_console_listen); !c.empty()) {
    server::AdminLimits limits;
    limits.liveness_timeout = co.liveness_timeout;
    server::ConsoleOptions options;
    options.listen = c;
    options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
    options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
    console_api = std::make_unique<server::AdminApi>(
        coordinator->get(), store->get(), limits,
        server::AdminAccess{&operators, /*loopback_only=*/options.tls_cert_file.empty()});
    absl::StatusOr<std::unique_ptr<server::ConsoleHttpServer>> started =
        server::ConsoleHttpServer::Start(options, console_api.get());
    if (!started.ok()) {
      std::fprintf(stderr, "fedge-coordinator: %s\n", started.status().ToString().c_str());
      metrics->Stop();
      (*server)->Shutdown(absl::ZeroDuration());
      return 1;
    }
    console = *std::move(started);
    FEDGE_LOG(INFO) << "fedge-coordinator: web console at " << (console->tls() ? "https://" : "http://")
                    << c << "/ (port " << console->port() << ")";
  }
  const std::optional<std::string> running = (*coordinator)->running_job();
  FEDGE_LOG(INFO) << "fedge-coordinator: serving on " << so.listen_address << " (port "
                  << (*server)->port() << ") for devices and " << so.admin_listen_address
                  << " (port " << (*server)->admin_port() << ") for operators, state in "
                  << (*store)->path()
                  << (running ? absl::StrCat(", resuming job ", *running) : std::string(", no job running"));

  int signal = 0;
  sigwait(&signals, &signal);
  FEDGE_LOG(INFO) << "fedge-coordinator: "
                  << (lease_lost ? "lost the store's lease to another coordinator"
                                 : signal == SIGTERM ? "SIGTERM" : "SIGINT")
                  << ", shutting down (grace " << absl::GetFlag(FLAGS_shutdown_grace_seconds) << " s)";
  if (console != nullptr) console->Stop();
  metrics->Stop();
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  FEDGE_LOG(INFO) << "fedge-coordinator: stopped";
  return lease_lost ? 3 : 0;
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "fedge-coordinator --state-dir DIR [--store postgresql://...] --enrollment-token-file FILE "
      "(--tls-cert CRT --tls-key KEY [--tls-client-ca CA] [--operator-ca CA] | --insecure) "
      "[--listen HOST:PORT] [--admin-listen HOST:PORT] [--metrics-listen HOST:PORT] "
      "[--console-listen HOST:PORT]\n"
      "  fedge-coordinator --role relay --upstream HOST:PORT --relay-token-file FILE "
      "(--tls-cert CRT --tls-key KEY [--upstream-ca CA] | --insecure) [--listen HOST:PORT]\n"
      "  fedge-coordinator operators add NAME [--role viewer|operator|relay] [--expires-days N] --state-dir DIR\n"
      "  fedge-coordinator operators revoke NAME --state-dir DIR\n"
      "  fedge-coordinator operators list --state-dir DIR");
  fedge::base::AcceptDashedFlags(argc, argv);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() > 1 && std::string(args[1]) == "operators") return fedge::RunOperators(args);
  if (args.size() > 1) {
    std::fprintf(stderr, "fedge-coordinator: unknown command '%s' (see --help)\n", args[1]);
    return 2;
  }
  fedge::base::KeepFreedMemoryForReuse();
  return fedge::Run();
}
