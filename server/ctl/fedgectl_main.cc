// fedgectl: the operators' command line for the coordinator's Admin service.
// See fedgectl_args.h for the commands and flags. Exit codes: 0 ok, 1 failure (the
// coordinator said no, or could not be reached, or a bad job file), 2 usage error.
#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "google/protobuf/util/message_differencer.h"
#include "model/language_model.h"
#include "model/payload.h"
#include "model/sequential.h"
#include "model/serialize.h"
#include "proto/admin.grpc.pb.h"
#include "server/ctl/fedgectl_args.h"
#include "server/ctl/privacy_plan.h"
#include "server/job_config.h"

namespace fedge::ctl {
namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what,
                                     size_t max_bytes = size_t{1} << 24) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
  }
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is too large"));
  }
  return s.str();
}

absl::StatusOr<std::unique_ptr<v1::Admin::Stub>> Connect(const CtlConnection& c) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (c.insecure) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!c.tls_ca.empty()) {
      FEDGE_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(c.tls_ca, "--tls-ca"));
    }
    if (!c.tls_cert.empty()) {
      FEDGE_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(c.tls_cert, "--tls-cert"));
      FEDGE_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(c.tls_key, "--tls-key"));
    }
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  if (!c.tls_server_name.empty()) args.SetSslTargetNameOverride(c.tls_server_name);
  return v1::Admin::NewStub(grpc::CreateCustomChannel(c.target, creds, args));
}

// Every call carries the operator's token; `seconds` > 0 bounds it.
void Prepare(grpc::ClientContext& ctx, const CtlConnection& c, double seconds) {
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", c.token));
  if (seconds > 0) ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(seconds)));
}

// The operator's token: --token-file, else $FEDGE_OPERATOR_TOKEN.
absl::StatusOr<std::string> OperatorToken(const CtlConnection& c, const char* env) {
  std::string token;
  if (!c.token_file.empty()) {
    FEDGE_ASSIGN_OR_RETURN(token, ReadFile(c.token_file, "--token-file", 4096));
  } else if (env != nullptr) {
    token = env;
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "no operator token: give --token-file FILE or set $FEDGE_OPERATOR_TOKEN (an operator "
        "of the coordinator makes one with `fedge-coordinator operators add NAME --role ...`)");
  }
  return token;
}

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

std::string StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_STOPPED: return "stopped";
    case v1::JOB_STATE_FINISHED: return "finished";
    case v1::JOB_STATE_FAILED: return "failed";
    default: return "unknown";
  }
}

std::string RoundStateName(v1::RoundState s) {
  switch (s) {
    case v1::ROUND_STATE_OPEN: return "open";
    case v1::ROUND_STATE_COMPLETED: return "completed";
    case v1::ROUND_STATE_FAILED: return "failed";
    case v1::ROUND_STATE_ABANDONED: return "abandoned";
    default: return "unknown";
  }
}

// One line per round, as `watch` and `rounds` print it.
std::string RoundLine(const v1::RoundRecord& r) {
  const v1::RoundMetrics& m = r.metrics();
  std::string acc = m.evaluated() ? absl::StrFormat("acc %.4f  loss %.4f", m.test_accuracy(), m.test_loss())
                                  : std::string("acc -       loss -     ");
  if (m.test_perplexity() > 0) {  // a language model
    acc = absl::StrFormat("ppl %8.2f  loss %.4f", m.test_perplexity(), m.test_loss());
  }
  std::string line = absl::StrFormat(
      "round %4d  %-9s  clients %d/%d  %s  train loss %.4f  %6.1fs  up %.2f MB  down %.2f MB",
      r.round(), RoundStateName(r.state()), m.participants(), m.sampled(), acc, m.train_loss(),
      m.round_seconds(), m.bytes_up() / 1e6, m.bytes_down() / 1e6);
  if (m.epsilon() > 0) absl::StrAppendFormat(&line, "  ε %.4g", m.epsilon());  // at the job's δ
  if (const v1::SecureAggregationRoundMetrics& sa = m.secure_aggregation(); sa.advertised() > 0) {
    absl::StrAppendFormat(&line,
                          "\n      %s (k=%d): keys %d, shares %d, masked %d, unmasked by %d, "
                          "unmasking %.3fs, protocol %.1f kB",
                          sa.plus() ? "SecAgg+" : "SecAgg", sa.num_neighbors(), sa.advertised(),
                          sa.shared(), sa.masked(), sa.unmasked_by(), sa.unmask_seconds(),
                          sa.protocol_bytes() / 1e3);
  }
  if (const v1::RobustnessRoundMetrics& b = m.robustness();
      b.clipped() > 0 || b.weight_capped() > 0 || b.excluded() > 0) {
    // What the hostile-update bounds did (only when they did something).
    absl::StrAppendFormat(&line,
                          "\n      bounds: %d update(s) clipped to norm %.4g, %d weight(s) capped "
                          "at %.4g",
                          b.clipped(), b.norm_bound(), b.weight_capped(), b.weight_cap());
    if (b.excluded() > 0) {
      absl::StrAppendFormat(&line, ", %d excluded by direction (cosine under %.3g)", b.excluded(),
                            b.direction_threshold());
    }
  }
  if (m.has_fed_cg()) {
    // FedCG: no central accuracy; the devices' own (private E + global C of the previous
    // round) and the server distillation's health.
    const v1::FedCgRoundMetrics& f = m.fed_cg();
    const std::string clients =
        f.clients_evaluated() > 0
            ? absl::StrFormat("client acc %.4f (%d devices, %d examples; model of round %d)",
                              f.client_accuracy(), f.clients_evaluated(), f.eval_examples(),
                              f.evaluated_model_round())
            : std::string("client acc -");
    absl::StrAppendFormat(&line,
                          "\n      FedCG: %s  distill %d steps KL %.4f -> %.4f  synthetic acc "
                          "%.4f  %.1fs",
                          clients, f.distill_steps(), f.first_kl(), f.last_kl(),
                          f.synthetic_accuracy(), f.distill_seconds());
  }
  // Per tier: its sub-model's own accuracy and the bytes each of its clients moved.
  for (const v1::TierRoundMetrics& t : m.tiers()) {
    const std::string tier_acc =
        t.evaluated() ? absl::StrFormat("acc %.4f", t.test_accuracy()) : std::string("acc -     ");
    absl::StrAppendFormat(
        &line, "\n      tier %-10s r=%-6g clients %d/%d  %s  per client: down %.3f MB  up %.3f MB",
        t.tier(), t.width_ratio(), t.participants(), t.sampled(), tier_acc,
        t.sampled() > 0 ? t.bytes_down() / 1e6 / t.sampled() : 0.0,
        t.participants() > 0 ? t.bytes_up() / 1e6 / t.participants() : 0.0);
  }
  return line;
}

// Text from outside (devices, job configs), printed escaped: no control sequence reaches the
// operator's terminal.
std::string P(const std::string& s) { return base::Printable(s, 512); }

void PrintStatus(const v1::JobStatus& s) {
  std::printf("job %s (%s): %s\n", P(s.job_id()).c_str(), P(s.config().name()).c_str(),
              StateName(s.state()).c_str());
  std::printf("  rounds      %lld of %d completed", static_cast<long long>(s.completed_rounds()),
              s.config().rounds());
  if (s.current_round() > 0) std::printf(", round %lld in flight", static_cast<long long>(s.current_round()));
  std::printf("\n");
  const std::string arch = !s.config().architecture().empty() ? s.config().architecture()
                                                              : s.config().model_spec().name();
  std::printf("  model       %s\n", P(arch).c_str());
  if (s.latest_metrics().round() > 0) {
    const v1::RoundMetrics& m = s.latest_metrics();
    if (m.test_perplexity() > 0) {
      std::printf("  latest      round %lld: %d/%d clients, test perplexity %.2f, test loss %.4f, "
                  "%.1fs\n",
                  static_cast<long long>(m.round()), m.participants(), m.sampled(),
                  m.test_perplexity(), m.test_loss(), m.round_seconds());
    } else {
      std::printf("  latest      round %lld: %d/%d clients, test accuracy %.4f, test loss %.4f, "
                  "%.1fs\n",
                  static_cast<long long>(m.round()), m.participants(), m.sampled(),
                  m.test_accuracy(), m.test_loss(), m.round_seconds());
    }
  }
  std::printf("  created     %s UTC, updated %s UTC\n", FormatTime(s.created_unix_ms()).c_str(),
              FormatTime(s.updated_unix_ms()).c_str());
  if (!s.message().empty()) std::printf("  message     %s\n", P(s.message()).c_str());
}

absl::Status JobStart(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  FEDGE_ASSIGN_OR_RETURN(std::string text,
                         ReadFile(cmd.config_path, "job file", server::kMaxJobConfigTextBytes));
  // Validate here first: field-named errors without a round trip (the coordinator checks
  // again; its word is final).
  FEDGE_ASSIGN_OR_RETURN(v1::JobConfig local, server::LoadJobConfig(text, cmd.config_path));
  v1::StartJobRequest req;
  req.set_config_text(text);
  req.set_dry_run(cmd.dry_run);
  v1::StartJobResponse resp;
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub.StartJob(&ctx, req, &resp), "StartJob"));
  if (cmd.dry_run) {
    std::printf("job config %s is valid (nothing started)\n", cmd.config_path.c_str());
  } else {
    std::printf("started job %s (%s): %d rounds\n", resp.job_id().c_str(),
                local.name().c_str(), resp.config().rounds());
  }
  return absl::OkStatus();
}

absl::Status Status(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::GetJobRequest req;
  req.set_job_id(cmd.job_id);
  v1::JobStatus resp;
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub.GetJob(&ctx, req, &resp), "GetJob"));
  PrintStatus(resp);
  return absl::OkStatus();
}

absl::Status Watch(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::WatchJobRequest req;
  req.set_job_id(cmd.job_id);
  req.set_replay_history(cmd.replay);
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, /*seconds=*/0);  // no deadline: the job decides
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = stub.WatchJob(&ctx, req);
  v1::JobEvent e;
  std::optional<v1::JobStatus> last;
  while (reader->Read(&e)) {
    if (e.has_round_closed()) {
      std::printf("%s\n", RoundLine(e.round_closed()).c_str());
    } else if (e.has_round_opened()) {
      // Quiet: one line per round, printed when it closes.
    } else if (e.has_job_changed()) {
      last = e.job_changed();
      if (e.job_changed().state() != v1::JOB_STATE_RUNNING) {
        std::printf("job %s %s after %lld rounds%s%s\n", P(e.job_changed().job_id()).c_str(),
                    StateName(e.job_changed().state()).c_str(),
                    static_cast<long long>(e.job_changed().completed_rounds()),
                    e.job_changed().message().empty() ? "" : ": ",
                    P(e.job_changed().message()).c_str());
        std::fflush(stdout);
        ctx.TryCancel();
        break;
      }
    }
    std::fflush(stdout);
  }
  const grpc::Status s = reader->Finish();
  if (last.has_value() && last->state() != v1::JOB_STATE_RUNNING) {
    return last->state() == v1::JOB_STATE_FAILED
               ? absl::AbortedError(absl::StrCat("job ", last->job_id(), " failed"))
               : absl::OkStatus();
  }
  FEDGE_RETURN_IF_ERROR(FromGrpc(s, "WatchJob"));
  // The stream ended before the job did (e.g. the coordinator is shutting down).
  return absl::UnavailableError("WatchJob: the coordinator closed the stream before the job ended");
}

absl::Status Clients(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::ListClientsRequest req;
  req.set_include_inactive(cmd.include_inactive);
  v1::ListClientsResponse resp;
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub.ListClients(&ctx, req, &resp), "ListClients"));
  std::printf("%-24s %-8s %-8s %9s %7s %-16s %s\n", "CLIENT", "STATE", "COMPUTE", "EXAMPLES",
              "ROUNDS", "PLATFORM", "LAST SEEN (UTC)");
  for (const v1::ClientRecord& c : resp.clients()) {
    const char* state = c.state() == v1::CLIENT_STATE_ACTIVE   ? "active"
                        : c.state() == v1::CLIENT_STATE_LEFT   ? "left"
                        : c.state() == v1::CLIENT_STATE_EXPIRED ? "expired"
                        : c.state() == v1::CLIENT_STATE_REVOKED ? "revoked"
                                                                 : "?";
    const char* compute = c.profile().compute_class() == v1::COMPUTE_CLASS_LOW      ? "low"
                          : c.profile().compute_class() == v1::COMPUTE_CLASS_MEDIUM ? "medium"
                          : c.profile().compute_class() == v1::COMPUTE_CLASS_HIGH   ? "high"
                                                                                    : "-";
    // Every string here came from a device: printed escaped (base/text.h).
    std::printf("%-24s %-8s %-8s %9lld %7lld %-16s %s\n", P(c.client_id()).c_str(), state, compute,
                static_cast<long long>(c.profile().num_examples()),
                static_cast<long long>(c.rounds_participated()),
                c.profile().platform().empty() ? "-" : P(c.profile().platform()).c_str(),
                FormatTime(c.last_seen_unix_ms()).c_str());
    if (!c.tier().empty()) std::printf("    tier %s\n", P(c.tier()).c_str());
    if (!c.declined_reason().empty()) {
      std::printf("    declined: %s\n", P(c.declined_reason()).c_str());
    }
  }
  std::printf("%d client(s)\n", resp.clients_size());
  return absl::OkStatus();
}

absl::Status Rounds(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  int64_t from = 1;
  int printed = 0;
  for (;;) {
    v1::ListRoundsRequest req;
    req.set_job_id(cmd.job_id);
    req.set_from_round(from);
    v1::ListRoundsResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
    FEDGE_RETURN_IF_ERROR(FromGrpc(stub.ListRounds(&ctx, req, &resp), "ListRounds"));
    int64_t last = from - 1;
    for (const v1::RoundRecord& r : resp.rounds()) {
      std::printf("%s\n", RoundLine(r).c_str());
      ++printed;
      last = std::max(last, r.round());
    }
    // Pages of up to 1000 rounds.
    if (resp.rounds_size() < 1000 || last < from) break;
    from = last + 1;
  }
  if (printed == 0) std::printf("no rounds yet\n");
  return absl::OkStatus();
}

absl::Status Export(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::ExportModelRequest req;
  req.set_job_id(cmd.job_id);
  req.set_round(cmd.round);
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, std::max(cmd.connection.timeout_seconds, 600.0));
  std::unique_ptr<grpc::ClientReader<v1::ExportChunk>> reader = stub.ExportModel(&ctx, req);
  v1::ExportChunk chunk;
  std::optional<v1::ExportHeader> header;
  std::optional<model::PayloadAssembler> assembler;
  std::optional<std::string> payload;
  absl::Status error;
  while (error.ok() && !payload.has_value() && reader->Read(&chunk)) {
    if (chunk.has_header()) {
      if (header.has_value()) {
        error = absl::InvalidArgumentError("ExportModel: a second header");
        break;
      }
      header = chunk.header();
      auto a = model::PayloadAssembler::Create(header->total_bytes(), model::kMaxModelFileBytes);
      if (!a.ok()) {
        error = a.status();
        break;
      }
      assembler.emplace(std::move(a).value());
    } else if (!assembler.has_value()) {
      error = absl::InvalidArgumentError("ExportModel: the stream did not start with a header");
    } else if (chunk.has_data()) {
      error = assembler->Add(chunk.data());
    } else if (chunk.has_trailer()) {
      auto bytes = assembler->Finish(chunk.trailer());
      if (!bytes.ok()) {
        error = bytes.status();
      } else {
        payload = std::move(bytes).value();
      }
    }
  }
  if (!error.ok() || payload.has_value()) ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  const grpc::Status s = reader->Finish();
  FEDGE_RETURN_IF_ERROR(error);
  if (!payload.has_value()) {
    FEDGE_RETURN_IF_ERROR(FromGrpc(s, "ExportModel"));
    return absl::DataLossError("ExportModel: the stream ended before the trailer");
  }
  v1::ModelProto m;
  if (!m.ParseFromString(*payload)) {
    return absl::DataLossError("ExportModel: the payload is not a ModelProto");
  }
  // A model file must load for inference: check the architecture and parameters. A
  // language-model job exports its adapters (fedgectl sample --base puts them on the base).
  if (m.spec().has_transformer()) {
    FEDGE_RETURN_IF_ERROR(model::ValidateTransformerConfig(
        model::TransformerConfigFromSpec(m.spec().transformer())));
    for (const v1::TensorProto& t : m.parameters()) {
      for (float v : t.values()) {
        if (!std::isfinite(v)) {
          return absl::DataLossError(absl::StrCat("ExportModel: tensor ", t.name(),
                                                  " has a non-finite value"));
        }
      }
    }
  } else {
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::Sequential> net,
                           model::Sequential::FromProto(m));
  }
  FEDGE_RETURN_IF_ERROR(model::SaveModel(cmd.out_path, m));
  int64_t params = 0;
  for (const v1::TensorProto& t : m.parameters()) params += t.values_size();
  std::printf("exported job %s round %lld (%s, %lld parameters, %zu bytes) to %s\n",
              header->job_id().c_str(), static_cast<long long>(header->round()),
              m.spec().name().c_str(), static_cast<long long>(params), payload->size(),
              cmd.out_path.c_str());
  return absl::OkStatus();
}

absl::Status Stop(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::StopJobRequest req;
  req.set_job_id(cmd.job_id);
  req.set_reason(cmd.reason.empty() ? "stopped with fedgectl" : cmd.reason);
  v1::StopJobResponse resp;
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub.StopJob(&ctx, req, &resp), "StopJob"));
  PrintStatus(resp.status());
  return absl::OkStatus();
}

std::string EnrollmentLine(const v1::EnrollmentTokenRecord& r) {
  auto when = [](int64_t ms) {
    return absl::FormatTime("%Y-%m-%d %H:%M", absl::FromUnixMillis(ms), absl::UTCTimeZone());
  };
  return absl::StrFormat("%-24s uses %lld/%s  expires %s  created %s%s", P(r.name()),
                         static_cast<long long>(r.uses()),
                         r.max_uses() == 0 ? std::string("unlimited") : absl::StrCat(r.max_uses()),
                         r.expires_unix_ms() == 0 ? std::string("never") : when(r.expires_unix_ms()),
                         when(r.created_unix_ms()), r.revoked() ? "  REVOKED" : "");
}

absl::Status Enrollment(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  if (cmd.kind == CtlCommand::Kind::kEnrollmentCreate) {
    v1::CreateEnrollmentTokenRequest req;
    req.set_name(cmd.name);
    req.set_max_uses(cmd.max_uses);
    req.set_expires_in_seconds(static_cast<int64_t>(cmd.expires_hours * 3600));
    v1::CreateEnrollmentTokenResponse resp;
    FEDGE_RETURN_IF_ERROR(FromGrpc(stub.CreateEnrollmentToken(&ctx, req, &resp), "CreateEnrollmentToken"));
    std::fprintf(stderr, "enrollment token %s (shown once; devices take it with "
                         "--enrollment-token-file):\n", EnrollmentLine(resp.record()).c_str());
    std::printf("%s\n", resp.token().c_str());
  } else if (cmd.kind == CtlCommand::Kind::kEnrollmentList) {
    v1::ListEnrollmentTokensResponse resp;
    FEDGE_RETURN_IF_ERROR(FromGrpc(stub.ListEnrollmentTokens(&ctx, {}, &resp), "ListEnrollmentTokens"));
    std::printf("%d enrollment token(s) beside the deployment's\n", resp.tokens_size());
    for (const v1::EnrollmentTokenRecord& r : resp.tokens()) std::printf("%s\n", EnrollmentLine(r).c_str());
  } else {
    v1::RevokeEnrollmentTokenRequest req;
    req.set_name(cmd.name);
    v1::EnrollmentTokenRecord resp;
    FEDGE_RETURN_IF_ERROR(FromGrpc(stub.RevokeEnrollmentToken(&ctx, req, &resp), "RevokeEnrollmentToken"));
    std::printf("revoked: %s\n", EnrollmentLine(resp).c_str());
  }
  return absl::OkStatus();
}

absl::Status RevokeDevice(v1::Admin::Stub& stub, const CtlCommand& cmd) {
  v1::RevokeDeviceRequest req;
  req.set_client_id(cmd.name);
  req.set_reason(cmd.reason.empty() ? "revoked with fedgectl" : cmd.reason);
  v1::RevokeDeviceResponse resp;
  grpc::ClientContext ctx;
  Prepare(ctx, cmd.connection, cmd.connection.timeout_seconds);
  FEDGE_RETURN_IF_ERROR(FromGrpc(stub.RevokeDevice(&ctx, req, &resp), "RevokeDevice"));
  std::printf("device %s revoked: its session and id are refused from now on\n",
              P(resp.record().client_id()).c_str());
  return absl::OkStatus();
}

// `sample`: offline, from a language-model file. The generated bytes come from a model that
// devices' text trained, so control characters other than newlines and tabs are escaped.
absl::Status Sample(const CtlCommand& cmd) {
  FEDGE_ASSIGN_OR_RETURN(v1::ModelProto file, model::LoadModel(cmd.model_path));
  const bool adapters = file.spec().has_lora();
  if (adapters && cmd.base_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cmd.model_path, " holds a language-model job's adapters: give their base with --base"));
  }
  // A full-parameter job's export is a whole model without the tokenizer: its base has it.
  const bool whole_without_tokenizer = !adapters && file.tokenizer().empty();
  if (!adapters && !whole_without_tokenizer && !cmd.base_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--base is for adapter files and models without a tokenizer; ", cmd.model_path,
        " is a whole language model"));
  }
  if (whole_without_tokenizer && cmd.base_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cmd.model_path, " holds no tokenizer (a full-parameter job's export): give the base it "
        "was fine-tuned from with --base"));
  }
  v1::ModelProto base_file;
  if (!cmd.base_path.empty()) {
    FEDGE_ASSIGN_OR_RETURN(base_file, model::LoadModel(cmd.base_path));
  }
  if (whole_without_tokenizer) {
    if (!google::protobuf::util::MessageDifferencer::Equals(base_file.spec().transformer(),
                                                            file.spec().transformer())) {
      return absl::InvalidArgumentError(absl::StrCat(
          cmd.base_path, " is not the architecture of ", cmd.model_path));
    }
    file.set_tokenizer(base_file.tokenizer());
  }
  FEDGE_ASSIGN_OR_RETURN(model::LanguageModel lm,
                         model::LanguageModelFromProto(adapters ? base_file : file));
  if (adapters) {
    FEDGE_RETURN_IF_ERROR(
        lm.model->AddLora(model::LoraConfigFromSpec(file.spec().lora()), file.spec().lora().seed()));
    FEDGE_RETURN_IF_ERROR(lm.model->SetAdapters(file));
  }
  model::SampleOptions o;
  o.max_tokens = static_cast<int>(cmd.max_tokens);
  o.temperature = static_cast<float>(cmd.temperature);
  o.top_k = static_cast<int>(cmd.top_k);
  o.seed = cmd.seed;
  auto print = [](absl::string_view text) {
    for (char ch : text) {
      if (ch == '\n' || ch == '\t') {
        std::putchar(ch);
      } else {
        std::fputs(base::Printable(absl::string_view(&ch, 1)).c_str(), stdout);
      }
    }
    std::fflush(stdout);
  };
  print(cmd.prompt);
  FEDGE_RETURN_IF_ERROR(
      model::SampleText(lm, cmd.prompt, o, [&](std::string_view t) {
        print(absl::string_view(t.data(), t.size()));
      }).status());
  std::printf("\n");
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* env = std::getenv("FEDGE_COORDINATOR");
  auto cmd = ParseCtlArgs(args, env != nullptr ? env : "");
  if (!cmd.ok()) {
    std::fprintf(stderr, "fedgectl: %s\n%s", std::string(cmd.status().message()).c_str(),
                 CtlUsage());
    return 2;
  }
  if (cmd->kind == CtlCommand::Kind::kHelp) {
    std::printf("%s", CtlUsage());
    return 0;
  }
  if (cmd->kind == CtlCommand::Kind::kSample) {  // offline: no coordinator
    const absl::Status s = Sample(*cmd);
    if (!s.ok()) {
      std::fprintf(stderr, "fedgectl: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    return 0;
  }
  if (cmd->kind == CtlCommand::Kind::kPrivacy) {  // offline: no coordinator
    auto report = PrivacyPlanReport(*cmd);
    if (!report.ok()) {
      std::fprintf(stderr, "fedgectl: %s\n", std::string(report.status().message()).c_str());
      return 1;
    }
    std::printf("%s", report->c_str());
    return 0;
  }
  absl::Status s;
  absl::StatusOr<std::string> token =
      OperatorToken(cmd->connection, std::getenv("FEDGE_OPERATOR_TOKEN"));
  if (token.ok()) cmd->connection.token = *token;
  auto stub = token.ok() ? Connect(cmd->connection)
                         : absl::StatusOr<std::unique_ptr<v1::Admin::Stub>>(token.status());
  if (!stub.ok()) {
    s = stub.status();
  } else {
    switch (cmd->kind) {
      case CtlCommand::Kind::kJobStart: s = JobStart(**stub, *cmd); break;
      case CtlCommand::Kind::kStatus: s = Status(**stub, *cmd); break;
      case CtlCommand::Kind::kWatch: s = Watch(**stub, *cmd); break;
      case CtlCommand::Kind::kClients: s = Clients(**stub, *cmd); break;
      case CtlCommand::Kind::kRounds: s = Rounds(**stub, *cmd); break;
      case CtlCommand::Kind::kExport: s = Export(**stub, *cmd); break;
      case CtlCommand::Kind::kStop: s = Stop(**stub, *cmd); break;
      case CtlCommand::Kind::kEnrollmentCreate:
      case CtlCommand::Kind::kEnrollmentList:
      case CtlCommand::Kind::kEnrollmentRevoke: s = Enrollment(**stub, *cmd); break;
      case CtlCommand::Kind::kDeviceRevoke: s = RevokeDevice(**stub, *cmd); break;
      case CtlCommand::Kind::kHelp:
      case CtlCommand::Kind::kSample:
      case CtlCommand::Kind::kPrivacy: break;
    }
  }
  if (!s.ok()) {
    std::fprintf(stderr, "fedgectl: %s%s\n", std::string(s.message()).c_str(),
                 absl::IsUnavailable(s) ? absl::StrCat(" (is the coordinator running at ",
                                                       cmd->connection.target, "?)").c_str()
                                        : "");
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fedge::ctl

int main(int argc, char** argv) { return fedge::ctl::Main(argc, argv); }
