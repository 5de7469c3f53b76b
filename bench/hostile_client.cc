// hostile_client: fedge-client in an attacker's hands, for measuring the coordinator's
// defences on a real fleet (examples/fleet/run.sh HOSTILE=i HOSTILE_ATTACK=...,
// docs/security.md). It is fedge-client (the same flags, runtime, training and encoding:
// client/grpc/client_cli.h) with one of fedge-sim's update attacks (sim/attacks.h) applied
// to every trained update before it is encoded and sent, and the example count it claims at
// registration:
//
//   hostile_client --attack neg-model --attack-scale 1000 --attack-claimed-examples 60000 ...
//   hostile_client --attack huge --attack-value 1e30 ...
//   hostile_client --attack sign-flip --attack-scale 10 ...
//
// (Label flipping poisons the data, not the update: give fedge-client a shard written by
// partition_fmnist --label-flip.)
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "client/grpc/client_cli.h"
#include "proto/sim.pb.h"
#include "sim/attacks.h"

ABSL_FLAG(std::string, attack, "",
          "neg-model (Δ = −scale·w), huge (every value --attack-value) or sign-flip "
          "(Δ = −scale·Δ) (required)");
ABSL_FLAG(double, attack_scale, 10, "neg-model and sign-flip: the scale");
ABSL_FLAG(double, attack_value, 1e30, "huge: the value of every coordinate");
ABSL_FLAG(int64_t, attack_claimed_examples, 0,
          "example count claimed at registration and with every update (0: the shard's)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "A hostile fedge-client for measuring defences: fedge-client's flags plus\n"
      "  --attack neg-model|huge|sign-flip [--attack-scale S] [--attack-value V]\n"
      "  [--attack-claimed-examples N]");
  return fedge::client::RunClientCli(
      argc, argv, "hostile_client", [](fedge::client::ClientRuntimeOptions& o) -> absl::Status {
        fedge::v1::AttackConfig config;
        const std::string kind = absl::GetFlag(FLAGS_attack);
        if (kind == "neg-model") {
          config.set_kind(fedge::v1::AttackConfig::ATTACK_KIND_SCALED_NEGATIVE_MODEL);
        } else if (kind == "huge") {
          config.set_kind(fedge::v1::AttackConfig::ATTACK_KIND_CONSTANT);
        } else if (kind == "sign-flip") {
          config.set_kind(fedge::v1::AttackConfig::ATTACK_KIND_SIGN_FLIP);
        } else {
          return absl::InvalidArgumentError(absl::StrCat(
              "--attack '", kind, "': expected neg-model, huge or sign-flip"));
        }
        const int64_t claimed = absl::GetFlag(FLAGS_attack_claimed_examples);
        if (claimed < 0) return absl::InvalidArgumentError("--attack-claimed-examples must be ≥ 0");
        config.set_scale(absl::GetFlag(FLAGS_attack_scale));
        config.set_value(absl::GetFlag(FLAGS_attack_value));
        config.set_claimed_examples(claimed);
        config.add_clients(0);  // this process is sim::Attack's client 0
        o.testing_claimed_examples = claimed;
        o.testing_rewrite_update = [attack = fedge::sim::Attack(config)](
                                       const fedge::v1::ModelProto& task_model,
                                       fedge::client::LocalUpdate& update) {
          return attack.Poison(0, task_model, update);
        };
        std::fprintf(stderr, "hostile_client: attack %s, scale %g, value %g, claims %lld examples\n",
                     kind.c_str(), config.scale(), config.value(),
                     static_cast<long long>(claimed));
        return absl::OkStatus();
      });
}
