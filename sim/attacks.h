// Hostile devices in fedge-sim (SimConfig.attack): what a device in an attacker's hands can
// send within the protocol — any update values, any example count up to what it claimed at
// registration, training on poisoned labels — so that the coordinator's defences
// (docs/security.md, "Hostile updates") are measured on the code that ships: the hostile
// update goes through the same encoding, link and coordinator as an honest one.
//
//   Attack attack(config.attack());
//   profile.set_num_examples(attack.ClaimedExamples(client, true_count));   // Register
//   if (attack.hostile(client)) FEDGE_RETURN_IF_ERROR(attack.Poison(client, task_model, update));
//   source = WithAttack(std::move(source), config.attack());                // label flip
//
// Thread safety: const methods, safe from any thread.
#ifndef FEDGE_SIM_ATTACKS_H_
#define FEDGE_SIM_ATTACKS_H_

#include <cstdint>
#include <memory>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "client/local_trainer.h"
#include "proto/model.pb.h"
#include "proto/sim.pb.h"
#include "sim/client_data.h"

namespace fedge::sim {

class Attack {
 public:
  // REQUIRES: `config` validated (ValidateSimConfig).
  explicit Attack(const v1::AttackConfig& config);

  bool hostile(int64_t client) const { return hostile_.contains(client); }
  // What `client` declares at registration and weighs its updates with.
  int64_t ClaimedExamples(int64_t client, int64_t true_count) const;
  // Rewrites a hostile client's trained update (after the device's own clipping: the
  // attacker bypasses it) as the attack says, with its claimed weight. `task_model` is the
  // model its task carried. INVALID_ARGUMENT when Δ and the model differ in shape.
  absl::Status Poison(int64_t client, const v1::ModelProto& task_model,
                      client::LocalUpdate& update) const;

 private:
  const v1::AttackConfig config_;
  absl::flat_hash_set<int64_t> hostile_;
};

// `source`, with the labels of the hostile clients' examples flipped (y → C − 1 − y) under
// ATTACK_KIND_LABEL_FLIP; `source` unchanged otherwise.
std::unique_ptr<ClientDataSource> WithAttack(std::unique_ptr<ClientDataSource> source,
                                             const v1::AttackConfig& config);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_ATTACKS_H_
