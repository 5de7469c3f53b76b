// A job with sub-model tiers for tests: mlp 8-16-16-3 with tiers full (1), half (1/2) and
// quarter (1/4), assigned by memory rules (≥ 64 MiB full, ≥ 16 MiB half, else quarter).
#ifndef FEDGE_TESTS_TIERED_JOB_H_
#define FEDGE_TESTS_TIERED_JOB_H_

#include <cstdint>
#include <utility>

#include "model/zoo.h"
#include "proto/job.pb.h"

namespace fedge::testing {

inline v1::JobConfig TieredJob(int rounds, int per_round) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  v1::JobConfig job;
  job.set_name("tiers");
  *job.mutable_model_spec() = model::MlpSpec({8, 16, 16, 3}, "tiny");
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_round_policy()->set_quorum(1);
  job.mutable_round_policy()->set_deadline_seconds(600);
  job.mutable_local_training()->set_epochs(1);
  job.mutable_local_training()->set_batch_size(16);
  job.mutable_local_training()->set_learning_rate(0.1);
  v1::SubModelConfig* sub = job.mutable_sub_models();
  for (auto [name, r] : {std::pair<const char*, double>{"full", 1.0}, {"half", 0.5}, {"quarter", 0.25}}) {
    v1::SubModelTier* t = sub->add_tiers();
    t->set_name(name);
    t->set_width_ratio(r);
  }
  v1::TierRule* full = sub->add_rules();
  full->set_tier("full");
  full->set_min_memory_budget_bytes(64 * kMiB);
  v1::TierRule* half = sub->add_rules();
  half->set_tier("half");
  half->set_min_memory_budget_bytes(16 * kMiB);
  sub->set_default_tier("quarter");
  return job;
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TIERED_JOB_H_
