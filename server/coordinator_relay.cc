// server::Coordinator's relay calls (docs/relays.md): the root's side (a relay's sync, its
// model, its part of a round) and the relay's (following its root, closing its part).
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "aggregation/weighted_mean.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "server/coordinator.h"
#include "server/model_weights.h"

namespace fedge::server {

absl::Status CheckRelayId(absl::string_view relay_id) {
  const bool ok = !relay_id.empty() && relay_id.size() <= 64 &&
                  std::all_of(relay_id.begin(), relay_id.end(), [](char c) {
                    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                           c == '.' || c == '-';
                  });
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "Coordinator: a relay id is 1-64 characters from [A-Za-z0-9_.-]");
}

std::string Coordinator::RelayUnsupported(const v1::JobConfig& config,
                                          const aggregation::Strategy& strategy) {
  if (config.privacy().secure_aggregation_threshold() > 0 &&
      config.privacy().has_adaptive_clipping()) {
    return "relays do not run secure aggregation with adaptive clipping yet";
  }
  if (config.strategy().has_fed_cg()) return "FedCG's server step needs every update";
  if (config.has_language_model()) return "relays do not serve a language model's base";
  if (strategy.KeepsClientUpdates()) return "the strategy needs every update";
  absl::StatusOr<std::unique_ptr<aggregation::Aggregator>> probe =
      strategy.CreateAggregator({aggregation::TensorSpec{"probe", {1}}});
  if (!probe.ok() || dynamic_cast<aggregation::WeightedMean*>(probe->get()) == nullptr) {
    return "the job's aggregation rule holds the round's updates (it cannot merge partial sums)";
  }
  return std::string();
}

// ---------------------------------------------------------------------------------------
// The root's side

absl::StatusOr<v1::RegisterResponse> Coordinator::RegisterThroughRelay(
    const std::string& relay_id, const v1::RegisterRequest& request) {
  FEDGE_RETURN_IF_ERROR(CheckRelayId(relay_id));
  return registry_.Register(request, relay_id);
}

absl::StatusOr<v1::RelayAssignment> Coordinator::RelaySync(const v1::RelaySyncRequest& request) {
  const std::string& relay = request.relay_id();
  FEDGE_RETURN_IF_ERROR(CheckRelayId(relay));
  if (request.live_clients_size() > kMaxRelaySyncClients) {
    return absl::InvalidArgumentError(absl::StrCat("Coordinator: relay ", relay, " reported ",
                                                   request.live_clients_size(),
                                                   " devices; at most ", kMaxRelaySyncClients,
                                                   " a sync"));
  }
  registry_.SeenThroughRelay(
      relay, std::vector<std::string>(request.live_clients().begin(), request.live_clients().end()));
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  v1::RelayAssignment a;
  a.set_relay_id(relay);
  // A job relays cannot serve is no job for them: they fetch nothing and serve nothing.
  if (job_ == nullptr || !job_->relay_unsupported.empty()) return a;
  Job& job = *job_;
  a.set_job_id(job.id);
  *a.mutable_config() = job.config;
  a.set_model_version(job.completed_rounds);
  if (!job.round.has_value() || job.settling()) return a;
  OpenRound& round = *job.round;
  std::vector<std::string> clients = round.RelayClients(relay);
  if (clients.empty()) return a;
  v1::RelayRound& r = *a.mutable_round();
  r.set_number(round.number());
  r.set_attempt(round.attempt());
  r.set_key(round.key());
  if (round.deadline() != absl::InfiniteFuture()) {
    r.set_deadline_in_ms(std::max<int64_t>(1, absl::ToInt64Milliseconds(round.deadline() - now)));
  }
  r.set_clip_norm(round.dp().clip_norm);
  if (const int t = job.config.privacy().secure_aggregation_threshold(); t > 0) {
    // The job's threshold scaled to the group, at least 2: a relay never unmasks one
    // device's update.
    const int group = round.RelaySampled(relay);
    const int sampled = std::max<int>(1, static_cast<int>(round.sampled().size()));
    r.set_secure_threshold(std::max(2, static_cast<int>((int64_t{t} * group + sampled - 1) / sampled)));
  }
  for (std::string& id : clients) {
    v1::RelayClient& c = *r.add_clients();
    *c.mutable_profile() = registry_.ProfileOf(id);
    c.set_client_id(std::move(id));
  }
  return a;
}

absl::StatusOr<Coordinator::VersionedModel> Coordinator::RelayModel(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || job_->id != job_id) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no running job '", job_id, "'"));
  }
  VersionedModel m;
  m.model = ProtoFromWeights(job_->config.model_spec(), job_->weights);
  m.version = job_->completed_rounds;
  return m;
}

absl::StatusOr<int64_t> Coordinator::RelayModelVersion(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || job_->id != job_id) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no running job '", job_id, "'"));
  }
  return job_->completed_rounds;
}

int64_t Coordinator::RelayPartLimit() const {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr) return 0;
  return (int64_t{1} << 20) + 32 * job_->num_parameters;
}

absl::Status Coordinator::SubmitPartial(const v1::PartialHeader& header,
                                        absl::string_view aggregate) {
  FEDGE_RETURN_IF_ERROR(CheckRelayId(header.relay_id()));
  if (header.total_bytes() != static_cast<int64_t>(aggregate.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: relay ", header.relay_id(), " announced ", header.total_bytes(),
        " bytes of aggregate and sent ", aggregate.size()));
  }
  // Loaded without the lock (it is as large as the model).
  absl::StatusOr<std::unique_ptr<aggregation::WeightedMean>> sums =
      aggregation::WeightedMean::Deserialize(aggregate);
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || job_->id != header.job_id() || !job_->round.has_value() ||
      job_->round->number() != header.round() || job_->round->attempt() != header.attempt() ||
      job_->round->key() != header.round_key() || job_->round->sealed()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: relay ", header.relay_id(), "'s part of job ", header.job_id().substr(0, 128),
        " round ", header.round(), " attempt ", header.attempt(),
        " comes when that round is not open"));
  }
  OpenRound& round = *job_->round;
  if (!sums.ok()) {
    return round.RefuseRelay(header.relay_id(), absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: relay ", header.relay_id(), "'s aggregate does not load: ",
        sums.status().message())));
  }
  // What the sums may weigh: under DP and secure aggregation each participant counts once
  // (a secure group's part is its released mean, one update of weight |survivors|); else
  // at most the examples its devices claimed (the relay's weight caps only lower them).
  const bool released = job_->config.privacy().secure_aggregation_threshold() > 0;
  const bool counted_once = released || job_->config.privacy().noise_multiplier() > 0;
  int64_t accepted = 0;
  double examples = 0;
  for (const v1::ClientRoundMetrics& m : header.clients()) {
    if (m.outcome() != v1::ClientRoundMetrics::OUTCOME_ACCEPTED) continue;
    ++accepted;
    examples += static_cast<double>(std::max<int64_t>(0, m.num_examples()));
  }
  const double weight = (*sums)->total_weight();
  const bool fits = released ? std::abs(weight - static_cast<double>(accepted)) <= 1e-6
                             : weight <= (counted_once ? static_cast<double>(accepted) : examples) *
                                             (1 + 1e-9) + 1e-9;
  if (!fits) {
    return round.RefuseRelay(header.relay_id(), absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: relay ", header.relay_id(), "'s sums weigh ", weight, " for ", accepted,
        " accepted clients (", examples, " examples)")));
  }
  FEDGE_RETURN_IF_ERROR(round.AcceptPartial(header, *std::move(sums), released));
  for (const v1::ClientRoundMetrics& m : header.clients()) {
    if (m.outcome() == v1::ClientRoundMetrics::OUTCOME_DECLINED) {
      registry_.MarkDeclined(m.client_id(), m.reason());
    }
  }
  FEDGE_LOG(INFO) << "Coordinator: job " << job_->id << " round " << round.number()
                  << ": took relay " << header.relay_id() << "'s part ("
                  << header.clients_size() << " clients)";
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// The relay's side

bool Coordinator::NeedsModel(const v1::RelayAssignment& assignment) const {
  if (assignment.job_id().empty()) return false;
  absl::MutexLock lock(&mu_);
  return job_ == nullptr || job_->id != assignment.job_id() ||
         job_->completed_rounds != assignment.model_version();
}

absl::Status Coordinator::Follow(const v1::RelayAssignment& assignment,
                                 const v1::ModelProto* model) {
  if (!is_relay()) {
    return absl::FailedPreconditionError("Coordinator: only a relay follows a root");
  }
  const absl::Time now = clock_.Now();
  absl::MutexLock lock(&mu_);
  // A secure group being unmasked without the lock (from Tick) finishes first.
  auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return job_ == nullptr || !job_->settling();
  };
  mu_.Await(absl::Condition(&settled));
  if (job_ != nullptr && job_->id != assignment.job_id()) {
    FEDGE_LOG(INFO) << "Coordinator: relay " << options_.relay_id << ": job " << job_->id
                    << " ended at the root";
    job_.reset();
    relay_closed_ = 0;
    ++task_epoch_;
    task_cv_.SignalAll();
  }
  if (assignment.job_id().empty()) return absl::OkStatus();
  const bool new_job = job_ == nullptr;
  if (new_job || job_->completed_rounds != assignment.model_version()) {
    if (model == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Coordinator: relay ", options_.relay_id, " needs job ", assignment.job_id(),
          "'s model version ", assignment.model_version()));
    }
    if (new_job) {
      FEDGE_ASSIGN_OR_RETURN(job_, MakeJob(assignment.job_id(), assignment.config()));
      registry_.ClearJobDeclines();
      FEDGE_LOG(INFO) << "Coordinator: relay " << options_.relay_id << " follows job "
                      << assignment.job_id();
    }
    job_->weights = WeightsFromProto(*model);
    job_->completed_rounds = assignment.model_version();
    // A round of the previous model is over at the root.
    job_->round.reset();
    ++task_epoch_;
    task_cv_.SignalAll();
  }
  Job& job = *job_;
  if (!assignment.has_round()) {
    if (job.round.has_value()) {
      FEDGE_LOG(WARNING) << "Coordinator: relay " << options_.relay_id << ": round "
                         << job.round->number() << " no longer waits for this relay";
      job.round.reset();
    }
    return absl::OkStatus();
  }
  const v1::RelayRound& r = assignment.round();
  if (job.round.has_value() && job.round->key() == r.key()) {
    // The root gave up on the devices it no longer lists (silent at this relay).
    absl::flat_hash_set<std::string> listed;
    for (const v1::RelayClient& c : r.clients()) listed.insert(c.client_id());
    job.round->DropSilent([&](const std::string& id) { return listed.contains(id); });
    return absl::OkStatus();
  }
  if (relay_closed_ == r.key()) return absl::OkStatus();  // sent already
  return OpenRelayRound(r, now);
}

absl::Status Coordinator::OpenRelayRound(const v1::RelayRound& r, absl::Time now) {
  Job& job = *job_;
  if (r.number() != job.completed_rounds + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: relay ", options_.relay_id, " follows model version ",
        job.completed_rounds, " but the root's round is ", r.number()));
  }
  OpenRound::Setup round;
  round.job_id = job.id;
  round.number = r.number();
  round.attempt = r.attempt();
  round.key = r.key();
  round.max_examples_per_client = options_.max_examples_per_client;
  round.phase_timeout = SecurePhaseTimeout();
  round.dp.clip_norm = r.clip_norm();
  round.opened = now;
  if (r.deadline_in_ms() > 0) {
    const absl::Duration left = absl::Milliseconds(r.deadline_in_ms());
    round.deadline = now + left - std::min(options_.relay_margin, left / 10);
  }
  round.models = std::make_unique<RoundPlanner::RoundModels>(
      std::make_shared<v1::ModelProto>(ProtoFromWeights(job.config.model_spec(), job.weights)),
      job.planner->tiers().size());
  for (const v1::RelayClient& c : r.clients()) {
    FEDGE_ASSIGN_OR_RETURN(ClientPlan plan, job.planner->PlanClient(*round.models, round.number,
                                                                    c.client_id(), c.profile()));
    round.sampled.push_back(c.client_id());
    round.plans.push_back(std::move(plan));
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<aggregation::Aggregator> aggregator,
                         job.strategy->CreateAggregator(aggregation::SpecsOf(job.weights)));
  round.intake = std::make_unique<RoundIntake>(std::move(aggregator), IntakeOptions(job));
  if (job.config.privacy().secure_aggregation_threshold() > 0) {
    // The group's own session: its devices' noise shares sized to the group's threshold,
    // so that the group's sum, which this relay sees, carries the job's noise.
    const int t = r.secure_threshold();
    if (t < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Coordinator: relay ", options_.relay_id, ": the root gave a secure round no threshold"));
    }
    v1::PrivacyConfig privacy = job.config.privacy();
    privacy.set_secure_aggregation_threshold(t);
    FEDGE_ASSIGN_OR_RETURN(const SecureRound::Encoding e, job.privacy->SecureEncoding(round.dp, t));
    FEDGE_ASSIGN_OR_RETURN(round.secure,
                           SecureRound::Create(privacy, round.sampled,
                                               job.num_parameters + (e.clipped_count ? 1 : 0), e));
    round.secure->set_phase_deadline(round.deadline);
  }
  FEDGE_LOG(INFO) << "Coordinator: relay " << options_.relay_id << ": job " << job.id
                  << " round " << round.number << " open for " << round.sampled.size()
                  << " of its devices";
  job.round.emplace(*job.planner, std::move(round));
  ++task_epoch_;
  task_cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status Coordinator::RelayTick(absl::Time now) {
  if (!job_->round.has_value()) return absl::OkStatus();
  OpenRound& round = *job_->round;
  // A device this relay knows that went silent is dropped; one it does not know yet (the
  // relay restarted and the device has not registered again) is the root's to give up on.
  round.DropSilent([&](const std::string& id) {
    return registry_.Live(id, now) || !registry_.Known(id);
  });
  if (round.secure() != nullptr) {
    // The group's protocol, as a root runs it (the unmasking without the lock).
    FEDGE_RETURN_IF_ERROR(AdvanceSecureRound(now));
    if (job_ == nullptr || !job_->round.has_value()) return absl::OkStatus();
  }
  OpenRound& open = *job_->round;
  if (!open.settled() && now < open.deadline()) return absl::OkStatus();
  return CloseRelayRound(open);
}

absl::Status Coordinator::CloseRelayRound(OpenRound& round) {
  // Sealed under the lock (every device call about the round is refused from here), then
  // closed without it, as a root completes a round: the update bound's medians, the
  // direction check and the serialization do not hold up other calls. Follow and Tick wait
  // for it (job.completing).
  round.Seal();
  Job& job = *job_;
  job.completing = true;
  mu_.Unlock();
  const OpenRound::Closing closing = round.Close();
  absl::StatusOr<std::string> sums = round.intake().SerializeSums();
  mu_.Lock();
  job.completing = false;
  relay_closed_ = round.key();
  if (!sums.ok()) {
    // Not expected: the relay's devices are lost for this round; the root drops them.
    FEDGE_LOG(ERROR) << "Coordinator: relay " << options_.relay_id << ": round "
                     << round.number() << "'s sums: " << sums.status().message();
    job_->round.reset();
    return sums.status();
  }
  Partial p;
  p.header.set_relay_id(options_.relay_id);
  p.header.set_job_id(job_->id);
  p.header.set_round(round.number());
  p.header.set_attempt(round.attempt());
  p.header.set_round_key(round.key());
  for (const auto& [metrics, tier] : closing.clients) *p.header.add_clients() = metrics;
  p.aggregate = *std::move(sums);
  p.header.set_total_bytes(static_cast<int64_t>(p.aggregate.size()));
  FEDGE_LOG(INFO) << "Coordinator: relay " << options_.relay_id << ": job " << job_->id
                  << " round " << round.number() << " closed: " << closing.participants.size()
                  << " of " << closing.clients.size() << " devices' updates";
  partial_ = std::move(p);
  job_->round.reset();
  ++task_epoch_;
  task_cv_.SignalAll();
  return absl::OkStatus();
}

std::optional<Coordinator::Partial> Coordinator::TakePartial() {
  absl::MutexLock lock(&mu_);
  std::optional<Partial> p = std::move(partial_);
  partial_.reset();
  return p;
}

}  // namespace fedge::server
