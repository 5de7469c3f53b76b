#include "server/coordinator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "model/payload.h"
#include "model/trainer.h"
#include "server/job_config.h"
#include "server/model_weights.h"
#include "server/session_token.h"

namespace fedge::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

namespace {

RegistryOptions RegistryOptionsOf(const CoordinatorOptions& o, base::Clock& clock) {
  RegistryOptions r;
  r.clock = &clock;
  r.enrollment_token = o.enrollment_token;
  r.liveness_timeout = o.liveness_timeout;
  r.max_examples_per_client = o.max_examples_per_client;
  r.accept_requested_client_ids = o.accept_requested_client_ids;
  return r;
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options, Store* store)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : base::RealClock()),
      store_(store),
      ledger_(store),
      registry_(RegistryOptionsOf(options_, clock_), store) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options,
                                                                 Store* store) {
  if (options.enrollment_token.empty()) {
    return absl::InvalidArgumentError("Coordinator: an enrollment token is required");
  }
  if (options.liveness_timeout <= absl::ZeroDuration() || options.aggregation_threads < 1 ||
      options.aggregation_batch < 1 || options.aggregation_batch_bytes < 0) {
    return absl::InvalidArgumentError(
        "Coordinator: liveness_timeout must be > 0, aggregation_threads and "
        "aggregation_batch ≥ 1, aggregation_batch_bytes ≥ 0");
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
  FEDGE_ASSIGN_OR_RETURN(JobModel model, MakeJobModel(config));
  job->strategy = std::move(model.strategy);
  job->weights = std::move(model.weights);
  job->num_parameters = model.num_parameters;
  FEDGE_ASSIGN_OR_RETURN(job->planner, RoundPlanner::Create(config));
  if (config.strategy().has_fed_cg()) {
    // FedCG: no central evaluation (the extractors stay on the devices).
    job->report = RoundReport::WithoutEvaluation(config, *job->planner);
  } else {
    FEDGE_ASSIGN_OR_RETURN(job->report,
                           RoundReport::Create(config, *job->planner, options_.evaluation_data));
  }
  return job;
}

// ---------------------------------------------------------------------------------------
// Devices

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(const v1::RegisterRequest& request) {
  return registry_.Register(request);
}

void Coordinator::ReserveClients(size_t clients) { registry_.Reserve(clients); }

absl::StatusOr<std::optional<TaskAssignment>> Coordinator::FetchTask(
    const std::string& client_id, const std::string& session_token) {
  FEDGE_RETURN_IF_ERROR(
      registry_.Authenticate(client_id, session_token, ClientRegistry::Seen::kFetching));
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || !job_->round.has_value()) return std::nullopt;
  Round& round = *job_->round;
  if (!round.waiting.contains(client_id)) return std::nullopt;
  if (round.secure != nullptr && (job_->unmasking || round.secure->Joined(client_id))) {
    return std::nullopt;
  }
  ClientTask& ct = round.tasks[client_id];
  RoundPlanner::TaskContext context;
  context.job_id = job_->id;
  context.client_id = client_id;
  context.round = round.number;
  context.attempt = round.attempt;
  context.deadline = round.deadline;
  context.clip_norm = round.dp.clip_norm;
  context.secure = round.secure.get();
  TaskAssignment task = job_->planner->Assign(ct, context);
  if (!ct.fetched) {
    ct.fetched = true;
    ct.bytes_down = RoundPlanner::EncodedBytes(*task.model, task.model_encoding);
    if (task.teacher != nullptr) {
      ct.bytes_down += RoundPlanner::EncodedBytes(*task.teacher, task.teacher_encoding);
    }
    ct.metrics.set_bytes_down(ct.bytes_down);
    round.metrics.set_bytes_down(round.metrics.bytes_down() + ct.bytes_down);
  }
  return std::optional<TaskAssignment>(std::move(task));
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
  const std::string& id = header.client_id();
  FEDGE_RETURN_IF_ERROR(registry_.Authenticate(id, header.session_token()));
  if (job_ == nullptr || job_->id != header.job_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: update for job '", header.job_id(), "', which is not running"));
  }
  if (!job_->round.has_value() || job_->round->number != header.round()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: update for round ", header.round(), ", but ",
        job_->round.has_value() ? absl::StrCat("round ", job_->round->number, " is open")
                                : std::string("no round is open")));
  }
  Round& round = *job_->round;
  if (round.accepted.contains(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("Coordinator: client ", id, " already sent its update for round ", round.number));
  }
  if (!round.waiting.contains(id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: client ", id, " is not (or no longer) part of round ", round.number));
  }
  const std::string expected_task =
      absl::StrCat(job_->id, "/", round.number, "/", round.attempt, "/", id);
  if (header.task_id() != expected_task) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: update names task '", header.task_id(), "', expected '",
                     expected_task, "'"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::DropRejected(const std::string& client_id, absl::Status reason) {
  if (reason.ok()) reason = absl::InvalidArgumentError("Coordinator: update rejected");
  Round& round = *job_->round;
  round.waiting.erase(client_id);
  round.metrics.set_rejected(round.metrics.rejected() + 1);
  v1::ClientRoundMetrics& m = round.tasks[client_id].metrics;
  m.set_outcome(v1::ClientRoundMetrics::OUTCOME_REJECTED);
  m.set_reason(std::string(reason.message().substr(0, 256)));
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_->id << " round " << round.number
                     << ": rejected the update of client " << client_id << ": "
                     << reason.message();
  return reason;
}

absl::Status Coordinator::RejectUpdate(const v1::UpdateHeader& header,
                                       const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  return DropRejected(header.client_id(), reason);
}

absl::StatusOr<ExpectedUpdate> Coordinator::ExpectedUpdateOf(const v1::UpdateHeader& header) {
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  const Round& round = *job_->round;
  if (round.secure != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: round ", round.number, " uses secure aggregation: client ",
        header.client_id(), " must send its update masked, through SecureAggregationStep"));
  }
  const ClientTask& ct = round.tasks.at(header.client_id());
  ExpectedUpdate e;
  e.model = ct.model;
  e.encoding = job_->config.transfer().update_encoding();
  if (e.encoding == v1::TENSOR_ENCODING_UNSPECIFIED) e.encoding = v1::TENSOR_ENCODING_FLOAT32;
  e.strategy = job_->strategy.get();
  if (ct.tier < 0) {
    e.what = "the task's model";
  } else {
    const RoundPlanner::Tier& tier = job_->planner->tiers()[ct.tier];
    e.what = absl::StrFormat("the task's sub-model (tier '%s', width %g)", tier.name,
                             tier.width_ratio);
  }
  return e;
}

absl::StatusOr<int64_t> Coordinator::BeginUpload(const v1::UpdateHeader& header) {
  absl::MutexLock lock(&mu_);
  FEDGE_ASSIGN_OR_RETURN(const ExpectedUpdate expected, ExpectedUpdateOf(header));
  if (absl::Status s = CheckUpdateAnnouncement(header, expected); !s.ok()) {
    return DropRejected(header.client_id(), std::move(s));
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
      return DropRejected(header.client_id(), std::move(s));
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
  Round& round = *job_->round;
  if (round.secure != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: round ", round.number, " uses secure aggregation: client ", id,
        " must send its update masked, through SecureAggregationStep"));
  }
  absl::Status status = job_->strategy->CheckUpdate(update, job_->weights);
  if (!status.ok()) {
    // Refused below, as every bad update.
  } else if (header.num_examples() <= 0 || header.num_examples() > options_.max_examples_per_client) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: client ", id, " reports ", header.num_examples(), " examples"));
  } else if (update.weight != static_cast<double>(header.num_examples())) {
    status = absl::InvalidArgumentError(
        absl::StrCat("Coordinator: client ", id, ": update weight differs from num_examples"));
  } else {
    status = job_->privacy->CheckClipped(update, round.dp);
  }
  ClientTask& ct = round.tasks[id];
  if (status.ok() && ct.slicer != nullptr) {
    const RoundPlanner::Tier& tier = job_->planner->tiers()[ct.tier];
    absl::StatusOr<aggregation::Update> e = ExpandSubModelUpdate(
        *ct.slicer,
        absl::StrCat("Coordinator: client ", id, " (tier '", tier.name, "', width ",
                     tier.width_ratio, ")"),
        update);
    if (e.ok()) {
      e->max_abs = update.max_abs;  // the same values, and zeros
      update = std::move(e).value();
    } else {
      status = e.status();
    }
  }
  // Central DP: every participant counts once, whatever its example count.
  if (status.ok()) update.weight = job_->privacy->Weight(update.weight);
  if (status.ok()) status = round.intake->Add(std::move(update));
  // A bad update drops this client from the round, never the round.
  if (!status.ok()) return DropRejected(id, std::move(status));
  RecordAccepted(header, payload_bytes, round, ct);
  return absl::OkStatus();
}

void Coordinator::RecordAccepted(const v1::UpdateHeader& header, int64_t payload_bytes,
                                 Round& round, ClientTask& ct) {
  const std::string& id = header.client_id();
  ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
  ct.metrics.set_bytes_up(payload_bytes);
  ct.metrics.set_num_examples(header.num_examples());
  ct.metrics.set_train_loss(header.metrics().train_loss());
  ct.metrics.set_train_seconds(header.metrics().train_seconds());
  ct.metrics.set_peak_rss_bytes(std::max<int64_t>(0, header.metrics().peak_rss_bytes()));
  if (std::isfinite(header.metrics().update_norm()) && header.metrics().update_norm() >= 0) {
    ct.metrics.set_update_norm(header.metrics().update_norm());
    RoundPrivacy::CountReportedNorm(header.metrics().update_norm(), round.dp);
  }
  round.waiting.erase(id);
  round.accepted.insert(id);
  v1::RoundMetrics& m = round.metrics;
  m.set_bytes_up(m.bytes_up() + payload_bytes);
  m.set_examples(m.examples() + header.num_examples());
  round.train_loss_sum += header.metrics().train_loss() * header.num_examples();
  round.client_seconds_sum += header.metrics().train_seconds();
  const double eval_accuracy = header.metrics().eval_accuracy();
  const int64_t eval_examples = header.metrics().eval_examples();
  if (eval_examples > 0 &&
      eval_examples <= options_.max_examples_per_client && std::isfinite(eval_accuracy) &&
      eval_accuracy >= 0 && eval_accuracy <= 1) {
    // The device's own evaluation (FedCG: its private E with the task's global C on its
    // held-out examples), for the strategy's round report.
    ct.metrics.set_eval_accuracy(eval_accuracy);
    ct.metrics.set_eval_examples(eval_examples);
    round.eval_correct_sum += eval_accuracy * static_cast<double>(eval_examples);
    round.eval_examples += eval_examples;
    ++round.clients_evaluated;
  }
}

absl::Status Coordinator::DeclineTask(const v1::UpdateHeader& header) {
  const std::string& reason = header.refusal();
  if (reason.empty() || reason.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: a refusal needs a reason of 1-256 bytes, got ", reason.size()));
  }
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  Round& round = *job_->round;
  round.waiting.erase(header.client_id());
  v1::ClientRoundMetrics& m = round.tasks[header.client_id()].metrics;
  m.set_outcome(v1::ClientRoundMetrics::OUTCOME_DECLINED);
  m.set_reason(reason);
  m.set_peak_rss_bytes(std::max<int64_t>(0, header.metrics().peak_rss_bytes()));
  registry_.MarkDeclined(header.client_id(), reason);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_->id << " round " << round.number
                     << ": client " << header.client_id() << " declined its task: " << reason;
  return absl::OkStatus();
}

absl::Status Coordinator::Leave(const std::string& client_id, const std::string& session_token) {
  FEDGE_RETURN_IF_ERROR(registry_.Leave(client_id, session_token));
  absl::MutexLock lock(&mu_);
  DropFromRound(client_id);
  return absl::OkStatus();
}

void Coordinator::DropFromRound(const std::string& client_id) {
  if (job_ != nullptr && job_->round.has_value()) job_->round->waiting.erase(client_id);
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
  Round& round = *job_->round;
  const std::string& id = request.client_id();
  if (round.secure == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: round ", round.number, " does not use secure aggregation"));
  }
  v1::SecAggStepResponse response;
  if (job_->unmasking) {
    // The session is being unmasked: a poll is answered later; a message is too late.
    if (request.step_case() != v1::SecAggStepRequest::kPoll) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Coordinator: round ", round.number, " is unmasking; the message came too late"));
    }
    response.set_retry_after_ms(200);
    return response;
  }
  if (request.step_case() == v1::SecAggStepRequest::kPoll) {
    return round.secure->Poll(id, request.poll());
  }
  ClientTask& ct = round.tasks[id];
  if (absl::Status s = round.secure->Receive(id, request); !s.ok()) {
    // A repeat of a message already taken (a device retrying after a lost answer, or a
    // replay) changes nothing; the first one counts.
    if (absl::IsAlreadyExists(s)) return s;
    // A bad message drops this client (the protocol treats it as a dropout), never the round.
    round.waiting.erase(id);
    round.metrics.set_rejected(round.metrics.rejected() + 1);
    ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_REJECTED);
    ct.metrics.set_reason(std::string(s.message().substr(0, 256)));
    FEDGE_LOG(WARNING) << "Coordinator: job " << job_->id << " round " << round.number
                       << ": dropped client " << id << " from secure aggregation: " << s.message();
    FEDGE_RETURN_IF_ERROR(AdvanceSecureRound(clock_.Now()));
    return s;
  }
  if (request.has_masked_input()) {
    const v1::SecAggMaskedInput& in = request.masked_input();
    ct.metrics.set_bytes_up(static_cast<int64_t>(in.masked().size()));
    ct.metrics.set_num_examples(std::clamp<int64_t>(in.num_examples(), 0, options_.max_examples_per_client));
    ct.metrics.set_train_loss(in.metrics().train_loss());
    ct.metrics.set_train_seconds(in.metrics().train_seconds());
    ct.metrics.set_peak_rss_bytes(std::max<int64_t>(0, in.metrics().peak_rss_bytes()));
  }
  if (request.has_unmasking()) {
    response.set_done(true);
  } else {
    response.set_retry_after_ms(0);  // poll for the phase's result
  }
  FEDGE_RETURN_IF_ERROR(AdvanceSecureRound(clock_.Now()));
  return response;
}

absl::Status Coordinator::AdvanceSecureRound(absl::Time now, bool unmask) {
  if (job_ == nullptr || !job_->round.has_value() || job_->round->secure == nullptr) {
    return absl::OkStatus();
  }
  Job& job = *job_;
  Round& round = *job.round;
  SecureRound& secure = *round.secure;
  absl::StatusOr<bool> finished =
      secure.Advance(now, SecurePhaseTimeout(), round.waiting, /*unmask=*/false);
  if (finished.ok() && !*finished && unmask && secure.UnmaskDue(now, round.waiting)) {
    // Unmasking reconstructs every dropout's mask: costly at scale. It runs without the
    // lock; meanwhile the round's SecureRound is left alone (job.unmasking) and other
    // calls are answered.
    absl::flat_hash_set<std::string> waiting = round.waiting;
    job.unmasking = true;
    mu_.Unlock();
    finished = secure.Advance(now, SecurePhaseTimeout(), waiting, /*unmask=*/true);
    mu_.Lock();
    job.unmasking = false;
    task_cv_.SignalAll();
    round.waiting = std::move(waiting);
  }
  if (!finished.ok()) {
    FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << round.number
                       << ": secure aggregation released nothing: " << finished.status().message();
    return absl::OkStatus();
  }
  if (!*finished || !round.accepted.empty()) return absl::OkStatus();
  // The survivors' mean, aggregated as one update of weight |U3|.
  SecureRound::Release release = secure.Released(job.weights);
  if (release.noised_unclipped.has_value()) round.dp.noised_unclipped = *release.noised_unclipped;
  FEDGE_RETURN_IF_ERROR(round.intake->AddReleased(release.mean));
  const std::vector<std::string> survivors = secure.Survivors();
  v1::RoundMetrics& m = round.metrics;
  for (const std::string& id : survivors) {
    round.accepted.insert(id);
    ClientTask& ct = round.tasks[id];
    ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
    m.set_bytes_up(m.bytes_up() + ct.metrics.bytes_up());
    m.set_examples(m.examples() + ct.metrics.num_examples());
    round.train_loss_sum += ct.metrics.train_loss() * ct.metrics.num_examples();
    round.client_seconds_sum += ct.metrics.train_seconds();
  }
  for (const std::string& id : secure.Misbehaving()) {
    secure.metrics().add_misbehaving_clients(id);
    FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << round.number << ": client "
                       << id << " revealed a bad secret share";
  }
  round.waiting.clear();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Operators

absl::StatusOr<std::string> Coordinator::StartJob(const v1::JobConfig& config) {
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
  FEDGE_RETURN_IF_ERROR(ledger_.CreateJob(id, validated));
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
    return job_ == nullptr || (!job_->completing && !job_->unmasking);
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
  if (running && job_->round.has_value()) s.set_current_round(job_->round->number);
  return s;
}

absl::Status Coordinator::EndJob(v1::JobState state, const std::string& message) {
  Job& job = *job_;
  std::optional<int64_t> open_round;
  if (job.round.has_value()) open_round = job.round->number;
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

absl::StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return StatusOf(job_id);
}

absl::StatusOr<std::vector<v1::RoundRecord>> Coordinator::ListRounds(const std::string& job_id,
                                                                     int64_t from_round) {
  return ledger_.Rounds(job_id, from_round);
}

absl::StatusOr<std::vector<v1::ClientRecord>> Coordinator::ListClients() {
  return registry_.Records();
}

absl::StatusOr<v1::ModelProto> Coordinator::ExportModel(const std::string& job_id) {
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
  if (job_ == nullptr || job_->completing || job_->unmasking) return absl::OkStatus();
  if (!job_->round.has_value()) return MaybeOpenRound(now);
  Round& round = *job_->round;
  // Sampled clients that went silent are dropped.
  for (auto it = round.waiting.begin(); it != round.waiting.end();) {
    if (!registry_.Live(*it, now)) {
      round.waiting.erase(it++);
    } else {
      ++it;
    }
  }
  if (round.secure != nullptr) {
    FEDGE_RETURN_IF_ERROR(AdvanceSecureRound(now, /*unmask=*/true));
    if (job_->round.has_value() && job_->round->waiting.empty()) return CloseRound(now);
    return absl::OkStatus();
  }
  if (round.waiting.empty() || now >= round.deadline) return CloseRound(now);
  return absl::OkStatus();
}

absl::Status Coordinator::MaybeOpenRound(absl::Time now) {
  Job& job = *job_;
  const v1::JobConfig& cfg = job.config;
  // The sample depends only on (seed, round, set): the live ids come sorted.
  std::vector<std::string> live = registry_.LiveIds(now);
  const v1::ClientSelection& sel = cfg.selection();
  const int want = sel.has_fraction()
                       ? static_cast<int>(std::ceil(sel.fraction() * static_cast<double>(live.size())))
                       : sel.clients_per_round();
  const int quorum = cfg.round_policy().quorum();
  const int needed = std::max({sel.min_registered(), quorum, cfg.privacy().secure_aggregation_threshold(), 1});
  if (static_cast<int>(live.size()) < needed) return absl::OkStatus();
  Round round;
  round.number = job.completed_rounds + 1;
  round.attempt = job.failed_attempts;
  const v1::PrivacyConfig& privacy = cfg.privacy();
  const size_t sampled = std::min(live.size(), static_cast<size_t>(std::max(want, quorum)));
  FEDGE_ASSIGN_OR_RETURN(RoundPrivacy::Opening dp,
                         job.privacy->Open(round.number, sampled, live.size(), job.completed_rounds));
  if (dp.over_budget.has_value()) return FinishJob(*dp.over_budget);
  round.dp = dp.round;
  base::Rng rng(sel.seed(), static_cast<uint64_t>(round.number) * 1000 + round.attempt);
  rng.Shuffle(live);
  live.resize(sampled);
  round.sampled = std::move(live);
  round.waiting.insert(round.sampled.begin(), round.sampled.end());
  round.opened = now;
  const double deadline = cfg.round_policy().deadline_seconds();
  if (deadline > 0) round.deadline = now + absl::Seconds(deadline);
  round.model = std::make_shared<v1::ModelProto>(ProtoFromWeights(cfg.model_spec(), job.weights));
  round.models = std::make_unique<RoundPlanner::RoundModels>(round.model,
                                                            job.planner->tiers().size());
  for (const std::string& id : round.sampled) {
    ClientTask& task = round.tasks[id];
    FEDGE_ASSIGN_OR_RETURN(static_cast<ClientPlan&>(task),
                           job.planner->PlanClient(*round.models, round.number, id,
                                                   registry_.ProfileOf(id)));
    task.metrics.set_client_id(id);
    task.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_DROPPED);
    if (task.tier >= 0) {
      const std::string& tier = job.planner->tiers()[task.tier].name;
      registry_.SetTier(id, tier);
      task.metrics.set_tier(tier);
    }
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<aggregation::Aggregator> aggregator,
                         job.strategy->CreateAggregator(aggregation::SpecsOf(job.weights)));
  RoundIntake::Options intake;
  intake.batch = options_.aggregation_batch;
  intake.batch_bytes = options_.aggregation_batch_bytes;
  intake.threads = options_.aggregation_threads;
  intake.keep_updates = job.strategy->KeepsClientUpdates();
  round.intake = std::make_unique<RoundIntake>(std::move(aggregator), intake);
  if (privacy.secure_aggregation_threshold() > 0) {
    FEDGE_ASSIGN_OR_RETURN(const SecureRound::Encoding e,
                           job.privacy->SecureEncoding(round.dp, privacy.secure_aggregation_threshold()));
    FEDGE_ASSIGN_OR_RETURN(
        round.secure,
        SecureRound::Create(privacy, round.sampled,
                            job.num_parameters + (e.clipped_count ? 1 : 0), e));
    round.secure->set_phase_deadline(round.deadline);
  }
  round.metrics.set_round(round.number);
  round.metrics.set_sampled(static_cast<int32_t>(round.sampled.size()));
  round.metrics.set_started_unix_ms(UnixMs(now));
  FEDGE_RETURN_IF_ERROR(ledger_.OpenRound(job.id, round.number, now));
  FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " round " << round.number << " open, "
                  << round.sampled.size() << " clients sampled of " << registry_.size();
  job.round = std::move(round);
  ++task_epoch_;
  task_cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status Coordinator::CloseRound(absl::Time now) {
  Job& job = *job_;
  Round& round = *job.round;
  const int quorum = job.config.round_policy().quorum();
  if (static_cast<int>(round.accepted.size()) >= std::max(quorum, 1)) return CompleteRound(now);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << round.number << " failed: "
                     << round.accepted.size() << " updates, quorum " << quorum << "; retrying";
  FEDGE_RETURN_IF_ERROR(ledger_.FailRound(job.id, round.number, now));
  ++job.failed_attempts;
  job.round.reset();
  return absl::OkStatus();
}

void Coordinator::FlushIntake(Round& round) {
  for (auto& [client, why] : round.intake->Flush()) {
    // Not expected: each update passed Validate and the sum bound rules out an overflow.
    FEDGE_LOG(ERROR) << "Coordinator: job " << job_->id << " round " << round.number
                     << ": dropped the update of client " << client << ": " << why.message();
    round.accepted.erase(client);
    round.metrics.set_rejected(round.metrics.rejected() + 1);
    ClientTask& ct = round.tasks[client];
    ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_REJECTED);
    ct.metrics.set_reason(std::string(why.message().substr(0, 256)));
  }
}

absl::Status Coordinator::CompleteRound(absl::Time now) {
  Job& job = *job_;
  Round& round = *job.round;
  v1::RoundMetrics& m = round.metrics;
  auto t0 = std::chrono::steady_clock::now();
  FlushIntake(round);
  m.set_participants(static_cast<int32_t>(round.accepted.size()));
  m.set_dropped(static_cast<int32_t>(round.sampled.size() - round.accepted.size() - m.rejected()));
  if (m.examples() > 0) m.set_train_loss(round.train_loss_sum / static_cast<double>(m.examples()));
  if (!round.accepted.empty()) m.set_mean_client_seconds(round.client_seconds_sum / round.accepted.size());
  // Per client (sampled, in id order), before the lock is let go.
  std::vector<std::string> sampled = round.sampled;
  std::sort(sampled.begin(), sampled.end());
  std::vector<std::pair<v1::ClientRoundMetrics, int>> clients;
  clients.reserve(sampled.size());
  for (const std::string& id : sampled) {
    const ClientTask& ct = round.tasks[id];
    clients.emplace_back(ct.metrics, ct.tier);
  }
  const std::vector<std::string> participants(round.accepted.begin(), round.accepted.end());
  // Nobody is waiting any more: other calls cannot reach the round, and the rest of the
  // round (aggregation, noise, the server step, evaluation, the commit) runs without the
  // lock. Tick and StopJob wait for it (job.completing); readers see the previous model.
  round.waiting.clear();
  job.completing = true;
  aggregation::ModelWeights next;
  mu_.Unlock();
  const absl::Status done = AggregateEvaluateCommit(job, round, now, t0, clients, participants, next);
  mu_.Lock();
  job.completing = false;
  task_cv_.SignalAll();
  if (!done.ok()) {
    // The round cannot complete (its aggregate is spent): it fails and is retried.
    FEDGE_LOG(ERROR) << "Coordinator: job " << job.id << " round " << round.number
                     << " could not complete: " << done.message() << "; retrying";
    ledger_.FailRound(job.id, round.number, clock_.Now()).IgnoreError();
    ++job.failed_attempts;
    job.round.reset();
    return done;
  }
  LogRoundDone(job.id, m);
  job.weights = std::move(next);
  job.completed_rounds = round.number;
  job.latest_metrics = m;
  job.failed_attempts = 0;
  job.round.reset();
  if (job.completed_rounds >= job.config.rounds()) return FinishJob("");
  return absl::OkStatus();
}

absl::Status Coordinator::AggregateEvaluateCommit(
    Job& job, Round& round, absl::Time now, std::chrono::steady_clock::time_point t0,
    const std::vector<std::pair<v1::ClientRoundMetrics, int>>& clients,
    const std::vector<std::string>& participants, aggregation::ModelWeights& next) {
  v1::RoundMetrics& m = round.metrics;
  FEDGE_ASSIGN_OR_RETURN(aggregation::ModelDelta delta, std::move(*round.intake).Report());
  FEDGE_RETURN_IF_ERROR(job.privacy->Close(round.dp, round.secure != nullptr,
                                           static_cast<int64_t>(participants.size()), delta, &m));
  next = job.weights;
  FEDGE_RETURN_IF_ERROR(job.strategy->Apply(delta, &next));
  if (job.strategy->KeepsClientUpdates()) {
    std::vector<const aggregation::Update*> kept;
    for (const aggregation::Update& u : round.intake->kept()) kept.push_back(&u);
    FEDGE_RETURN_IF_ERROR(job.strategy->ServerTrainingStep(kept, &next));
  }
  m.set_aggregation_seconds(Seconds(t0));
  aggregation::DeviceEvaluation devices;
  devices.clients = round.clients_evaluated;
  devices.examples = round.eval_examples;
  devices.correct = round.eval_correct_sum;
  devices.model_round = round.number - 1;
  job.strategy->ReportRound(devices, &m);
  const v1::ModelProto model = ProtoFromWeights(job.config.model_spec(), next);
  FEDGE_RETURN_IF_ERROR(job.report->Evaluate(model, round.number, &m));
  for (const auto& [client, tier] : clients) RoundReport::AddClient(client, tier, &m);
  if (round.secure != nullptr) *m.mutable_secure_aggregation() = round.secure->metrics();
  m.set_closed_unix_ms(UnixMs(now));
  m.set_round_seconds(absl::ToDoubleSeconds(now - round.opened));
  FEDGE_RETURN_IF_ERROR(ledger_.CommitRound(job.id, m, model, job.config.keep_checkpoints(),
                                            participants,
                                            [&] { return job.strategy->SerializeState(); }));
  registry_.CountParticipation(participants);
  return absl::OkStatus();
}

void Coordinator::LogRoundDone(const std::string& job_id, const v1::RoundMetrics& m) {
  if (m.has_fed_cg()) {
    FEDGE_LOG(INFO) << "Coordinator: job " << job_id << " round " << m.round() << " done: "
                    << m.participants() << "/" << m.sampled() << " clients, FedCG client accuracy "
                    << m.fed_cg().client_accuracy() << " (" << m.fed_cg().clients_evaluated()
                    << " devices), distillation KL " << m.fed_cg().first_kl() << " -> "
                    << m.fed_cg().last_kl() << ", synthetic accuracy "
                    << m.fed_cg().synthetic_accuracy();
  } else {
    FEDGE_LOG(INFO) << "Coordinator: job " << job_id << " round " << m.round() << " done: "
                    << m.participants() << "/" << m.sampled() << " clients, test accuracy "
                    << m.test_accuracy() << ", loss " << m.test_loss();
  }
}

absl::Status Coordinator::FinishJob(const std::string& message) {
  return EndJob(v1::JOB_STATE_FINISHED, message);
}

}  // namespace fedge::server
