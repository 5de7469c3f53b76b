#include "server/coordinator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/job_config.h"
#include "server/model_weights.h"

namespace fedge::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// The rooms' options, in their fields' order.
EnrollmentOptions EnrollmentOptionsOf(const CoordinatorOptions& o, base::Clock& clock) {
  return {o.enrollment_token, &clock, o.registrations_per_token_per_second,
          o.registrations_per_token_burst};
}
RegistryOptions RegistryOptionsOf(const CoordinatorOptions& o, base::Clock& clock,
                                  EnrollmentTokens* enrollment) {
  return {&clock, enrollment, o.liveness_timeout, o.max_examples_per_client,
          o.accept_requested_client_ids};
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options, Store* store)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : base::RealClock()),
      store_(store),
      ledger_(store),
      enrollment_(EnrollmentOptionsOf(options_, clock_), store),
      registry_(RegistryOptionsOf(options_, clock_, &enrollment_), store) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options,
                                                                 Store* store) {
  if (options.enrollment_token.empty() && options.relay_id.empty()) {
    return absl::InvalidArgumentError("Coordinator: an enrollment token is required");
  }
  if (options.liveness_timeout <= absl::ZeroDuration() || options.aggregation_threads < 1 ||
      options.aggregation_batch < 1 || options.aggregation_batch_bytes < 0) {
    return absl::InvalidArgumentError(
        "Coordinator: liveness_timeout must be > 0, aggregation_threads and "
        "aggregation_batch ≥ 1, aggregation_batch_bytes ≥ 0");
  }
  if (!options.relay_id.empty()) {
    FEDGE_RETURN_IF_ERROR(CheckRelayId(options.relay_id));
    if (store != nullptr || !options.upstream_register) {
      return absl::InvalidArgumentError(
          "Coordinator: a relay keeps no store and needs upstream_register (its root)");
    }
  }
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), store));
  if (store != nullptr) {
    absl::MutexLock lock(&c->mu_);
    FEDGE_RETURN_IF_ERROR(c->Resume());
  }
  return c;
}

absl::Status Coordinator::Resume() {
  // The registry: devices count as live from now (they reconnect by themselves).
  FEDGE_RETURN_IF_ERROR(registry_.Restore());
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->ListJobs());
  next_job_number_ = static_cast<int64_t>(jobs.size()) + 1;
  for (const v1::JobStatus& status : jobs) {  // most recent first
    if (status.state() != v1::JOB_STATE_RUNNING) continue;
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Job> job, MakeJob(status.job_id(), status.config()));
    absl::StatusOr<Checkpoint> checkpoint = store_->LatestCheckpoint(status.job_id());
    if (checkpoint.ok()) {
      job->weights = WeightsFromProto(checkpoint->model);
      job->completed_rounds = checkpoint->round;
      if (!checkpoint->strategy_state.empty()) {
        FEDGE_RETURN_IF_ERROR(job->strategy->RestoreState(checkpoint->strategy_state));
      }
    } else if (!absl::IsNotFound(checkpoint.status())) {
      return checkpoint.status();
    }
    job->latest_metrics = status.latest_metrics();
    if (job->privacy->accounts()) {
      // ε and the adaptive clip norm continue from the completed rounds.
      FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> rounds, store_->ListRounds(status.job_id(), 1));
      FEDGE_RETURN_IF_ERROR(job->privacy->Restore(rounds, job->completed_rounds));
    }
    FEDGE_ASSIGN_OR_RETURN(int abandoned, store_->AbandonOpenRounds(status.job_id()));
    FEDGE_LOG(INFO) << "Coordinator: resuming job " << status.job_id() << " after round "
                    << job->completed_rounds << " (" << abandoned << " round(s) abandoned)";
    job_ = std::move(job);
    break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Coordinator::Job>> Coordinator::MakeJob(
    const std::string& id, const v1::JobConfig& config) {
  auto job = std::make_unique<Job>();
  job->id = id;
  job->config = config;
  FEDGE_ASSIGN_OR_RETURN(job->privacy,
                         RoundPrivacy::Create(config.privacy(), id, options_.dp_noise_seed));
  FEDGE_ASSIGN_OR_RETURN(JobModel model, MakeJobModel(config, options_.data_root));
  if (config.has_language_model()) {
    *job->config.mutable_model_spec() = model.model_spec;
    job->config.mutable_language_model()->set_base_sha256(model.base_sha256);
    job->base_file = model.base_file;
    job->base_int4_form = model.base_int4_form;
    job->config.mutable_language_model()->set_base_int4_sha256(model.base_int4_sha256);
  }
  job->strategy = std::move(model.strategy);
  job->weights = std::move(model.weights);
  job->num_parameters = model.num_parameters;
  if (options_.on_job_model) options_.on_job_model(4 * job->num_parameters);
  FEDGE_ASSIGN_OR_RETURN(job->planner, RoundPlanner::Create(job->config));
  job->relay_unsupported = RelayUnsupported(job->config, *job->strategy);
  if (config.strategy().has_fed_cg() || is_relay()) {
    // FedCG: no central evaluation (the extractors stay on the devices); a relay: its root
    // evaluates.
    job->report = RoundReport::WithoutEvaluation(config, *job->planner);
  } else if (config.has_language_model()) {
    FEDGE_ASSIGN_OR_RETURN(job->report,
                           RoundReport::ForLanguageModel(job->config, *job->planner,
                                                         model.language_model,
                                                         options_.data_root,
                                                         options_.evaluation_text));
  } else {
    FEDGE_ASSIGN_OR_RETURN(job->report,
                           RoundReport::Create(config, *job->planner, options_.evaluation_data,
                                               options_.data_root));
  }
  return job;
}

// ---------------------------------------------------------------------------------------
// Devices

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(const v1::RegisterRequest& request) {
  if (!is_relay()) return registry_.Register(request);
  FEDGE_ASSIGN_OR_RETURN(v1::RegisterResponse granted, options_.upstream_register(request));
  registry_.Adopt(granted, request.profile());
  return granted;
}

absl::StatusOr<std::optional<TaskAssignment>> Coordinator::FetchTask(
    const std::string& client_id, const std::string& session_token) {
  FEDGE_RETURN_IF_ERROR(
      registry_.Authenticate(client_id, session_token, ClientRegistry::Seen::kFetching));
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || !job_->round.has_value()) return std::nullopt;
  return job_->round->Task(client_id);
}

absl::StatusOr<std::optional<TaskAssignment>> Coordinator::AwaitTask(
    const std::string& client_id, const std::string& session_token, absl::Duration wait,
    const std::function<bool()>& stop) {
  // Real time: a long-poll belongs to a transport, not to the coordinator's (maybe virtual)
  // clock.
  const absl::Time until = absl::Now() + wait;
  for (;;) {
    int64_t seen;
    {
      absl::MutexLock lock(&mu_);
      seen = task_epoch_;
    }
    FEDGE_ASSIGN_OR_RETURN(std::optional<TaskAssignment> task, FetchTask(client_id, session_token));
    if (task.has_value()) return task;
    absl::MutexLock lock(&mu_);
    while (task_epoch_ == seen) {
      const absl::Time now = absl::Now();
      if (now >= until || (stop && stop())) return std::optional<TaskAssignment>();
      task_cv_.WaitWithDeadline(&mu_, std::min(until, now + absl::Milliseconds(250)));
    }
  }
}

absl::Status Coordinator::CheckUpdateHeader(const v1::UpdateHeader& header) {
  FEDGE_RETURN_IF_ERROR(registry_.Authenticate(header.client_id(), header.session_token()));
  if (job_ == nullptr || job_->id != header.job_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: update for job '", header.job_id(), "', which is not running"));
  }
  if (!job_->round.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: update for round ", header.round(), ", but no round is open"));
  }
  return job_->round->CheckHeader(header);
}

absl::Status Coordinator::RejectUpdate(const v1::UpdateHeader& header,
                                       const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  return job_->round->Reject(header.client_id(), reason);
}

absl::StatusOr<ExpectedUpdate> Coordinator::ExpectedUpdateOf(const v1::UpdateHeader& header) {
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  const OpenRound& round = *job_->round;
  FEDGE_RETURN_IF_ERROR(round.CheckInTheClear(header.client_id()));
  ExpectedUpdate e = round.Expected(header.client_id());
  e.encoding = job_->config.transfer().update_encoding();
  if (e.encoding == v1::TENSOR_ENCODING_UNSPECIFIED) e.encoding = v1::TENSOR_ENCODING_FLOAT32;
  e.strategy = job_->strategy.get();
  return e;
}

absl::StatusOr<int64_t> Coordinator::BeginUpload(const v1::UpdateHeader& header) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(const ExpectedUpdate expected, ExpectedUpdateOf(header));
  if (absl::Status s = CheckUpdateAnnouncement(header, expected); !s.ok()) {
    return job_->round->Reject(header.client_id(), std::move(s));
  }
  return expected.payload_bytes();
}

absl::Status Coordinator::SubmitPayload(const v1::UpdateHeader& header,
                                        absl::string_view payload) {
  ExpectedUpdate expected;
  {
    absl::MutexLock lock(&mu_);
    FEDGE_ASSIGN_OR_RETURN(expected, ExpectedUpdateOf(header));
    if (absl::Status s = CheckUpdateAnnouncement(header, expected); !s.ok()) {
      return job_->round->Reject(header.client_id(), std::move(s));
    }
  }
  // Decoded without the lock: other clients' calls go on meanwhile.
  absl::StatusOr<aggregation::Update> update = DecodeUpdatePayload(header, payload, expected);
  if (!update.ok()) return RejectUpdate(header, update.status());
  return SubmitUpdate(header, *std::move(update), static_cast<int64_t>(payload.size()));
}

absl::Status Coordinator::SubmitUpdate(const v1::UpdateHeader& header,
                                       aggregation::Update update, int64_t payload_bytes) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  const std::string& id = header.client_id();
  OpenRound& round = *job_->round;
  FEDGE_RETURN_IF_ERROR(round.CheckInTheClear(id));
  // Measured here, never taken from the device's report.
  const double norm = aggregation::L2Norm(update);
  absl::Status status = job_->strategy->CheckUpdate(update, job_->weights);
  if (status.ok()) {
    status = CheckUpdateClaims(header, update, registry_.ProfileOf(id).num_examples(),
                               options_.max_examples_per_client);
  }
  if (status.ok()) status = job_->privacy->CheckClipped(norm, id, round.dp());
  if (status.ok()) status = round.ToFullShapes(id, update);
  // Central DP: every participant counts once, whatever its example count.
  if (status.ok()) update.weight = job_->privacy->Weight(update.weight);
  // A bad update drops this client from the round, never the round.
  if (!status.ok()) return round.Reject(id, std::move(status));
  return round.Accept(header, std::move(update), payload_bytes, norm);
}

absl::Status Coordinator::DeclineTask(const v1::UpdateHeader& header) {
  const std::string& reason = header.refusal();
  if (reason.empty() || reason.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: a refusal needs a reason of 1-256 bytes, got ", reason.size()));
  }
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  registry_.MarkDeclined(header.client_id(), reason);
  job_->round->Decline(header.client_id(), reason, header.metrics().peak_rss_bytes());
  return absl::OkStatus();
}

absl::Status Coordinator::Leave(const std::string& client_id, const std::string& session_token) {
  FEDGE_RETURN_IF_ERROR(registry_.Leave(client_id, session_token));
  DropFromRound(client_id);
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const std::string>> Coordinator::BaseModel(
    const std::string& client_id, const std::string& session_token, const std::string& sha256) {
  FEDGE_RETURN_IF_ERROR(
      registry_.Authenticate(client_id, session_token, ClientRegistry::Seen::kFetching));
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr && job_->base_file != nullptr && !sha256.empty()) {
    const v1::LanguageModelJob& lm = job_->config.language_model();
    if (lm.base_sha256() == sha256) return job_->base_file;
    if (job_->base_int4_form != nullptr && lm.base_int4_sha256() == sha256) {
      return job_->base_int4_form;
    }
  }
  return absl::NotFoundError(absl::StrCat("Coordinator: no running job's base has SHA-256 ",
                                          base::Printable(sha256.substr(0, 64))));
}

absl::StatusOr<v1::ClientRecord> Coordinator::RevokeDevice(const std::string& client_id) {
  FEDGE_ASSIGN_OR_RETURN(v1::ClientRecord record, registry_.Revoke(client_id));
  DropFromRound(client_id);
  return record;
}

void Coordinator::DropFromRound(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr && job_->round.has_value()) job_->round->Drop(client_id);
}

absl::StatusOr<v1::SecAggStepResponse> Coordinator::SecureAggregationStep(
    const v1::SecAggStepRequest& request) {
  absl::MutexLock lock(&mu_);
  v1::UpdateHeader header;
  header.set_client_id(request.client_id());
  header.set_session_token(request.session_token());
  header.set_job_id(request.job_id());
  header.set_round(request.round());
  header.set_task_id(request.task_id());
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  return job_->round->SecureStep(request, clock_, job_->weights);
}

absl::Status Coordinator::AdvanceSecureRound(absl::Time now) {
  OpenRound& round = *job_->round;
  absl::StatusOr<bool> finished = round.AdvanceSecure(now);
  if (finished.ok() && !*finished && round.UnmaskDue(now)) {
    // Unmasking reconstructs every dropout's mask: costly at scale. It runs without the
    // lock; meanwhile the round's SecureRound is left alone (round.unmasking()) and other
    // calls are answered.
    OpenRound::Unmasking unmasking = round.BeginUnmasking();
    mu_.Unlock();
    round.Unmask(now, unmasking);
    mu_.Lock();
    task_cv_.SignalAll();
    finished = round.EndUnmasking(std::move(unmasking));
  }
  return round.SettleSecure(finished, job_->weights);
}

// ---------------------------------------------------------------------------------------
// Operators

absl::StatusOr<std::string> Coordinator::StartJob(const v1::JobConfig& config) {
  if (is_relay()) {
    return absl::FailedPreconditionError(
        "Coordinator: this is a relay: jobs start at its root coordinator");
  }
  FEDGE_ASSIGN_OR_RETURN(v1::JobConfig validated, ValidateJobConfig(config));
  if (validated.privacy().secure_aggregation_threshold() > 0) {
    if (validated.sub_models().tiers_size() > 0) {
      return absl::UnimplementedError(
          "Coordinator: secure aggregation with sub_models tiers is not supported (the masked "
          "vectors of one session must have one length)");
    }
  }
  if (validated.privacy().noise_multiplier() > 0 && validated.sub_models().tiers_size() > 0) {
    return absl::UnimplementedError(
        "Coordinator: differential privacy with sub_models tiers is not supported yet (a "
        "coordinate's sensitivity depends on who held it)");
  }
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: job ", job_->id, " is running; stop it first"));
  }
  const std::string id =
      absl::StrCat(validated.name(), "-", UnixMs(clock_.Now()), "-", next_job_number_++);
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Job> job, MakeJob(id, validated));
  // The job's config as MakeJob completed it (a language model's spec, from its base file).
  FEDGE_RETURN_IF_ERROR(ledger_.CreateJob(id, job->config));
  registry_.ClearJobDeclines();
  job_ = std::move(job);
  ++task_epoch_;
  task_cv_.SignalAll();
  FEDGE_LOG(INFO) << "Coordinator: started job " << id << " (" << validated.rounds()
                  << " rounds, strategy " << job_->strategy->name() << ")";
  return id;
}

absl::Status Coordinator::StopJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  // A round being completed outside the lock finishes first.
  auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return job_ == nullptr || !job_->settling();
  };
  mu_.Await(absl::Condition(&settled));
  if (job_ == nullptr || job_->id != job_id) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no running job '", job_id, "'"));
  }
  FEDGE_RETURN_IF_ERROR(EndJob(v1::JOB_STATE_STOPPED, "stopped by an operator"));
  return absl::OkStatus();
}

absl::StatusOr<v1::JobStatus> Coordinator::StatusOf(const std::string& job_id) {
  const bool running = job_ != nullptr && job_->id == job_id;
  v1::JobStatus s;
  if (running && !ledger_.durable()) {
    s.set_job_id(job_id);
    *s.mutable_config() = job_->config;
    s.set_state(v1::JOB_STATE_RUNNING);
    s.set_completed_rounds(job_->completed_rounds);
    *s.mutable_latest_metrics() = job_->latest_metrics;
  } else {
    FEDGE_ASSIGN_OR_RETURN(s, ledger_.Job(job_id));
  }
  if (running && job_->round.has_value()) s.set_current_round(job_->round->number());
  return s;
}

absl::Status Coordinator::EndJob(v1::JobState state, const std::string& message) {
  Job& job = *job_;
  std::optional<int64_t> open_round;
  if (job.round.has_value()) open_round = job.round->number();
  FEDGE_RETURN_IF_ERROR(ledger_.EndJob(
      job.id, state, message, open_round, clock_.Now(), [&] { return StatusOf(job.id); },
      [&] { return ProtoFromWeights(job.config.model_spec(), job.weights); }));
  FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " "
                  << (state == v1::JOB_STATE_STOPPED ? "stopped" : "finished")
                  << (message.empty() ? "" : ": ") << message;
  job_.reset();
  ++task_epoch_;
  task_cv_.SignalAll();
  return absl::OkStatus();
}

void Coordinator::AwaitPublished() {
  auto published = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return job_ == nullptr || !job_->committing;
  };
  mu_.Await(absl::Condition(&published));
}

absl::StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  AwaitPublished();
  return StatusOf(job_id);
}

absl::StatusOr<std::vector<v1::RoundRecord>> Coordinator::ListRounds(const std::string& job_id,
                                                                     int64_t from_round) {
  absl::MutexLock lock(&mu_);
  AwaitPublished();
  return ledger_.Rounds(job_id, from_round);
}

absl::StatusOr<v1::ModelProto> Coordinator::ExportModel(const std::string& job_id) {
  // The model in memory: the previous one until the round is published, then the new one,
  // never ahead of GetJob and ListRounds (they wait for the publish).
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr && job_->id == job_id) {
    return ProtoFromWeights(job_->config.model_spec(), job_->weights);
  }
  return ledger_.LatestModel(job_id);
}

std::optional<std::string> Coordinator::running_job() const {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr) return std::nullopt;
  return job_->id;
}

// ---------------------------------------------------------------------------------------
// Rounds

absl::Status Coordinator::Tick() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  if (job_ == nullptr || job_->settling()) return absl::OkStatus();
  if (is_relay()) return RelayTick(now);
  if (!job_->round.has_value()) return MaybeOpenRound(now);
  OpenRound& round = *job_->round;
  // Sampled clients that went silent are dropped, and so are those that moved to another
  // relay (or off theirs) since the round opened: their task is where they no longer are.
  round.DropSilent([&](const std::string& id) {
    return registry_.Live(id, now) && registry_.RelayOf(id) == round.TaskRelay(id);
  });
  if (round.secure() != nullptr) {
    FEDGE_RETURN_IF_ERROR(AdvanceSecureRound(now));
    if (job_->round.has_value() && job_->round->settled()) return CloseRound(now);
    return absl::OkStatus();
  }
  if (round.settled() || now >= round.deadline()) return CloseRound(now);
  return absl::OkStatus();
}

absl::Status Coordinator::MaybeOpenRound(absl::Time now) {
  Job& job = *job_;
  const v1::JobConfig& cfg = job.config;
  // The sample depends only on (seed, round, set): the live ids come sorted.
  // Relays' devices only when relays can serve the job.
  std::vector<std::string> live = registry_.LiveIds(now, job.relay_unsupported.empty());
  const bool secure = cfg.privacy().secure_aggregation_threshold() > 0;
  if (secure && job.relay_unsupported.empty()) {
    // Secure aggregation runs in the relays' groups: when relays serve devices, the root's
    // own are not sampled (a round's groups are all relays').
    std::vector<std::string> relayed;
    for (const std::string& id : live) {
      if (!registry_.RelayOf(id).empty()) relayed.push_back(id);
    }
    if (!relayed.empty()) live = std::move(relayed);
  }
  const v1::ClientSelection& sel = cfg.selection();
  const int want = sel.has_fraction()
                       ? static_cast<int>(std::ceil(sel.fraction() * static_cast<double>(live.size())))
                       : sel.clients_per_round();
  const int quorum = cfg.round_policy().quorum();
  const int needed = std::max({sel.min_registered(), quorum, cfg.privacy().secure_aggregation_threshold(), 1});
  if (static_cast<int>(live.size()) < needed) return absl::OkStatus();
  OpenRound::Setup round;
  round.job_id = job.id;
  round.number = job.completed_rounds + 1;
  round.attempt = job.failed_attempts;
  round.key = std::stoull(GenerateSessionToken().substr(0, 16), nullptr, 16);
  round.max_examples_per_client = options_.max_examples_per_client;
  round.phase_timeout = SecurePhaseTimeout();
  const v1::PrivacyConfig& privacy = cfg.privacy();
  const size_t sampled = std::min(live.size(), static_cast<size_t>(std::max(want, quorum)));
  FEDGE_ASSIGN_OR_RETURN(RoundPrivacy::Opening dp,
                         job.privacy->Open(round.number, sampled, live.size(), job.completed_rounds));
  if (dp.over_budget.has_value()) return EndJob(v1::JOB_STATE_FINISHED, *dp.over_budget);
  round.dp = dp.round;
  base::Rng rng(sel.seed(), static_cast<uint64_t>(round.number) * 1000 + round.attempt);
  rng.Shuffle(live);
  live.resize(sampled);
  round.sampled = std::move(live);
  round.opened = now;
  const double deadline = cfg.round_policy().deadline_seconds();
  if (deadline > 0) round.deadline = now + absl::Seconds(deadline);
  round.models = std::make_unique<RoundPlanner::RoundModels>(
      std::make_shared<v1::ModelProto>(ProtoFromWeights(cfg.model_spec(), job.weights)),
      job.planner->tiers().size());
  for (const std::string& id : round.sampled) {
    FEDGE_ASSIGN_OR_RETURN(ClientPlan plan, job.planner->PlanClient(*round.models, round.number,
                                                                    id, registry_.ProfileOf(id)));
    if (plan.tier >= 0) registry_.SetTier(id, job.planner->tiers()[plan.tier].name);
    round.plans.push_back(std::move(plan));
    round.relays.push_back(registry_.RelayOf(id));
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<aggregation::Aggregator> aggregator,
                         job.strategy->CreateAggregator(aggregation::SpecsOf(job.weights)));
  round.intake = std::make_unique<RoundIntake>(std::move(aggregator), IntakeOptions(job));
  const bool groups = std::any_of(round.relays.begin(), round.relays.end(),
                                  [](const std::string& r) { return !r.empty(); });
  if (privacy.secure_aggregation_threshold() > 0 && !groups) {
    FEDGE_ASSIGN_OR_RETURN(const SecureRound::Encoding e,
                           job.privacy->SecureEncoding(round.dp, privacy.secure_aggregation_threshold()));
    FEDGE_ASSIGN_OR_RETURN(
        round.secure,
        SecureRound::Create(privacy, round.sampled,
                            job.num_parameters + (e.clipped_count ? 1 : 0), e));
    round.secure->set_phase_deadline(round.deadline);
  }
  FEDGE_RETURN_IF_ERROR(ledger_.OpenRound(job.id, round.number, now));
  FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " round " << round.number << " open, "
                  << round.sampled.size() << " clients sampled of " << registry_.size();
  job.round.emplace(*job.planner, std::move(round));
  ++task_epoch_;
  task_cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status Coordinator::CloseRound(absl::Time now) {
  Job& job = *job_;
  OpenRound& round = *job.round;
  const int quorum = job.config.round_policy().quorum();
  if (static_cast<int>(round.accepted()) >= std::max(quorum, 1)) return CompleteRound(now);
  const std::string why = absl::StrCat(round.accepted(), " updates, quorum ", quorum);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << round.number()
                     << " failed: " << why;
  FEDGE_RETURN_IF_ERROR(ledger_.FailRound(job.id, round.number(), now));
  return RoundFailed(why);
}

absl::Status Coordinator::RoundFailed(const std::string& why) {
  Job& job = *job_;
  const int64_t number = job.round->number();
  job.round.reset();
  ++job.failed_attempts;
  const int limit = job.config.round_policy().max_failed_attempts();
  if (limit > 0 && job.failed_attempts >= limit) {
    // Retrying forever would hide a job that cannot go on (too few devices, an aggregate
    // that is never finite): it ends with the reason, for the operator to see.
    return EndJob(v1::JOB_STATE_FAILED,
                  absl::StrCat("round ", number, " failed ", job.failed_attempts,
                               " attempts in a row (round_policy.max_failed_attempts); last: ",
                               why));
  }
  FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << number << ": attempt "
                     << job.failed_attempts << " failed; retrying";
  return absl::OkStatus();
}

absl::Status Coordinator::CompleteRound(absl::Time now) {
  Job& job = *job_;
  OpenRound& round = *job.round;
  auto t0 = std::chrono::steady_clock::now();
  // Sealed under the lock: from here every device call is refused by the round before it
  // touches its state, so the rest (the update bound's close with its medians and
  // direction check, the round's counts, aggregation, noise, the server step, evaluation,
  // the commit) runs without the lock. Tick and StopJob wait for it (job.completing);
  // readers see the previous model.
  round.Seal();
  job.completing = true;
  aggregation::ModelWeights next;
  mu_.Unlock();
  const OpenRound::Closing closing = round.Close();
  const absl::Status done = AggregateEvaluateCommit(job, round, now, t0, closing, next);
  mu_.Lock();
  job.completing = false;
  job.committing = false;
  task_cv_.SignalAll();
  if (!done.ok()) {
    // The round cannot complete (its aggregate is spent): it fails and is retried.
    FEDGE_LOG(ERROR) << "Coordinator: job " << job.id << " round " << round.number()
                     << " could not complete: " << done.message();
    ledger_.FailRound(job.id, round.number(), clock_.Now()).IgnoreError();
    FEDGE_RETURN_IF_ERROR(RoundFailed(std::string(done.message())));
    return done;
  }
  RoundReport::LogDone(job.id, round.metrics());
  job.weights = std::move(next);
  job.completed_rounds = round.number();
  job.latest_metrics = round.metrics();
  job.failed_attempts = 0;
  job.round.reset();
  if (job.completed_rounds >= job.config.rounds()) return EndJob(v1::JOB_STATE_FINISHED, "");
  return absl::OkStatus();
}

absl::Status Coordinator::AggregateEvaluateCommit(Job& job, OpenRound& round, absl::Time now,
                                                  std::chrono::steady_clock::time_point t0,
                                                  const OpenRound::Closing& closing,
                                                  aggregation::ModelWeights& next) {
  v1::RoundMetrics& m = round.metrics();
  const std::vector<std::string>& participants = closing.participants;
  FEDGE_ASSIGN_OR_RETURN(aggregation::ModelDelta delta, std::move(round.intake()).Report());
  // Under secure aggregation the devices noised their updates, whether the root or its
  // relays ran the protocol.
  const bool secure = job.config.privacy().secure_aggregation_threshold() > 0;
  FEDGE_RETURN_IF_ERROR(job.privacy->Close(round.dp(), secure,
                                           static_cast<int64_t>(participants.size()), delta, &m));
  next = job.weights;
  FEDGE_RETURN_IF_ERROR(job.strategy->Apply(delta, &next));
  if (job.strategy->KeepsClientUpdates()) {
    std::vector<const aggregation::Update*> kept;
    for (const aggregation::Update& u : round.intake().kept()) kept.push_back(&u);
    FEDGE_RETURN_IF_ERROR(job.strategy->ServerTrainingStep(kept, &next));
  }
  // A central model with a NaN or an infinity is never committed nor sent to devices.
  FEDGE_RETURN_IF_ERROR(CheckFinite(next));
  m.set_aggregation_seconds(Seconds(t0));
  job.strategy->ReportRound(round.Devices(), &m);
  const v1::ModelProto model = ProtoFromWeights(job.config.model_spec(), next);
  FEDGE_RETURN_IF_ERROR(job.report->Evaluate(model, round.number(), &m));
  for (const auto& [client, tier] : closing.clients) RoundReport::AddClient(client, tier, &m);
  if (round.secure() != nullptr) *m.mutable_secure_aggregation() = round.secure()->metrics();
  m.set_closed_unix_ms(UnixMs(now));
  m.set_round_seconds(absl::ToDoubleSeconds(now - round.opened()));
  {
    // From here readers wait for the publish (AwaitPublished): the commit and the model in
    // memory become visible together.
    absl::MutexLock lock(&mu_);
    job.committing = true;
  }
  FEDGE_RETURN_IF_ERROR(ledger_.CommitRound(job.id, m, model, job.config.keep_checkpoints(),
                                            participants,
                                            [&] { return job.strategy->SerializeState(); }));
  registry_.CountParticipation(participants);
  return absl::OkStatus();
}

}  // namespace fedge::server
