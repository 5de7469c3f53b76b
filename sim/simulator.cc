#include "sim/simulator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/local_trainer.h"
#include "server/model_weights.h"
#include "sim/device_model.h"

namespace fedge::sim {

// A trained client's result, handed from a training thread to the submitting thread.
struct TrainedUpdate {
  absl::StatusOr<client::LocalUpdate> update = absl::UnknownError("not trained");
  bool ready = false;
};

namespace {

constexpr char kEnrollmentToken[] = "fedge-sim";
constexpr uint64_t kAvailabilityStream = 0x6176616900000001ULL;
constexpr uint64_t kDropoutStream = 0x64726f7000000001ULL;
constexpr uint64_t kShuffleStream = 0x7368756600000001ULL;
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

// Examples a task trains on: epochs over the client's data, capped by max_steps batches.
int64_t ExamplesTrained(const v1::TaskHeader& task, int64_t num_examples) {
  const v1::LocalTraining& t = task.training();
  int64_t examples = static_cast<int64_t>(std::max(1, t.epochs())) * num_examples;
  if (t.max_steps() > 0) {
    examples = std::min<int64_t>(examples, static_cast<int64_t>(t.max_steps()) *
                                               std::max(1, t.batch_size()));
  }
  return examples;
}

}  // namespace

Simulator::Simulator(v1::SimConfig config, int threads)
    : config_(std::move(config)), threads_(threads), clock_(absl::FromUnixSeconds(1700000000)) {
  start_ = clock_.Now();
}

absl::StatusOr<std::unique_ptr<Simulator>> Simulator::Create(const v1::SimConfig& config,
                                                             SimulatorOptions options) {
  int threads = options.threads > 0 ? options.threads : config.threads();
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  std::unique_ptr<Simulator> sim(new Simulator(config, threads));
  FEDGE_ASSIGN_OR_RETURN(sim->data_, MakeClientDataSource(sim->config_));
  server::CoordinatorOptions copts;
  copts.clock = &sim->clock_;
  copts.enrollment_token = kEnrollmentToken;
  // Virtual clients never go silent: availability is modelled per round (simulator.h).
  copts.liveness_timeout = absl::Hours(24 * 365 * 10);
  copts.aggregation_threads = 1;
  copts.evaluation_data = sim->data_->TestData();
  copts.accept_requested_client_ids = true;       // "v00000042": see RegisterPopulation
  copts.dp_noise_seed = sim->config_.seed();      // DP noise reproducible from the seed
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
  // Names and tokens are packed into two strings (no per-client allocation: this runs for
  // 100,000).
  names_.reserve(static_cast<size_t>(n) * 9);
  name_offsets_.reserve(static_cast<size_t>(n) + 1);
  token_offsets_.reserve(static_cast<size_t>(n) + 1);
  name_offsets_.push_back(0);
  token_offsets_.push_back(0);
  for (int64_t i = 0; i < n; ++i) {
    const std::string id = absl::StrFormat("v%08d", i);
    v1::RegisterRequest r;
    r.set_enrollment_token(kEnrollmentToken);
    r.set_previous_client_id(id);
    *r.mutable_profile() = ProfileOf(DrawDevice(config_, i), data_->NumExamples(i));
    FEDGE_ASSIGN_OR_RETURN(v1::RegisterResponse resp, coordinator_->Register(r));
    if (resp.client_id() != id) {
      return absl::InternalError(absl::StrCat("Simulator: client ", i, " registered as ",
                                              resp.client_id(), ", not ", id));
    }
    if (i == 0) tokens_.reserve(static_cast<size_t>(n) * resp.session_token().size());
    names_ += id;
    tokens_ += resp.session_token();
    name_offsets_.push_back(static_cast<uint32_t>(names_.size()));
    token_offsets_.push_back(static_cast<uint32_t>(tokens_.size()));
  }
  return absl::OkStatus();
}

std::string_view Simulator::ClientId(int64_t client) const {
  const size_t i = static_cast<size_t>(client);
  return std::string_view(names_).substr(name_offsets_[i], name_offsets_[i + 1] - name_offsets_[i]);
}

std::string_view Simulator::Token(int64_t client) const {
  const size_t i = static_cast<size_t>(client);
  return std::string_view(tokens_).substr(token_offsets_[i],
                                          token_offsets_[i + 1] - token_offsets_[i]);
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
    if (!coordinator_->running_job().has_value()) return std::nullopt;
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
  for (int64_t c = 0; c < config_.population(); ++c) {
    if (!always_online) {
      const double p = availability.kind_case() == v1::Distribution::kConstant
                           ? availability.constant()
                           : DrawDevice(config_, c).availability;
      if (!(base::Rng(online_seed, static_cast<uint64_t>(c)).Uniform() < p)) continue;
    }
    FEDGE_ASSIGN_OR_RETURN(std::optional<server::TaskAssignment> task,
                           coordinator_->FetchTask(std::string(ClientId(c)), std::string(Token(c))));
    if (!task.has_value()) continue;
    ClientRun run;
    run.client = c;
    run.task = *std::move(task);
    runs.push_back(std::move(run));
  }

  // Virtual times, dropouts and stragglers.
  const double deadline = config_.job().round_policy().deadline_seconds();
  const uint64_t dropout_seed = MixSeed(seed, kDropoutStream, static_cast<uint64_t>(round),
                                        static_cast<uint64_t>(attempt));
  int dropouts = 0, stragglers = 0;
  std::vector<ClientRun*> training;
  for (ClientRun& run : runs) {
    const DeviceModel device = DrawDevice(config_, run.client);
    const server::TaskAssignment& t = run.task;
    int64_t down = server::EncodedModelBytes(*t.model, t.model_encoding);
    if (t.teacher != nullptr) down += server::EncodedModelBytes(*t.teacher, t.teacher_encoding);
    v1::TensorEncoding up_encoding = t.header.update_encoding();
    if (up_encoding == v1::TENSOR_ENCODING_UNSPECIFIED) up_encoding = v1::TENSOR_ENCODING_FLOAT32;
    const int64_t up = server::EncodedModelBytes(*t.model, up_encoding);
    run.finish_s = VirtualRoundSeconds(device, down, up,
                                       ExamplesTrained(t.header, data_->NumExamples(run.client)));
    run.dropout = base::Rng(dropout_seed, static_cast<uint64_t>(run.client)).Uniform() < device.dropout;
    run.straggler = !run.dropout && deadline > 0 && run.finish_s >= deadline;
    dropouts += run.dropout;
    stragglers += run.straggler;
    if (!run.dropout && !run.straggler) training.push_back(&run);
  }
  // Submission order: finish time, then client index.
  std::sort(training.begin(), training.end(), [](const ClientRun* a, const ClientRun* b) {
    return a->finish_s != b->finish_s ? a->finish_s < b->finish_s : a->client < b->client;
  });
  FEDGE_RETURN_IF_ERROR(TrainAndSubmit(training, opened));

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
    rep.train_loss = m.train_loss();
    rep.sampled = m.sampled();
    rep.participants = m.participants();
    rep.dropped = m.sampled() - m.participants();
    rep.offline = m.sampled() - static_cast<int>(runs.size());
    rep.dropouts = dropouts;
    rep.stragglers = stragglers;
    rep.examples = m.examples();
    rep.bytes_up = m.bytes_up();
    rep.bytes_down = m.bytes_down();
    rep.epsilon = m.epsilon();
  }
  return result;
}

absl::Status Simulator::TrainAndSubmit(std::vector<ClientRun*>& runs, absl::Time opened) {
  const size_t n = runs.size();
  if (n == 0) return absl::OkStatus();
  std::vector<TrainedUpdate> results(n);
  absl::Mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  // Finished updates wait in `results` until their turn; a worker stays at most this far
  // ahead of the submitter, so memory is bounded by the window, not by K.
  const size_t window = static_cast<size_t>(4 * threads_);
  size_t submitted = 0;  // guarded by mu
  const int64_t round = runs.front()->task.header.round();
  auto work = [&] {
    while (!stop.load()) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      {
        absl::MutexLock lock(&mu);
        auto in_window = [&] { return stop.load() || i < submitted + window; };
        mu.Await(absl::Condition(&in_window));
      }
      if (stop.load()) return;
      const ClientRun& run = *runs[i];
      absl::StatusOr<client::LocalUpdate> update = [&]() -> absl::StatusOr<client::LocalUpdate> {
        const data::Dataset d = data_->ClientData(run.client);
        FEDGE_ASSIGN_OR_RETURN(
            client::LocalTrainingOptions options,
            client::OptionsFromTask(run.task.header,
                                    MixSeed(config_.seed(), kShuffleStream,
                                            static_cast<uint64_t>(run.client),
                                            static_cast<uint64_t>(round))));
        options.teacher = run.task.teacher.get();  // in-process: fp32 and unencoded
        return client::TrainLocally(*run.task.model, d, options);
      }();
      absl::MutexLock lock(&mu);
      results[i].update = std::move(update);
      results[i].ready = true;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads_; ++t) pool.emplace_back(work);
  absl::Status status;
  for (size_t i = 0; i < n && status.ok(); ++i) {
    TrainedUpdate ready;
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(&results[i].ready));
      ready = std::move(results[i]);
      results[i] = TrainedUpdate{};
    }
    if (!ready.update.ok()) {
      status = absl::Status(ready.update.status().code(),
                            absl::StrCat("Simulator: client ", runs[i]->client, ": ",
                                         ready.update.status().message()));
    } else {
      AdvanceTo(opened + absl::Seconds(runs[i]->finish_s));
      status = Submit(*runs[i], ready);
    }
    absl::MutexLock lock(&mu);
    submitted = i + 1;
  }
  if (!status.ok()) {
    absl::MutexLock lock(&mu);
    stop.store(true);
  }
  for (std::thread& t : pool) t.join();
  return status;
}

absl::Status Simulator::Submit(const ClientRun& run, const TrainedUpdate& trained) {
  const client::LocalUpdate& update = *trained.update;
  const v1::TaskHeader& task = run.task.header;
  const std::string id(ClientId(run.client));
  v1::UpdateHeader h;
  h.set_client_id(id);
  h.set_session_token(std::string(Token(run.client)));
  h.set_job_id(task.job_id());
  h.set_round(task.round());
  h.set_task_id(task.task_id());
  h.set_num_examples(update.num_examples);
  h.mutable_metrics()->set_train_loss(update.train_loss);
  h.mutable_metrics()->set_train_accuracy(update.train_accuracy);
  h.mutable_metrics()->set_steps(update.steps);
  // The virtual training time, not the host's: metrics must not depend on the machine.
  h.mutable_metrics()->set_train_seconds(run.finish_s);
  v1::TensorEncoding up_encoding = task.update_encoding();
  if (up_encoding == v1::TENSOR_ENCODING_UNSPECIFIED) up_encoding = v1::TENSOR_ENCODING_FLOAT32;
  return coordinator_->SubmitUpdate(
      h, server::UpdateFromDeltaProto(id, static_cast<double>(update.num_examples), update.delta),
      server::EncodedModelBytes(update.delta, up_encoding));
}

}  // namespace fedge::sim
