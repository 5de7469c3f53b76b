#include "sim/simulator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/device_round.h"
#include "client/fedcg_device.h"
#include "client/fedcg_trainer.h"
#include "client/local_trainer.h"
#include "data/token_windows.h"
#include "google/protobuf/message_lite.h"
#include "model/fedcg_nets.h"
#include "model/serialize.h"
#include "model/transformer.h"
#include "server/model_weights.h"
#include "server/round_report.h"
#include "sim/device_model.h"
#include "sim/training_share.h"

namespace fedge::sim {

// The device copies of a language-model job's base (client::LanguageModelForTask): a
// virtual device borrows one for its round (TrainLanguageModelTask sets its task's
// adapters) and gives it back, so there are at most as many as training threads. The base
// file is read at the first borrow and kept; copies for another job or adapter spec are
// dropped. Thread-safe.
class DeviceLanguageModels {
 public:
  explicit DeviceLanguageModels(const v1::SimConfig& config) : config_(config) {}

  absl::StatusOr<std::unique_ptr<model::TransformerLM>> Borrow(const v1::TaskHeader& task) {
    std::shared_ptr<const v1::ModelProto> file;
    {
      absl::MutexLock lock(&mu_);
      const std::string key = Key(task);
      if (key != key_) {
        free_.clear();
        key_ = key;
      }
      if (!free_.empty()) {
        std::unique_ptr<model::TransformerLM> m = std::move(free_.back());
        free_.pop_back();
        return m;
      }
      if (file_ == nullptr) {
        FEDGE_ASSIGN_OR_RETURN(
            const std::string path,
            server::ResolveDataPath(config_.data_root(), config_.job().language_model().base_path()));
        FEDGE_ASSIGN_OR_RETURN(v1::ModelProto loaded, model::LoadModel(path));
        file_ = std::make_shared<const v1::ModelProto>(std::move(loaded));
      }
      file = file_;
    }
    return client::LanguageModelForTask(
        task, [&]() -> absl::StatusOr<v1::ModelProto> { return *file; });
  }

  void Return(const v1::TaskHeader& task, std::unique_ptr<model::TransformerLM> m) {
    absl::MutexLock lock(&mu_);
    if (Key(task) == key_) free_.push_back(std::move(m));
  }

 private:
  static std::string Key(const v1::TaskHeader& task) {
    return task.job_id() + "\n" + task.language_model().SerializeAsString();
  }
  const v1::SimConfig& config_;
  absl::Mutex mu_;
  std::shared_ptr<const v1::ModelProto> file_ ABSL_GUARDED_BY(mu_);
  std::string key_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<model::TransformerLM>> free_ ABSL_GUARDED_BY(mu_);
};

namespace {

constexpr char kEnrollmentToken[] = "fedge-sim";
constexpr uint64_t kAvailabilityStream = 0x6176616900000001ULL;
constexpr uint64_t kDropoutStream = 0x64726f7000000001ULL;
// Secure aggregation: the phase a dropping device drops at.
constexpr uint64_t kDropoutPhaseStream = 0x64726f7000000002ULL;
constexpr int kMaxFailedAttempts = 100;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

v1::DeviceProfile ProfileOf(const DeviceModel& device, int64_t examples) {
  v1::DeviceProfile p;
  p.set_memory_budget_bytes(device.memory_budget_bytes);
  p.set_num_examples(examples);
  p.set_platform("fedge-sim");
  // A coarse class from the speed, for tier rules that ask for one.
  p.set_compute_class(device.compute_speed >= 5000   ? v1::COMPUTE_CLASS_HIGH
                      : device.compute_speed >= 500 ? v1::COMPUTE_CLASS_MEDIUM
                                                     : v1::COMPUTE_CLASS_LOW);
  return p;
}

// Examples a task trains on: epochs over the client's data, capped by max_steps batches
// (FedCG: its GAN epochs too; a language model: tokens, batches of batch_size windows).
int64_t ExamplesTrained(const v1::TaskHeader& task, int64_t num_examples) {
  const v1::LocalTraining& t = task.training();
  int64_t examples = static_cast<int64_t>(std::max(1, t.epochs())) * num_examples;
  if (task.has_fed_cg()) examples += static_cast<int64_t>(task.fed_cg().gan_epochs()) * num_examples;
  if (t.max_steps() > 0) {
    const int64_t per_example =
        task.has_language_model() ? std::max(1, task.language_model().window()) : 1;
    examples = std::min<int64_t>(examples, static_cast<int64_t>(t.max_steps()) *
                                               std::max(1, t.batch_size()) * per_example);
  }
  return examples;
}

// A FedCG client's examples as its networks take them, split into what it trains on and
// what it evaluates on (its client_test_sets test half, else its held-out share), as a
// device splits them.
absl::StatusOr<client::FedCgDeviceData> FedCgClientData(int64_t client, const v1::TaskHeader& task,
                                                        const ClientDataSource& data) {
  const data::Dataset test = data.ClientTestData(client);
  return client::FedCgDevice::PrepareData(task, Simulator::ClientId(client),
                                          data.ClientData(client), &test);
}

// What trains a job: the clients' data and, for language models, the devices' base copies.
struct Trainers {
  const ClientDataSource& data;
  DeviceLanguageModels& language_models;
};

absl::StatusOr<client::LocalUpdate> TrainLanguageModel(const TrainingJob& job,
                                                       const Trainers& with) {
  FEDGE_ASSIGN_OR_RETURN(
      data::TokenWindows text,
      data::TokenWindows::Create(with.data.ClientTokens(job.client),
                                 job.header->language_model().window()));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<model::TransformerLM> device_model,
                         with.language_models.Borrow(*job.header));
  absl::StatusOr<client::LocalUpdate> update =
      client::TrainLanguageModelTask(*job.header, *job.model, *device_model, text, job.seed);
  with.language_models.Return(*job.header, std::move(device_model));
  return update;
}

absl::StatusOr<client::LocalUpdate> Train(const TrainingJob& job, const Trainers& with) {
  const ClientDataSource& data = with.data;
  if (job.header->has_language_model()) return TrainLanguageModel(job, with);
  if (job.fedcg != nullptr) {
    FEDGE_ASSIGN_OR_RETURN(client::FedCgDeviceData d, FedCgClientData(job.client, *job.header, data));
    return job.fedcg->RunTask(*job.header, *job.model, Simulator::ClientId(job.client), d);
  }
  const data::Dataset d = data.ClientData(job.client);
  return client::TrainTask(*job.header, *job.model, job.teacher, d, job.seed);
}

// Trains `jobs` on `threads` threads and hands each result to `consume` on the calling
// thread, in the order of `jobs`. A thread stays at most 4 × threads jobs ahead of
// `consume`, so the finished updates waiting for their turn are bounded by the window, not
// by the number of jobs. Stops at the first error `consume` returns, and returns it.
absl::Status TrainInOrder(
    const std::vector<TrainingJob>& jobs, const Trainers& with, int threads,
    const std::function<absl::Status(size_t, absl::StatusOr<client::LocalUpdate>)>& consume) {
  struct Result {
    absl::StatusOr<client::LocalUpdate> update = absl::UnknownError("not trained");
    bool ready = false;
  };
  const size_t n = jobs.size();
  if (n == 0) return absl::OkStatus();
  std::vector<Result> results(n);
  absl::Mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  const size_t window = static_cast<size_t>(4 * threads);
  size_t consumed = 0;  // guarded by mu
  auto work = [&] {
    while (!stop.load()) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      {
        absl::MutexLock lock(&mu);
        auto in_window = [&] { return stop.load() || i < consumed + window; };
        mu.Await(absl::Condition(&in_window));
      }
      if (stop.load()) return;
      absl::StatusOr<client::LocalUpdate> update = Train(jobs[i], with);
      absl::MutexLock lock(&mu);
      results[i].update = std::move(update);
      results[i].ready = true;
    }
  };
  std::vector<std::thread> pool;
  const size_t pool_size = std::min(n, static_cast<size_t>(std::max(1, threads)));
  for (size_t t = 0; t < pool_size; ++t) pool.emplace_back(work);
  absl::Status status;
  for (size_t i = 0; i < n && status.ok(); ++i) {
    Result ready;
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&results[i].ready));
      ready = std::move(results[i]);
      results[i] = Result{};
    }
    status = consume(i, std::move(ready.update));
    absl::MutexLock lock(&mu);
    consumed = i + 1;
  }
  if (!status.ok()) {
    absl::MutexLock lock(&mu);
    stop.store(true);
  }
  for (std::thread& t : pool) t.join();
  return status;
}

}  // namespace

int TrainingThreads(const v1::SimConfig& config, const SimulatorOptions& options) {
  if (options.threads > 0) return options.threads;
  if (config.threads() > 0) return config.threads();
  const int ranks_here = options.cluster != nullptr ? std::max(1, options.cluster->local_size()) : 1;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / ranks_here);
}

absl::Status RunTrainingWorker(const v1::SimConfig& config, const SimulatorOptions& options) {
  Cluster* cluster = options.cluster;
  if (cluster == nullptr || cluster->rank() == 0) {
    return absl::InvalidArgumentError("RunTrainingWorker: needs a cluster rank other than 0");
  }
  if (config.job().strategy().has_fed_cg()) {
    return absl::UnimplementedError(
        "Simulator: FedCG jobs run in one process (each virtual client's private E and D live "
        "on rank 0); run fedge-sim without mpirun");
  }
  const int threads = TrainingThreads(config, options);
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<ClientDataSource> data, MakeClientDataSource(config));
  DeviceLanguageModels language_models(config);
  const Trainers with{*data, language_models};
  while (true) {
    const absl::StatusOr<std::string> message = cluster->Receive(0);
    if (!message.ok()) return message.status();
    MessageReader r(*message);
    const char kind = r.Kind();
    if (kind == kStopMessage) return absl::OkStatus();
    if (kind != kShareMessage) {
      return absl::InternalError("Simulator: an unknown message from rank 0");
    }
    Share share;
    FEDGE_RETURN_IF_ERROR(DecodeShare(r, config.population(), share));
    FEDGE_RETURN_IF_ERROR(TrainInOrder(
        share.jobs, with, threads,
        [&](size_t, absl::StatusOr<client::LocalUpdate> u) {
          return cluster->Send(0, EncodeResult(u));
        }));
  }
}

Simulator::Simulator(v1::SimConfig config, int threads, Cluster* cluster)
    : config_(std::move(config)),
      threads_(threads),
      cluster_(cluster),
      clock_(absl::FromUnixSeconds(1700000000)) {
  start_ = clock_.Now();
}

Simulator::~Simulator() {
  if (cluster_ == nullptr) return;
  const std::string stop(1, kStopMessage);
  for (int r = 1; r < cluster_->size(); ++r) cluster_->Send(r, stop).IgnoreError();
}

absl::StatusOr<std::unique_ptr<Simulator>> Simulator::Create(const v1::SimConfig& config,
                                                             SimulatorOptions options) {
  if (options.cluster != nullptr && options.cluster->rank() != 0) {
    return absl::InvalidArgumentError(
        "Simulator: runs on rank 0; other ranks run RunTrainingWorker");
  }
  if (config.job().strategy().has_fed_cg() && options.cluster != nullptr &&
      options.cluster->size() > 1) {
    return absl::UnimplementedError(
        "Simulator: FedCG jobs run in one process (each virtual client's private E and D live "
        "on rank 0); run fedge-sim without mpirun");
  }
  std::unique_ptr<Simulator> sim(
      new Simulator(config, TrainingThreads(config, options), options.cluster));
  sim->on_upload_ = options.on_upload;
  if (config.job().strategy().has_fed_cg()) {
    sim->fedcg_.resize(static_cast<size_t>(config.population()));
  }
  FEDGE_ASSIGN_OR_RETURN(sim->data_, MakeClientDataSource(sim->config_));
  sim->language_models_ = std::make_unique<DeviceLanguageModels>(sim->config_);
  server::CoordinatorOptions copts;
  copts.clock = &sim->clock_;
  copts.enrollment_token = kEnrollmentToken;
  // Virtual clients never go silent: availability is modelled per round (simulator.h).
  copts.liveness_timeout = absl::Hours(24 * 365 * 10);
  copts.aggregation_threads = 1;
  copts.evaluation_data = sim->data_->TestData();
  copts.evaluation_text = sim->data_->EvaluationText();
  copts.data_root = sim->config_.data_root();
  copts.accept_requested_client_ids = true;       // "v00000042": see RegisterPopulation
  copts.dp_noise_seed = sim->config_.seed();      // DP noise reproducible from the seed
  copts.secure_aggregation_phase_timeout = kSecAggPhaseTimeout;
  FEDGE_ASSIGN_OR_RETURN(sim->coordinator_, server::Coordinator::Create(copts, nullptr));
  FEDGE_RETURN_IF_ERROR(sim->RegisterPopulation());
  FEDGE_ASSIGN_OR_RETURN(sim->job_id_, sim->coordinator_->StartJob(sim->config_.job()));
  return sim;
}

absl::Status Simulator::RegisterPopulation() {
  const int64_t n = config_.population();
  // Virtual client i is "v00000042" (CoordinatorOptions.accept_requested_client_ids): the
  // coordinator's sample (over sorted ids) maps to the same virtual clients in every run, and
  // per-client seeds derived from the id (random-subset sub-models) are reproducible.
  // Ids are not stored (ClientId rebuilds them); tokens are packed into one string, 32 raw
  // bytes each (no per-client allocation: this runs for 100,000).
  tokens_.reserve(static_cast<size_t>(n) * kTokenBytes);
  coordinator_->ReserveClients(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const std::string id = ClientId(i);
    v1::RegisterRequest r;
    r.set_enrollment_token(kEnrollmentToken);
    r.set_previous_client_id(id);
    *r.mutable_profile() =
        ProfileOf(DrawDevice(config_, i), attack_.ClaimedExamples(i, data_->NumExamples(i)));
    FEDGE_ASSIGN_OR_RETURN(v1::RegisterResponse resp, coordinator_->Register(r));
    if (resp.client_id() != id) {
      return absl::InternalError(absl::StrCat("Simulator: client ", i, " registered as ",
                                              resp.client_id(), ", not ", id));
    }
    const std::string raw = absl::HexStringToBytes(resp.session_token());
    if (raw.size() != kTokenBytes || absl::BytesToHexString(raw) != resp.session_token()) {
      return absl::InternalError(absl::StrCat("Simulator: client ", i,
                                              "'s session token is not ", 2 * kTokenBytes,
                                              " lowercase hex characters"));
    }
    tokens_ += raw;
  }
  return absl::OkStatus();
}

std::string Simulator::ClientId(int64_t client) { return absl::StrFormat("v%08d", client); }

std::string Simulator::Token(int64_t client) const {
  return absl::BytesToHexString(
      absl::string_view(tokens_).substr(static_cast<size_t>(client) * kTokenBytes, kTokenBytes));
}

void Simulator::AdvanceTo(absl::Time t) {
  const absl::Duration d = t - clock_.Now();
  if (d > absl::ZeroDuration()) clock_.Advance(d);
}

absl::Status Simulator::Run(const std::function<void(const RoundReport&)>& on_round) {
  while (true) {
    FEDGE_ASSIGN_OR_RETURN(std::optional<RoundReport> report, RunRound());
    if (!report.has_value()) return absl::OkStatus();
    if (on_round) on_round(*report);
  }
}

absl::StatusOr<std::optional<RoundReport>> Simulator::RunRound() {
  if (wall_start_ns_ < 0) wall_start_ns_ = NowNs();
  for (int attempt = 0; attempt < kMaxFailedAttempts; ++attempt) {
    if (!coordinator_->running_job().has_value()) {
      // The job is over: done, or failed (round_policy.max_failed_attempts) with a reason.
      FEDGE_ASSIGN_OR_RETURN(const v1::JobStatus status, coordinator_->GetJob(job_id_));
      if (status.state() == v1::JOB_STATE_FAILED) {
        return absl::FailedPreconditionError(absl::StrCat(
            "Simulator: the job failed: ", status.message(),
            " (too many offline clients, dropouts or stragglers for job.round_policy?)"));
      }
      return std::nullopt;
    }
    FEDGE_ASSIGN_OR_RETURN(Attempt a, RunAttempt(attempt));
    if (a.completed) {
      a.report.attempts = attempt + 1;
      return std::optional<RoundReport>(a.report);
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "Simulator: ", kMaxFailedAttempts, " attempts in a row closed below the quorum of ",
      config_.job().round_policy().quorum(),
      " (too many offline clients, dropouts or stragglers for job.round_policy)"));
}

absl::StatusOr<Simulator::Attempt> Simulator::RunAttempt(int attempt) {
  const absl::Time opened = clock_.Now();
  FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  FEDGE_ASSIGN_OR_RETURN(v1::JobStatus status, coordinator_->GetJob(job_id_));
  if (status.state() != v1::JOB_STATE_RUNNING) return Attempt{};
  const int64_t round = status.current_round();
  if (round == 0) {
    return absl::FailedPreconditionError(
        "Simulator: the coordinator opened no round (fewer registered clients than the "
        "job's quorum or selection.min_registered)");
  }

  // Every online client polls; the sampled ones get their task.
  const uint64_t seed = config_.seed();
  const v1::Distribution& availability = config_.devices().availability();
  const bool always_online =
      availability.kind_case() == v1::Distribution::kConstant && availability.constant() >= 1;
  const uint64_t online_seed = MixSeed(seed, kAvailabilityStream, static_cast<uint64_t>(round),
                                       static_cast<uint64_t>(attempt));
  std::vector<ClientRun> runs;
  DecodedModels decoded;
  for (int64_t c = 0; c < config_.population(); ++c) {
    if (!always_online) {
      const double p = availability.kind_case() == v1::Distribution::kConstant
                           ? availability.constant()
                           : DrawDevice(config_, c).availability;
      if (!(base::Rng(online_seed, static_cast<uint64_t>(c)).Uniform() < p)) continue;
    }
    FEDGE_ASSIGN_OR_RETURN(std::optional<server::TaskAssignment> task,
                           coordinator_->FetchTask(ClientId(c), Token(c)));
    if (!task.has_value()) continue;
    ClientRun run;
    run.client = c;
    FEDGE_RETURN_IF_ERROR(Deliver(*std::move(task), decoded, run));
    runs.push_back(std::move(run));
  }

  // Virtual times, dropouts and stragglers.
  const double deadline = config_.job().round_policy().deadline_seconds();
  const uint64_t dropout_seed = MixSeed(seed, kDropoutStream, static_cast<uint64_t>(round),
                                        static_cast<uint64_t>(attempt));
  int dropouts = 0, stragglers = 0, declined = 0;
  std::vector<ClientRun*> training;
  for (ClientRun& run : runs) {
    if (run.declined) {
      ++declined;
      continue;
    }
    const DeviceModel device = DrawDevice(config_, run.client);
    const server::TaskAssignment& t = run.task;
    const int64_t down = run.bytes_down;
    v1::TensorEncoding up_encoding = t.header.update_encoding();
    if (up_encoding == v1::TENSOR_ENCODING_UNSPECIFIED) up_encoding = v1::TENSOR_ENCODING_FLOAT32;
    const int64_t up = server::RoundPlanner::EncodedBytes(*t.model, up_encoding);
    run.finish_s = VirtualRoundSeconds(device, down, up,
                                       ExamplesTrained(t.header, data_->NumExamples(run.client)));
    run.dropout = base::Rng(dropout_seed, static_cast<uint64_t>(run.client)).Uniform() < device.dropout;
    if (run.dropout && t.header.has_secure_aggregation()) {
      // It drops at a phase drawn from the four: before its keys (it never trains), or
      // before a later message (it trains and sends its keys).
      run.secagg_drop_phase = static_cast<int>(
          base::Rng(MixSeed(dropout_seed, kDropoutPhaseStream), static_cast<uint64_t>(run.client))
              .UniformInt(4));
      run.dropout = run.secagg_drop_phase == 0;
    }
    run.straggler = !run.dropout && deadline > 0 && run.finish_s >= deadline;
    dropouts += run.dropout || run.secagg_drop_phase > 0;
    stragglers += run.straggler;
    if (!run.dropout && !run.straggler) training.push_back(&run);
  }
  // Submission order: finish time, then client index.
  std::sort(training.begin(), training.end(), [](const ClientRun* a, const ClientRun* b) {
    return a->finish_s != b->finish_s ? a->finish_s < b->finish_s : a->client < b->client;
  });
  FEDGE_RETURN_IF_ERROR(TrainAndSubmit(training, opened));
  const bool secure = !runs.empty() && runs.front().task.header.has_secure_aggregation();
  if (secure) FEDGE_RETURN_IF_ERROR(RunSecurePhases(training, opened));

  // Close: when the last survivor is in, or at the deadline.
  double last = 0;
  for (const ClientRun* r : training) last = std::max(last, r->finish_s);
  AdvanceTo(opened + absl::Seconds(last));
  FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  FEDGE_ASSIGN_OR_RETURN(status, coordinator_->GetJob(job_id_));
  if (status.state() == v1::JOB_STATE_RUNNING && status.current_round() == round) {
    if (deadline <= 0) {
      return absl::InternalError(
          "Simulator: the round is still waiting for clients and has no deadline");
    }
    AdvanceTo(opened + absl::Seconds(deadline));
    FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> records,
                         coordinator_->ListRounds(job_id_, round));
  Attempt result;
  for (const v1::RoundRecord& r : records) {
    if (r.round() != round || r.state() != v1::ROUND_STATE_COMPLETED) continue;
    const v1::RoundMetrics& m = r.metrics();
    RoundReport& rep = result.report;
    result.completed = true;
    rep.round = round;
    rep.virtual_time_s = absl::ToDoubleSeconds(clock_.Now() - start_);
    rep.round_virtual_s = m.round_seconds();
    rep.wall_time_s = static_cast<double>(NowNs() - wall_start_ns_) * 1e-9;
    rep.evaluated = m.evaluated();
    rep.test_accuracy = m.test_accuracy();
    rep.test_loss = m.test_loss();
    rep.test_perplexity = m.test_perplexity();
    rep.train_loss = m.train_loss();
    rep.sampled = m.sampled();
    rep.participants = m.participants();
    rep.dropped = m.sampled() - m.participants();
    rep.rejected = m.rejected();
    rep.offline = m.sampled() - static_cast<int>(runs.size());
    rep.dropouts = dropouts;
    rep.stragglers = stragglers;
    rep.examples = m.examples();
    rep.bytes_up = m.bytes_up();
    rep.bytes_down = m.bytes_down();
    rep.epsilon = m.epsilon();
    rep.dp_clip_norm = m.dp_clip_norm();
    rep.dp_unclipped_fraction = m.dp_unclipped_fraction();
    rep.dp_next_clip_norm = m.dp_next_clip_norm();
    rep.declined = declined;
    if (m.has_robustness()) {
      rep.bounded = true;
      rep.bound_norm = m.robustness().norm_bound();
      rep.bound_clipped = m.robustness().clipped();
      rep.bound_weight_capped = m.robustness().weight_capped();
      rep.bound_excluded = m.robustness().excluded();
    }
    if (secure) FEDGE_RETURN_IF_ERROR(CheckReleasedSum(training, m.secure_aggregation(), rep));
    if (m.has_fed_cg()) {
      rep.fed_cg = true;
      rep.fedcg_reported_accuracy = m.fed_cg().client_accuracy();
      rep.fedcg_first_kl = m.fed_cg().first_kl();
      rep.fedcg_last_kl = m.fed_cg().last_kl();
      rep.fedcg_synthetic_accuracy = m.fed_cg().synthetic_accuracy();
    }
  }
  if (result.completed && result.report.fed_cg) {
    // The paper's figure of this round: the participants' E with the new global C.
    FEDGE_ASSIGN_OR_RETURN(result.report.test_accuracy, FedCgClientAccuracy(training));
    result.report.evaluated = true;
    result.report.test_loss = 0;
  }
  return result;
}

absl::StatusOr<double> Simulator::FedCgClientAccuracy(const std::vector<ClientRun*>& runs) {
  FEDGE_ASSIGN_OR_RETURN(const v1::ModelProto global, coordinator_->ExportModel(job_id_));
  double correct = 0;
  int64_t examples = 0;
  for (const ClientRun* run : runs) {
    client::FedCgDevice* device = fedcg_[static_cast<size_t>(run->client)].get();
    client::FedCgClient* c = device != nullptr ? device->client() : nullptr;
    if (c == nullptr) continue;
    const v1::TaskHeader& h = run->task.header;
    FEDGE_ASSIGN_OR_RETURN(
        client::FedCgDeviceData d,
        FedCgClientData(run->client, h, *data_));
    if (d.eval.num_examples == 0) continue;
    FEDGE_ASSIGN_OR_RETURN(const double accuracy, c->Evaluate(global, d.eval));
    correct += accuracy * d.eval.num_examples;
    examples += d.eval.num_examples;
  }
  return examples > 0 ? correct / static_cast<double>(examples) : 0.0;
}

absl::Status Simulator::TrainAndSubmit(std::vector<ClientRun*>& runs, absl::Time opened) {
  const size_t n = runs.size();
  if (n == 0) return absl::OkStatus();
  const size_t ranks = static_cast<size_t>(this->ranks());
  std::vector<std::vector<TrainingJob>> shares(ranks);  // update i is trained by rank i mod P
  for (size_t i = 0; i < n; ++i) {
    const ClientRun& run = *runs[i];
    TrainingJob job;
    job.client = run.client;
    job.header = &run.task.header;
    job.model = run.task.model.get();
    job.teacher = run.task.teacher.get();
    // The shuffling seed a device derives (client/device_round.h), so a fleet whose devices
    // carry the sim's ids (fedge-client --client-id) trains on the same batches.
    job.seed = client::DeviceRoundSeeds(run.task.header, ClientId(run.client)).shuffle;
    if (run.task.header.has_fed_cg()) {
      // The client's FedCG state, made at its first task (its E and D in memory).
      std::unique_ptr<client::FedCgDevice>& c = fedcg_[static_cast<size_t>(run.client)];
      if (c == nullptr) c = std::make_unique<client::FedCgDevice>(client::FedCgDevice::Options{});
      job.fedcg = c.get();
    }
    shares[i % ranks].push_back(job);
  }
  for (size_t r = 1; r < ranks; ++r) {
    if (!shares[r].empty()) {
      FEDGE_RETURN_IF_ERROR(cluster_->Send(static_cast<int>(r), EncodeShare(shares[r])));
    }
  }
  auto submit = [&](size_t i, absl::StatusOr<client::LocalUpdate> update) -> absl::Status {
    if (!update.ok()) {
      // A device whose training fails (e.g. diverges on a poisoned model) abandons its task,
      // as fedge-client does: the round goes on without it.
      FEDGE_LOG(WARNING) << "Simulator: client " << runs[i]->client
                         << " abandons its task: " << update.status().message();
      return absl::OkStatus();
    }
    AdvanceTo(opened + absl::Seconds(runs[i]->finish_s));
    return Submit(*runs[i], *std::move(update));
  };
  // Updates next .. end-1 all belong to other ranks: take them in order.
  size_t next = 0;
  auto submit_remote_until = [&](size_t end) -> absl::Status {
    for (; next < end; ++next) {
      const int from = static_cast<int>(next % ranks);
      const absl::StatusOr<std::string> message = cluster_->Receive(from);
      if (!message.ok()) return message.status();
      FEDGE_RETURN_IF_ERROR(submit(next, DecodeResult(*message, from)));
    }
    return absl::OkStatus();
  };
  // This rank's share (all of it in one process) on the pool; the others' in between.
  FEDGE_RETURN_IF_ERROR(TrainInOrder(
      shares[0], Trainers{*data_, *language_models_}, threads_,
      [&](size_t k, absl::StatusOr<client::LocalUpdate> update) -> absl::Status {
        const size_t i = k * ranks;
        FEDGE_RETURN_IF_ERROR(submit_remote_until(i));
        FEDGE_RETURN_IF_ERROR(submit(i, std::move(update)));
        next = i + 1;
        return absl::OkStatus();
      }));
  return submit_remote_until(n);
}

CoordinatorLink Simulator::LinkOf(int64_t client) const {
  return CoordinatorLink(*coordinator_, ClientId(client), Token(client), &on_upload_);
}

absl::Status Simulator::Submit(ClientRun& run, client::LocalUpdate update) {
  // The virtual training time, not the host's: metrics must not depend on the machine.
  update.seconds = run.finish_s;
  FEDGE_RETURN_IF_ERROR(attack_.Poison(run.client, *run.task.model, update));
  if (run.task.header.has_secure_aggregation()) return StartSecureAggregation(run, update);
  CoordinatorLink link = LinkOf(run.client);
  return client::SendUpdate(run.task.header, update, ClientId(run.client), {}, link).status();
}

absl::Status Simulator::Deliver(server::TaskAssignment task, DecodedModels& decoded,
                                ClientRun& run) {
  FEDGE_ASSIGN_OR_RETURN(server::EncodedTask sent, encoder_.Encode(std::move(task)));
  const std::string id = ClientId(run.client);
  client::DeviceResources device;
  device.memory_budget_bytes = DrawDevice(config_, run.client).memory_budget_bytes;
  device.num_examples = data_->NumExamples(run.client);
  if (data_->TestData() != nullptr) {
    device.example_floats = static_cast<int64_t>(data_->TestData()->feature_size());
  }
  if (sent.header.has_fed_cg()) device.eval_examples = data_->ClientTestData(run.client).num_examples;
  absl::StatusOr<client::DeviceTask> admitted = client::AdmitTask(sent.header, device);
  run.task.header = sent.header;
  run.bytes_down = sent.header.total_bytes();
  if (absl::IsResourceExhausted(admitted.status())) {
    // Over the device's budget: it declines, as a fleet device does.
    run.declined = true;
    CoordinatorLink link = LinkOf(run.client);
    return link.Decline(sent.header,
                        client::DeclineHeader(sent.header, id, admitted.status().message()));
  }
  if (!admitted.ok()) {
    return absl::Status(admitted.status().code(),
                        absl::StrCat("Simulator: client ", run.client, " cannot take its task: ",
                                     admitted.status().message()));
  }
  const std::pair<const void*, const void*> key(
      sent.sections[0].get(), sent.sections.size() > 1 ? sent.sections[1].get() : nullptr);
  auto it = decoded.by_sections.find(key);
  if (it == decoded.by_sections.end()) {
    FEDGE_RETURN_IF_ERROR(client::DecodeTaskPayload(sent.Payload(), *admitted));
    DecodedModels::Models m;
    m.sections = sent.sections;
    m.model = std::make_shared<const v1::ModelProto>(std::move(admitted->model));
    if (admitted->teacher.has_value()) {
      m.teacher = std::make_shared<const v1::ModelProto>(*std::move(admitted->teacher));
    }
    it = decoded.by_sections.emplace(key, std::move(m)).first;
  }
  run.task.model = it->second.model;
  run.task.teacher = it->second.teacher;
  return absl::OkStatus();
}

}  // namespace fedge::sim
