#include "server/coordinator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "aggregation/fed_opt.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "data/idx_reader.h"
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

absl::StatusOr<std::unique_ptr<aggregation::Strategy>> MakeStrategy(
    const v1::StrategyConfig& config) {
  const double eta = config.has_server_learning_rate() ? config.server_learning_rate() : 1.0;
  switch (config.kind_case()) {
    case v1::StrategyConfig::kFedAdam:
    case v1::StrategyConfig::kFedYogi: {
      const v1::AdaptiveServerOptimizerParams& p =
          config.has_fed_adam() ? config.fed_adam() : config.fed_yogi();
      aggregation::AdaptiveOptions o;
      o.server_learning_rate = config.has_server_learning_rate() ? eta : o.server_learning_rate;
      if (p.has_beta1()) o.beta1 = p.beta1();
      if (p.has_beta2()) o.beta2 = p.beta2();
      if (p.has_tau()) o.tau = p.tau();
      FEDGE_ASSIGN_OR_RETURN(
          auto s, aggregation::AdaptiveServerOptimizer::Create(
                      config.has_fed_adam() ? aggregation::AdaptiveServerOptimizer::Rule::kAdam
                                            : aggregation::AdaptiveServerOptimizer::Rule::kYogi,
                      o));
      return std::unique_ptr<aggregation::Strategy>(std::move(s));
    }
    default: {
      // FedAvg and FedProx (whose μ only changes the clients' objective).
      aggregation::FedAvgOptions o;
      o.server_learning_rate = eta;
      FEDGE_ASSIGN_OR_RETURN(auto s, aggregation::FedAvg::Create(o));
      return std::unique_ptr<aggregation::Strategy>(std::move(s));
    }
  }
}

// Pixels arrive in [0, 1] from the IDX reader; the job may standardize them.
void Preprocess(const v1::Preprocessing& p, data::Dataset& d) {
  if (p.kind() == v1::Preprocessing::KIND_STANDARDIZE) {
    data::Standardize(d, static_cast<float>(p.has_mean() ? p.mean() : data::kFashionMnistMean),
                      static_cast<float>(p.has_std() ? p.std() : data::kFashionMnistStd));
  }
}

absl::StatusOr<std::shared_ptr<const data::Dataset>> LoadEvaluationData(
    const v1::JobConfig& config) {
  const v1::EvaluationConfig& e = config.evaluation();
  data::Dataset test;
  if (!e.data_path().empty()) {
    FEDGE_ASSIGN_OR_RETURN(test,
                           data::LoadIdxDataset(e.data_path() + "/t10k-images-idx3-ubyte.gz",
                                                e.data_path() + "/t10k-labels-idx1-ubyte.gz"));
  } else if (e.dataset().empty() || e.dataset() == kDefaultEvaluationDataset) {
    FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm, data::LoadFashionMnist());
    test = std::move(fm.test);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("Coordinator: unknown evaluation dataset '", e.dataset(), "'"));
  }
  if (e.max_examples() > 0 && e.max_examples() < test.num_examples) {
    std::vector<int> first(e.max_examples());
    for (int i = 0; i < e.max_examples(); ++i) first[i] = i;
    test = data::Subset(test, first);
  }
  Preprocess(config.preprocessing(), test);
  return std::make_shared<const data::Dataset>(std::move(test));
}

}  // namespace

Coordinator::Coordinator(CoordinatorOptions options, Store* store)
    : options_(std::move(options)),
      clock_(options_.clock != nullptr ? *options_.clock : base::RealClock()),
      store_(store) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options,
                                                                 Store* store) {
  if (options.enrollment_token.empty()) {
    return absl::InvalidArgumentError("Coordinator: an enrollment token is required");
  }
  if (options.liveness_timeout <= absl::ZeroDuration() || options.aggregation_threads < 1) {
    return absl::InvalidArgumentError(
        "Coordinator: liveness_timeout must be > 0 and aggregation_threads ≥ 1");
  }
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), store));
  if (store != nullptr) {
    absl::MutexLock lock(&c->mu_);
    FEDGE_RETURN_IF_ERROR(c->Resume());
  }
  return c;
}

absl::Status Coordinator::Resume() {
  // The registry: clients count as live from now (they reconnect by themselves).
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::ClientRecord> clients, store_->ListClients(false));
  const absl::Time now = clock_.Now();
  for (v1::ClientRecord& r : clients) {
    const std::string id = r.client_id();  // (the assignment's right side runs first)
    clients_[id] = ClientInfo{std::move(r), now};
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, store_->ListJobs());
  next_job_number_ = static_cast<int64_t>(jobs.size()) + 1;
  for (const v1::JobStatus& status : jobs) {  // most recent first
    if (status.state() != v1::JOB_STATE_RUNNING) continue;
    FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Job> job, MakeJob(status.job_id(), status.config()));
    absl::StatusOr<Checkpoint> checkpoint = store_->LatestCheckpoint(status.job_id());
    if (checkpoint.ok()) {
      job->weights = WeightsFromProto(checkpoint->model);
      job->completed_rounds = checkpoint->round;
    } else if (!absl::IsNotFound(checkpoint.status())) {
      return checkpoint.status();
    }
    job->latest_metrics = status.latest_metrics();
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
  FEDGE_ASSIGN_OR_RETURN(job->strategy, MakeStrategy(config.strategy()));
  FEDGE_ASSIGN_OR_RETURN(job->eval_net, model::Sequential::Create(config.model_spec()));
  job->eval_net->InitParameters(config.init_seed());
  job->weights = WeightsFromProto(job->eval_net->ToProto());
  if (options_.evaluation_data != nullptr) {
    job->evaluation_data = options_.evaluation_data;
  } else {
    FEDGE_ASSIGN_OR_RETURN(job->evaluation_data, LoadEvaluationData(config));
  }
  if (static_cast<int>(job->evaluation_data->feature_size()) != job->eval_net->input_size() ||
      job->evaluation_data->num_classes != job->eval_net->output_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: evaluation data has ", job->evaluation_data->feature_size(),
        " features and ", job->evaluation_data->num_classes, " classes; the model takes ",
        job->eval_net->input_size(), " and ", job->eval_net->output_size()));
  }
  return job;
}

// ---------------------------------------------------------------------------------------
// Devices

absl::StatusOr<v1::RegisterResponse> Coordinator::Register(const v1::RegisterRequest& request) {
  if (!SessionTokenHashesEqual(HashSessionToken(request.enrollment_token()),
                               HashSessionToken(options_.enrollment_token))) {
    return absl::UnauthenticatedError("Coordinator: wrong enrollment token");
  }
  const v1::DeviceProfile& p = request.profile();
  if (p.memory_budget_bytes() < 0 || p.num_examples() < 0 ||
      p.num_examples() > options_.max_examples_per_client || p.platform().size() > 128 ||
      p.client_version().size() > 128 || request.previous_client_id().size() > 128) {
    return absl::InvalidArgumentError(
        "Coordinator: device profile out of bounds (negative sizes, too many examples, or "
        "strings over 128 bytes)");
  }
  absl::MutexLock lock(&mu_);
  std::string id = request.previous_client_id();
  if (id.empty() || !clients_.contains(id)) id = absl::StrCat("c-", GenerateSessionToken().substr(0, 16));
  const std::string token = GenerateSessionToken();
  const absl::Time now = clock_.Now();
  ClientInfo& info = clients_[id];
  info.record.set_client_id(id);
  *info.record.mutable_profile() = p;
  info.record.set_state(v1::CLIENT_STATE_ACTIVE);
  if (info.record.enrolled_unix_ms() == 0) info.record.set_enrolled_unix_ms(UnixMs(now));
  info.record.set_last_seen_unix_ms(UnixMs(now));
  info.last_seen = now;
  if (store_ != nullptr) {
    FEDGE_RETURN_IF_ERROR(store_->PutClient(info.record, HashSessionToken(token)));
  } else {
    token_hashes_[id] = HashSessionToken(token);
  }
  v1::RegisterResponse response;
  response.set_client_id(id);
  response.set_session_token(token);
  response.set_liveness_timeout_ms(absl::ToInt64Milliseconds(options_.liveness_timeout));
  return response;
}

absl::Status Coordinator::Authenticate(const std::string& client_id,
                                       const std::string& session_token) {
  auto it = clients_.find(client_id);
  if (it == clients_.end() || it->second.record.state() == v1::CLIENT_STATE_LEFT) {
    return absl::UnauthenticatedError("Coordinator: unknown client or wrong session token");
  }
  if (store_ != nullptr) return store_->VerifySessionToken(client_id, session_token);
  auto t = token_hashes_.find(client_id);
  if (t == token_hashes_.end() ||
      !SessionTokenHashesEqual(t->second, HashSessionToken(session_token))) {
    return absl::UnauthenticatedError("Coordinator: unknown client or wrong session token");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<TaskAssignment>> Coordinator::FetchTask(
    const std::string& client_id, const std::string& session_token) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(Authenticate(client_id, session_token));
  ClientInfo& info = clients_[client_id];
  info.last_seen = clock_.Now();
  info.record.set_state(v1::CLIENT_STATE_ACTIVE);
  if (job_ == nullptr || !job_->round.has_value()) return std::nullopt;
  Round& round = *job_->round;
  if (!round.waiting.contains(client_id)) return std::nullopt;
  TaskAssignment task;
  v1::TaskHeader& h = task.header;
  h.set_job_id(job_->id);
  h.set_round(round.number);
  h.set_task_id(absl::StrCat(job_->id, "/", round.number, "/", round.attempt, "/", client_id));
  if (round.deadline != absl::InfiniteFuture()) h.set_deadline_unix_ms(UnixMs(round.deadline));
  *h.mutable_model_spec() = job_->config.model_spec();
  *h.mutable_training() = job_->config.local_training();
  *h.mutable_preprocessing() = job_->config.preprocessing();
  if (job_->config.strategy().has_fed_prox()) h.set_fedprox_mu(job_->config.strategy().fed_prox().mu());
  *h.mutable_distillation() = job_->config.distillation();
  *h.mutable_privacy() = job_->config.privacy();
  task.model = round.model;
  if (round.tasks_sent.insert(client_id).second) {
    round.metrics.set_bytes_down(round.metrics.bytes_down() + round.model_bytes);
  }
  return std::optional<TaskAssignment>(std::move(task));
}

absl::Status Coordinator::CheckUpdateHeader(const v1::UpdateHeader& header) {
  const std::string& id = header.client_id();
  FEDGE_RETURN_IF_ERROR(Authenticate(id, header.session_token()));
  clients_[id].last_seen = clock_.Now();
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

absl::Status Coordinator::RejectUpdate(const v1::UpdateHeader& header,
                                       const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  Round& round = *job_->round;
  round.waiting.erase(header.client_id());
  round.metrics.set_rejected(round.metrics.rejected() + 1);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_->id << " round " << round.number
                     << ": rejected the update of client " << header.client_id() << ": "
                     << reason.message();
  return reason.ok() ? absl::InvalidArgumentError("Coordinator: update rejected") : reason;
}

absl::Status Coordinator::SubmitUpdate(const v1::UpdateHeader& header,
                                       const aggregation::Update& update,
                                       int64_t payload_bytes) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(CheckUpdateHeader(header));
  const std::string& id = header.client_id();
  Round& round = *job_->round;
  absl::Status status;
  if (header.num_examples() <= 0 || header.num_examples() > options_.max_examples_per_client) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "Coordinator: client ", id, " reports ", header.num_examples(), " examples"));
  } else if (update.weight != static_cast<double>(header.num_examples())) {
    status = absl::InvalidArgumentError(
        absl::StrCat("Coordinator: client ", id, ": update weight differs from num_examples"));
  } else {
    status = round.aggregator->Accumulate(update);
  }
  if (!status.ok()) {
    // A bad update drops this client from the round, never the round.
    round.waiting.erase(id);
    round.metrics.set_rejected(round.metrics.rejected() + 1);
    return status;
  }
  if (job_->strategy->KeepsClientUpdates()) round.kept.push_back(update);
  round.waiting.erase(id);
  round.accepted.insert(id);
  v1::RoundMetrics& m = round.metrics;
  m.set_bytes_up(m.bytes_up() + payload_bytes);
  m.set_examples(m.examples() + header.num_examples());
  round.train_loss_sum += header.metrics().train_loss() * header.num_examples();
  round.client_seconds_sum += header.metrics().train_seconds();
  return absl::OkStatus();
}

absl::Status Coordinator::Leave(const std::string& client_id, const std::string& session_token) {
  absl::MutexLock lock(&mu_);
  FEDGE_RETURN_IF_ERROR(Authenticate(client_id, session_token));
  clients_[client_id].record.set_state(v1::CLIENT_STATE_LEFT);
  DropFromRound(client_id);
  if (store_ != nullptr) return store_->SetClientState(client_id, v1::CLIENT_STATE_LEFT);
  return absl::OkStatus();
}

void Coordinator::DropFromRound(const std::string& client_id) {
  if (job_ != nullptr && job_->round.has_value()) job_->round->waiting.erase(client_id);
}

// ---------------------------------------------------------------------------------------
// Operators

absl::StatusOr<std::string> Coordinator::StartJob(const v1::JobConfig& config) {
  FEDGE_ASSIGN_OR_RETURN(v1::JobConfig validated, ValidateJobConfig(config));
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: job ", job_->id, " is running; stop it first"));
  }
  const std::string id =
      absl::StrCat(validated.name(), "-", UnixMs(clock_.Now()), "-", next_job_number_++);
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Job> job, MakeJob(id, validated));
  if (store_ != nullptr) FEDGE_RETURN_IF_ERROR(store_->CreateJob(id, validated));
  job_ = std::move(job);
  FEDGE_LOG(INFO) << "Coordinator: started job " << id << " (" << validated.rounds()
                  << " rounds, strategy " << job_->strategy->name() << ")";
  return id;
}

absl::Status Coordinator::StopJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr || job_->id != job_id) {
    return absl::NotFoundError(absl::StrCat("Coordinator: no running job '", job_id, "'"));
  }
  if (store_ != nullptr) {
    if (job_->round.has_value()) {
      FEDGE_RETURN_IF_ERROR(store_->CloseRound(job_id, job_->round->number,
                                               v1::ROUND_STATE_ABANDONED, UnixMs(clock_.Now())));
    }
    FEDGE_RETURN_IF_ERROR(store_->SetJobState(job_id, v1::JOB_STATE_STOPPED, "stopped by an operator"));
  } else {
    FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, StatusOf(job_id));
    s.set_state(v1::JOB_STATE_STOPPED);
    s.set_message("stopped by an operator");
    past_jobs_[job_id] = s;
    past_models_[job_id] = ProtoFromWeights(job_->config.model_spec(), job_->weights);
  }
  job_.reset();
  return absl::OkStatus();
}

absl::StatusOr<v1::JobStatus> Coordinator::StatusOf(const std::string& job_id) {
  v1::JobStatus s;
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(s, store_->GetJob(job_id));
  } else if (auto it = past_jobs_.find(job_id); it != past_jobs_.end()) {
    s = it->second;
  } else if (job_ != nullptr && job_->id == job_id) {
    s.set_job_id(job_id);
    *s.mutable_config() = job_->config;
    s.set_state(v1::JOB_STATE_RUNNING);
    s.set_completed_rounds(job_->completed_rounds);
    *s.mutable_latest_metrics() = job_->latest_metrics;
  } else {
    return absl::NotFoundError(absl::StrCat("Coordinator: no job '", job_id, "'"));
  }
  if (job_ != nullptr && job_->id == job_id && job_->round.has_value()) {
    s.set_current_round(job_->round->number);
  }
  return s;
}

absl::StatusOr<v1::JobStatus> Coordinator::GetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return StatusOf(job_id);
}

absl::StatusOr<std::vector<v1::RoundRecord>> Coordinator::ListRounds(const std::string& job_id,
                                                                     int64_t from_round) {
  absl::MutexLock lock(&mu_);
  if (store_ != nullptr) return store_->ListRounds(job_id, from_round);
  std::vector<v1::RoundRecord> out;
  for (const v1::RoundRecord& r : rounds_without_store_) {
    if (r.job_id() == job_id && r.round() >= from_round) out.push_back(r);
  }
  return out;
}

absl::StatusOr<std::vector<v1::ClientRecord>> Coordinator::ListClients() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::ClientRecord> out;
  for (const auto& [id, info] : clients_) {
    v1::ClientRecord r = info.record;
    r.set_last_seen_unix_ms(UnixMs(info.last_seen));
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.client_id() < b.client_id();
  });
  return out;
}

absl::StatusOr<v1::ModelProto> Coordinator::ExportModel(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (job_ != nullptr && job_->id == job_id) {
    return ProtoFromWeights(job_->config.model_spec(), job_->weights);
  }
  if (store_ != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(Checkpoint c, store_->LatestCheckpoint(job_id));
    return std::move(c.model);
  }
  if (auto it = past_models_.find(job_id); it != past_models_.end()) return it->second;
  return absl::NotFoundError(absl::StrCat("Coordinator: no model for job '", job_id, "'"));
}

std::optional<std::string> Coordinator::running_job() const {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr) return std::nullopt;
  return job_->id;
}

// ---------------------------------------------------------------------------------------
// Rounds

bool Coordinator::Live(const ClientInfo& c, absl::Time now) const {
  return c.record.state() == v1::CLIENT_STATE_ACTIVE &&
         now - c.last_seen <= options_.liveness_timeout;
}

absl::Status Coordinator::Tick() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  if (job_ == nullptr) return absl::OkStatus();
  if (!job_->round.has_value()) return MaybeOpenRound(now);
  Round& round = *job_->round;
  // Sampled clients that went silent are dropped.
  for (auto it = round.waiting.begin(); it != round.waiting.end();) {
    auto c = clients_.find(*it);
    if (c == clients_.end() || !Live(c->second, now)) {
      round.waiting.erase(it++);
    } else {
      ++it;
    }
  }
  if (round.waiting.empty() || now >= round.deadline) return CloseRound(now);
  return absl::OkStatus();
}

absl::Status Coordinator::MaybeOpenRound(absl::Time now) {
  Job& job = *job_;
  const v1::JobConfig& cfg = job.config;
  std::vector<std::string> live;
  for (const auto& [id, info] : clients_) {
    if (Live(info, now)) live.push_back(id);
  }
  std::sort(live.begin(), live.end());  // the sample depends only on (seed, round, set)
  const v1::ClientSelection& sel = cfg.selection();
  const int want = sel.has_fraction()
                       ? static_cast<int>(std::ceil(sel.fraction() * static_cast<double>(live.size())))
                       : sel.clients_per_round();
  const int quorum = cfg.round_policy().quorum();
  const int needed = std::max({sel.min_registered(), quorum, 1});
  if (static_cast<int>(live.size()) < needed) return absl::OkStatus();
  Round round;
  round.number = job.completed_rounds + 1;
  round.attempt = job.failed_attempts;
  base::Rng rng(sel.seed(), static_cast<uint64_t>(round.number) * 1000 + round.attempt);
  rng.Shuffle(live);
  live.resize(std::min<size_t>(live.size(), static_cast<size_t>(std::max(want, quorum))));
  round.sampled = live;
  round.waiting.insert(live.begin(), live.end());
  round.opened = now;
  const double deadline = cfg.round_policy().deadline_seconds();
  if (deadline > 0) round.deadline = now + absl::Seconds(deadline);
  auto model = std::make_shared<v1::ModelProto>(ProtoFromWeights(cfg.model_spec(), job.weights));
  round.model_bytes = static_cast<int64_t>(model->ByteSizeLong());
  round.model = std::move(model);
  FEDGE_ASSIGN_OR_RETURN(round.aggregator, job.strategy->CreateAggregator(aggregation::SpecsOf(job.weights)));
  round.metrics.set_round(round.number);
  round.metrics.set_sampled(static_cast<int32_t>(round.sampled.size()));
  round.metrics.set_started_unix_ms(UnixMs(now));
  if (store_ != nullptr) FEDGE_RETURN_IF_ERROR(store_->OpenRound(job.id, round.number, UnixMs(now)));
  FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " round " << round.number << " open, "
                  << round.sampled.size() << " clients sampled of " << clients_.size();
  job.round = std::move(round);
  return absl::OkStatus();
}

absl::Status Coordinator::CloseRound(absl::Time now) {
  Job& job = *job_;
  Round& round = *job.round;
  const int quorum = job.config.round_policy().quorum();
  if (static_cast<int>(round.accepted.size()) >= std::max(quorum, 1)) return CompleteRound(now);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job.id << " round " << round.number << " failed: "
                     << round.accepted.size() << " updates, quorum " << quorum << "; retrying";
  if (store_ != nullptr) {
    FEDGE_RETURN_IF_ERROR(store_->CloseRound(job.id, round.number, v1::ROUND_STATE_FAILED, UnixMs(now)));
  }
  ++job.failed_attempts;
  job.round.reset();
  return absl::OkStatus();
}

absl::Status Coordinator::CompleteRound(absl::Time now) {
  Job& job = *job_;
  Round& round = *job.round;
  v1::RoundMetrics& m = round.metrics;
  m.set_participants(static_cast<int32_t>(round.accepted.size()));
  m.set_dropped(static_cast<int32_t>(round.sampled.size() - round.accepted.size() - m.rejected()));
  if (m.examples() > 0) m.set_train_loss(round.train_loss_sum / static_cast<double>(m.examples()));
  if (!round.accepted.empty()) m.set_mean_client_seconds(round.client_seconds_sum / round.accepted.size());

  auto t0 = std::chrono::steady_clock::now();
  FEDGE_ASSIGN_OR_RETURN(aggregation::ModelDelta delta, std::move(*round.aggregator).Report());
  aggregation::ModelWeights next = job.weights;
  FEDGE_RETURN_IF_ERROR(job.strategy->Apply(delta, &next));
  if (job.strategy->KeepsClientUpdates()) {
    std::vector<const aggregation::Update*> kept;
    for (const aggregation::Update& u : round.kept) kept.push_back(&u);
    FEDGE_RETURN_IF_ERROR(job.strategy->ServerTrainingStep(kept, &next));
  }
  m.set_aggregation_seconds(Seconds(t0));

  const v1::ModelProto model = ProtoFromWeights(job.config.model_spec(), next);
  const int every = std::max(1, job.config.evaluation().every_rounds());
  if (round.number % every == 0 || round.number == job.config.rounds()) {
    t0 = std::chrono::steady_clock::now();
    FEDGE_RETURN_IF_ERROR(job.eval_net->SetParameters(model));
    const int batch = std::max(1, job.config.evaluation().batch_size());
    const model::EvalResult r =
        model::Evaluate(*job.eval_net, *job.evaluation_data, model::ComputeMode::kFp32, batch);
    m.set_evaluated(true);
    m.set_test_accuracy(r.accuracy);
    m.set_test_loss(r.loss);
    m.set_evaluation_seconds(Seconds(t0));
  }
  m.set_closed_unix_ms(UnixMs(now));
  m.set_round_seconds(absl::ToDoubleSeconds(now - round.opened));
  if (store_ != nullptr) {
    std::vector<std::string> participants(round.accepted.begin(), round.accepted.end());
    std::sort(participants.begin(), participants.end());
    FEDGE_RETURN_IF_ERROR(store_->CommitRound(job.id, round.number, m, model,
                                              job.config.keep_checkpoints(), participants));
  } else {
    v1::RoundRecord r;
    r.set_job_id(job.id);
    r.set_round(round.number);
    r.set_state(v1::ROUND_STATE_COMPLETED);
    r.set_started_unix_ms(m.started_unix_ms());
    r.set_closed_unix_ms(m.closed_unix_ms());
    *r.mutable_metrics() = m;
    rounds_without_store_.push_back(std::move(r));
  }
  for (const std::string& id : round.accepted) {
    auto c = clients_.find(id);
    if (c != clients_.end()) c->second.record.set_rounds_participated(c->second.record.rounds_participated() + 1);
  }
  FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " round " << round.number << " done: "
                  << m.participants() << "/" << m.sampled() << " clients, test accuracy "
                  << m.test_accuracy() << ", loss " << m.test_loss();
  job.weights = std::move(next);
  job.completed_rounds = round.number;
  job.latest_metrics = m;
  job.failed_attempts = 0;
  job.round.reset();
  if (job.completed_rounds >= job.config.rounds()) {
    if (store_ != nullptr) {
      FEDGE_RETURN_IF_ERROR(store_->SetJobState(job.id, v1::JOB_STATE_FINISHED, ""));
    } else {
      FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, StatusOf(job.id));
      s.set_state(v1::JOB_STATE_FINISHED);
      past_jobs_[job.id] = s;
      past_models_[job.id] = model;
    }
    FEDGE_LOG(INFO) << "Coordinator: job " << job.id << " finished";
    job_.reset();
  }
  return absl::OkStatus();
}

}  // namespace fedge::server
