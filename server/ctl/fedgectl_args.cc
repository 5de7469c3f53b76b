#include "server/ctl/fedgectl_args.h"

#include <cmath>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_join.h"

namespace fedge::ctl {
namespace {

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(std::string(message));
}

}  // namespace

const char* CtlUsage() {
  return "usage: fedgectl [--coordinator HOST:PORT] [--token-file FILE] [--insecure | --tls-ca "
         "PEM [--tls-cert PEM --tls-key PEM]] COMMAND\n"
         "commands:\n"
         "  job start FILE [--dry-run]     validate FILE (text JobConfig) and start the job\n"
         "  status [JOB]                   state, rounds and latest metrics of a job\n"
         "  watch [JOB] [--replay]         one line per round until the job ends\n"
         "  clients [--all]                registered devices (--all: also left/expired)\n"
         "  rounds [JOB]                   every round of a job with its metrics\n"
         "  export [JOB] --out FILE [--round N]  write the model (a model file) to FILE\n"
         "  stop JOB [--reason TEXT]       stop a running job\n"
         "  enrollment create NAME [--uses N] [--expires-hours H]\n"
         "                                 a named enrollment token for N new devices (0:\n"
         "                                 unlimited), valid H hours (0: no expiry); printed once\n"
         "  enrollment list | enrollment revoke NAME\n"
         "  devices revoke ID [--reason TEXT]  revoke a device: its session and id are refused\n"
         "  privacy --sampling-rate Q --rounds R --delta D --noise-multiplier Z\n"
         "                                 epsilon of R DP-FedAvg rounds (RDP accountant) and\n"
         "                                 its order; --target-epsilon E instead of\n"
         "                                 --noise-multiplier prints the Z that reaches E\n"
         "  sample MODEL_FILE [--base FILE] [--prompt TEXT] [--tokens N] [--temperature T]\n"
         "         [--top-k K] [--seed S]  text from a language-model file (or an exported\n"
         "                                 job's adapters on their --base), offline: N tokens\n"
         "                                 (100) after the prompt, temperature 0.8 (0: greedy)\n"
         "                                 among the K (40; 0: all) most likely tokens\n"
         "JOB defaults to the running (or most recent) job. --coordinator is the coordinator's\n"
         "admin listener: $FEDGE_COORDINATOR, else 127.0.0.1:50052. The operator's token (from\n"
         "`fedge-coordinator operators add`): --token-file FILE, else $FEDGE_OPERATOR_TOKEN.\n"
         "Roles: viewer (status, watch, clients, rounds), operator (also job start, stop,\n"
         "export). --timeout SECONDS bounds each call (30).\n";
}

absl::StatusOr<CtlCommand> ParseCtlArgs(const std::vector<std::string>& args,
                                        const std::string& env_coordinator) {
  CtlCommand cmd;
  if (!env_coordinator.empty()) cmd.connection.target = env_coordinator;
  // Flags that take a value, and boolean flags.
  enum class F { kCoordinator, kTokenFile, kTlsCa, kTlsCert, kTlsKey, kTlsServerName, kTimeout, kConfig,
                 kOut, kRound, kReason, kSamplingRate, kNoiseMultiplier, kRounds, kDelta,
                 kTargetEpsilon, kUses, kExpiresHours, kPrompt, kTokens, kTemperature, kTopK,
                 kSeed, kBase, kInsecure, kDryRun, kReplay, kAll, kHelp };
  static const std::map<std::string, F>* const kFlags = new std::map<std::string, F>{
      {"coordinator", F::kCoordinator}, {"token_file", F::kTokenFile}, {"tls_ca", F::kTlsCa}, {"tls_cert", F::kTlsCert},
      {"tls_key", F::kTlsKey}, {"tls_server_name", F::kTlsServerName},
      {"timeout", F::kTimeout}, {"config", F::kConfig}, {"out", F::kOut},
      {"round", F::kRound}, {"reason", F::kReason}, {"insecure", F::kInsecure},
      {"dry_run", F::kDryRun}, {"replay", F::kReplay}, {"all", F::kAll}, {"help", F::kHelp},
      {"sampling_rate", F::kSamplingRate}, {"noise_multiplier", F::kNoiseMultiplier},
      {"rounds", F::kRounds}, {"delta", F::kDelta}, {"target_epsilon", F::kTargetEpsilon},
      {"uses", F::kUses}, {"expires_hours", F::kExpiresHours}, {"prompt", F::kPrompt},
      {"tokens", F::kTokens}, {"temperature", F::kTemperature}, {"top_k", F::kTopK},
      {"seed", F::kSeed}, {"base", F::kBase}};
  std::vector<std::string> positional;
  bool seen_round = false, seen_out = false, seen_dry_run = false, seen_replay = false,
       seen_all = false, seen_reason = false, seen_privacy = false, seen_enrollment = false,
       seen_sample = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      for (++i; i < args.size(); ++i) positional.push_back(args[i]);
      break;
    }
    if (a.size() < 2 || a[0] != '-' || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "-h") {
      cmd.kind = CtlCommand::Kind::kHelp;
      return cmd;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    absl::StrReplaceAll({{"-", "_"}}, &name);
    auto it = kFlags->find(name);
    if (it == kFlags->end()) return Usage(absl::StrCat("unknown flag '", a, "'"));
    const F f = it->second;
    const bool boolean = f == F::kInsecure || f == F::kDryRun || f == F::kReplay ||
                         f == F::kAll || f == F::kHelp;
    if (boolean) {
      if (has_value && value != "true" && value != "false") {
        return Usage(absl::StrCat("--", name, " takes no value (or =true/=false)"));
      }
      const bool on = !has_value || value == "true";
      switch (f) {
        case F::kInsecure: cmd.connection.insecure = on; break;
        case F::kDryRun: cmd.dry_run = on; seen_dry_run = true; break;
        case F::kReplay: cmd.replay = on; seen_replay = true; break;
        case F::kAll: cmd.include_inactive = on; seen_all = true; break;
        case F::kHelp: cmd.kind = CtlCommand::Kind::kHelp; return cmd;
        default: break;
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return Usage(absl::StrCat("--", name, " needs a value"));
      value = args[++i];
    }
    switch (f) {
      case F::kCoordinator:
        if (value.empty()) return Usage("--coordinator needs HOST:PORT");
        cmd.connection.target = value;
        break;
      case F::kTokenFile: cmd.connection.token_file = value; break;
      case F::kTlsCa: cmd.connection.tls_ca = value; break;
      case F::kTlsCert: cmd.connection.tls_cert = value; break;
      case F::kTlsKey: cmd.connection.tls_key = value; break;
      case F::kTlsServerName: cmd.connection.tls_server_name = value; break;
      case F::kTimeout:
        if (!absl::SimpleAtod(value, &cmd.connection.timeout_seconds) ||
            !(cmd.connection.timeout_seconds > 0) || !std::isfinite(cmd.connection.timeout_seconds)) {
          return Usage(absl::StrCat("--timeout must be a number of seconds > 0, got '", value, "'"));
        }
        break;
      case F::kConfig: cmd.config_path = value; break;
      case F::kOut: cmd.out_path = value; seen_out = true; break;
      case F::kRound:
        if (!absl::SimpleAtoi(value, &cmd.round) || cmd.round < 0) {
          return Usage(absl::StrCat("--round must be an integer ≥ 0, got '", value, "'"));
        }
        seen_round = true;
        break;
      case F::kReason: cmd.reason = value; seen_reason = true; break;
      case F::kSamplingRate:
      case F::kNoiseMultiplier:
      case F::kDelta:
      case F::kTargetEpsilon: {
        double v = 0;
        if (!absl::SimpleAtod(value, &v) || !std::isfinite(v)) {
          return Usage(absl::StrCat("--", name, " must be a number, got '", value, "'"));
        }
        (f == F::kSamplingRate      ? cmd.sampling_rate
         : f == F::kNoiseMultiplier ? cmd.noise_multiplier
         : f == F::kDelta           ? cmd.delta
                                    : cmd.target_epsilon) = v;
        seen_privacy = true;
        break;
      }
      case F::kUses:
        if (!absl::SimpleAtoi(value, &cmd.max_uses) || cmd.max_uses < 0) {
          return Usage(absl::StrCat("--uses must be an integer ≥ 0, got '", value, "'"));
        }
        seen_enrollment = true;
        break;
      case F::kExpiresHours:
        if (!absl::SimpleAtod(value, &cmd.expires_hours) || !(cmd.expires_hours >= 0) ||
            cmd.expires_hours > 24 * 3650) {
          return Usage(absl::StrCat("--expires-hours must be in [0, 87600], got '", value, "'"));
        }
        seen_enrollment = true;
        break;
      case F::kRounds:
        if (!absl::SimpleAtoi(value, &cmd.rounds) || cmd.rounds < 1) {
          return Usage(absl::StrCat("--rounds must be an integer ≥ 1, got '", value, "'"));
        }
        seen_privacy = true;
        break;
      case F::kPrompt: cmd.prompt = value; seen_sample = true; break;
      case F::kBase: cmd.base_path = value; seen_sample = true; break;
      case F::kTokens:
        if (!absl::SimpleAtoi(value, &cmd.max_tokens) || cmd.max_tokens < 0 ||
            cmd.max_tokens > 100000) {
          return Usage(absl::StrCat("--tokens must be an integer in [0, 100000], got '", value, "'"));
        }
        seen_sample = true;
        break;
      case F::kTemperature:
        if (!absl::SimpleAtod(value, &cmd.temperature) || !(cmd.temperature >= 0) ||
            cmd.temperature > 100) {
          return Usage(absl::StrCat("--temperature must be in [0, 100], got '", value, "'"));
        }
        seen_sample = true;
        break;
      case F::kTopK:
        if (!absl::SimpleAtoi(value, &cmd.top_k) || cmd.top_k < 0 || cmd.top_k > (1 << 20)) {
          return Usage(absl::StrCat("--top-k must be an integer ≥ 0, got '", value, "'"));
        }
        seen_sample = true;
        break;
      case F::kSeed:
        if (!absl::SimpleAtoi(value, &cmd.seed)) {
          return Usage(absl::StrCat("--seed must be an unsigned integer, got '", value, "'"));
        }
        seen_sample = true;
        break;
      default: break;
    }
  }
  if (cmd.connection.insecure &&
      (!cmd.connection.tls_ca.empty() || !cmd.connection.tls_cert.empty() ||
       !cmd.connection.tls_key.empty())) {
    return Usage("--insecure cannot be combined with --tls-*");
  }
  if (cmd.connection.tls_cert.empty() != cmd.connection.tls_key.empty()) {
    return Usage("--tls-cert and --tls-key go together");
  }
  if (positional.empty()) return Usage("no command given");
  const std::string verb = positional[0];
  std::vector<std::string> rest(positional.begin() + 1, positional.end());
  auto at_most_one = [&](absl::string_view what) -> absl::Status {
    if (rest.size() > 1) {
      return Usage(absl::StrCat("'", verb, "' takes at most one ", what, ", got: ",
                                absl::StrJoin(rest, " ")));
    }
    if (rest.size() == 1) cmd.job_id = rest[0];
    return absl::OkStatus();
  };
  // Flags that belong to one command only.
  auto reject = [&](bool seen, absl::string_view flag) -> absl::Status {
    if (seen) return Usage(absl::StrCat("--", flag, " does not apply to '", verb, "'"));
    return absl::OkStatus();
  };
  const bool is_start = verb == "job" || verb == "start";
  if (!is_start) {
    if (auto s = reject(seen_dry_run, "dry-run"); !s.ok()) return s;
    if (auto s = reject(!cmd.config_path.empty(), "config"); !s.ok()) return s;
  }
  if (verb != "watch") {
    if (auto s = reject(seen_replay, "replay"); !s.ok()) return s;
  }
  if (verb != "clients") {
    if (auto s = reject(seen_all, "all"); !s.ok()) return s;
  }
  if (verb != "export") {
    if (auto s = reject(seen_out, "out"); !s.ok()) return s;
    if (auto s = reject(seen_round, "round"); !s.ok()) return s;
  }
  if (verb != "stop" && verb != "devices") {
    if (auto s = reject(seen_reason, "reason"); !s.ok()) return s;
  }
  if (verb != "enrollment") {
    if (auto s = reject(seen_enrollment, "uses/--expires-hours"); !s.ok()) return s;
  }
  if (verb != "sample") {
    if (auto s = reject(seen_sample, "prompt/--base/--tokens/--temperature/--top-k/--seed");
        !s.ok()) {
      return s;
    }
  }
  if (verb != "privacy") {
    if (auto s = reject(seen_privacy, "sampling-rate/--noise-multiplier/--rounds/--delta/--target-epsilon");
        !s.ok()) {
      return s;
    }
  }

  if (verb == "help") {
    cmd.kind = CtlCommand::Kind::kHelp;
  } else if (is_start) {
    // "job start FILE" (also "start FILE"), or "job start --config FILE".
    if (verb == "job") {
      if (rest.empty() || rest[0] != "start") {
        return Usage("'job' takes a subcommand: job start FILE");
      }
      rest.erase(rest.begin());
    }
    cmd.kind = CtlCommand::Kind::kJobStart;
    if (!cmd.config_path.empty()) {
      if (!rest.empty()) return Usage("give the job file once: FILE or --config FILE");
    } else {
      if (rest.size() != 1) return Usage("job start takes one job file (text JobConfig)");
      cmd.config_path = rest[0];
    }
  } else if (verb == "status") {
    cmd.kind = CtlCommand::Kind::kStatus;
    if (auto s = at_most_one("job id"); !s.ok()) return s;
  } else if (verb == "watch") {
    cmd.kind = CtlCommand::Kind::kWatch;
    if (auto s = at_most_one("job id"); !s.ok()) return s;
  } else if (verb == "clients") {
    cmd.kind = CtlCommand::Kind::kClients;
    if (!rest.empty()) return Usage("'clients' takes no arguments");
  } else if (verb == "rounds") {
    cmd.kind = CtlCommand::Kind::kRounds;
    if (auto s = at_most_one("job id"); !s.ok()) return s;
  } else if (verb == "export") {
    cmd.kind = CtlCommand::Kind::kExport;
    if (auto s = at_most_one("job id"); !s.ok()) return s;
    if (cmd.out_path.empty()) return Usage("export needs --out FILE");
  } else if (verb == "stop") {
    cmd.kind = CtlCommand::Kind::kStop;
    if (rest.size() != 1) return Usage("stop takes the job id: stop JOB");
    cmd.job_id = rest[0];
  } else if (verb == "enrollment") {
    const std::string sub = rest.empty() ? "" : rest[0];
    if (sub == "create" && rest.size() == 2) {
      cmd.kind = CtlCommand::Kind::kEnrollmentCreate;
      cmd.name = rest[1];
    } else if (sub == "list" && rest.size() == 1) {
      cmd.kind = CtlCommand::Kind::kEnrollmentList;
    } else if (sub == "revoke" && rest.size() == 2) {
      cmd.kind = CtlCommand::Kind::kEnrollmentRevoke;
      cmd.name = rest[1];
    } else {
      return Usage("enrollment takes: create NAME [--uses N] [--expires-hours H] | list | revoke NAME");
    }
    if (cmd.kind != CtlCommand::Kind::kEnrollmentCreate && seen_enrollment) {
      return Usage("--uses and --expires-hours apply to 'enrollment create'");
    }
  } else if (verb == "devices") {
    if (rest.size() != 2 || rest[0] != "revoke") return Usage("devices takes: revoke ID [--reason TEXT]");
    cmd.kind = CtlCommand::Kind::kDeviceRevoke;
    cmd.name = rest[1];
  } else if (verb == "sample") {
    cmd.kind = CtlCommand::Kind::kSample;
    if (rest.size() != 1) return Usage("sample takes one model file: sample MODEL_FILE");
    cmd.model_path = rest[0];
  } else if (verb == "privacy") {
    cmd.kind = CtlCommand::Kind::kPrivacy;
    if (!rest.empty()) return Usage("'privacy' takes only flags");
    if (!(cmd.sampling_rate > 0 && cmd.sampling_rate <= 1)) {
      return Usage("privacy needs --sampling-rate Q with 0 < Q <= 1");
    }
    if (cmd.rounds < 1) return Usage("privacy needs --rounds R >= 1");
    if (!(cmd.delta > 0 && cmd.delta < 1)) return Usage("privacy needs --delta D with 0 < D < 1");
    const bool has_z = cmd.noise_multiplier != 0, has_eps = cmd.target_epsilon != 0;
    if (has_z == has_eps) {
      return Usage("privacy needs exactly one of --noise-multiplier Z and --target-epsilon E");
    }
    if (has_z && !(cmd.noise_multiplier > 0)) return Usage("--noise-multiplier must be > 0");
    if (has_eps && !(cmd.target_epsilon > 0)) return Usage("--target-epsilon must be > 0");
  } else {
    return Usage(absl::StrCat("unknown command '", verb, "'"));
  }
  return cmd;
}

}  // namespace fedge::ctl
