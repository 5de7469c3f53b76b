// The round coordinator, transport-free (docs/architecture.md, "The round, as data flows").
// The gRPC services (server/grpc/) and the simulator call this same class; it never
// touches a socket. It sequences rooms that each own their state:
//
//   EnrollmentTokens (enrollment_tokens.h) who may enrol: the deployment's and named tokens
//   ClientRegistry  (registry.h)       enrollment, sessions, profiles, liveness, declines
//   OpenRound       (open_round.h)     the open round: its clients, tasks, answers, figures
//   RoundPlanner    (round_planner.h)  tiers, sub-models, teachers, the task header
//   update intake   (update_intake.h)  announcement checks, decoding, expansion, batching;
//                   its UpdateBound (update_bound.h): weight caps and the norm bound
//   RoundPrivacy    (round_privacy.h)  clip norms, noise, accountant, epsilon budget
//   SecureRound     (secure_round.h)   the secure-aggregation session of a round
//   RoundReport     (round_report.h)   evaluation and the round's per-tier/client figures
//   JobLedger       (job_ledger.h)     jobs' and rounds' records, in the store or memory
//   the job's aggregation::Strategy   server step, strategy-specific checks and figures
//
//   auto coordinator = Coordinator::Create(options, store);   // resumes a running job
//   coordinator->StartJob(config);                            // operators
//   coordinator->Register(request) / AwaitTask / SubmitPayload / Leave   // devices
//   coordinator->Tick();   // call periodically: opens and closes rounds
//
// Rounds. Tick opens round r when enough live clients are registered: it samples
// min(selection size, live) of them with Rng(selection.seed, r·1000 + attempt) and hands
// each a task on its next FetchTask. An update is accepted only from a sampled client, for
// the open round and task, once; a bad update (wrong shapes, NaN/Inf, bad weight) drops that
// client from the round, never the round. The round closes when every sampled client has
// answered or been dropped, or at its deadline; with at least `quorum` accepted updates it
// completes (strategy step, evaluation, and the round's metrics and model committed in one
// store transaction), otherwise it fails and is retried with a new sample.
//
// Sub-models (docs/submodels.md): each sampled client gets a tier and its task's model from
// the planner; its update arrives in the sub-model's shapes and is scattered back into the
// full shapes with coverage masks, so the aggregator averages every coordinate over the
// clients that held it. Each round's metrics list every sampled client (tier, outcome,
// bytes each way) and every tier (its sub-model evaluated on its own).
//
// Differential privacy (docs/privacy.md): central mode refuses updates over the round's
// clip norm, weighs every participant once, noises the aggregate and accounts for ε; with
// secure aggregation the devices add the noise and the coordinator only sees the sum. DP
// and secure aggregation with sub-model tiers are refused (UNIMPLEMENTED).
//
// Secure aggregation (privacy.secure_aggregation_threshold t > 0; Bonawitz et al. 2017, with
// SecAgg+ as an option): a round's sampled clients get a SecAgg session in their task
// header and answer with SecureAggregationStep (keys, shares, masked update, unmasking
// shares) instead of SubmitUpdate. Each phase closes when every client still in the round
// sent its message or at its deadline; fewer than t clients at any phase fail the round.
//
// FedCG (docs/fedcg.md): the central model holds only the shared classifier and generator;
// the strategy refuses updates carrying the devices' private extractor or discriminator and
// reports the devices' own evaluation, since the coordinator cannot evaluate centrally.
//
// Durability. With a Store, a restart (after a crash at any moment) resumes the running job
// from its last completed round: the round in flight is abandoned and rerun, and the server
// optimizer's state (FedAdam/FedYogi moments) is restored from the same checkpoint.
//
// Thread safety: every method is thread-safe. The registry and the ledger have locks of
// their own; the round's state is under one mutex, which a transport's long-poll waits on
// as a condition (AwaitTask). A closed round is completed without that mutex: once nobody
// is waiting in it, its aggregation, noise, server step, evaluation and commit run unlocked
// while other calls are answered (Tick and StopJob wait for it). So does a secure round's
// unmasking (from Tick; devices polling meanwhile are told to retry).
#ifndef FEDGE_SERVER_COORDINATOR_H_
#define FEDGE_SERVER_COORDINATOR_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"
#include "base/clock.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "model/sequential.h"
#include "model/submodel_slicer.h"
#include "privacy/dp.h"
#include "privacy/rdp_accountant.h"
#include "proto/coordinator.pb.h"
#include "proto/job.pb.h"
#include "proto/relay.pb.h"
#include "server/job_ledger.h"
#include "server/job_strategy.h"
#include "server/open_round.h"
#include "server/registry.h"
#include "server/round_planner.h"
#include "server/enrollment_tokens.h"
#include "server/round_privacy.h"
#include "server/round_report.h"
#include "server/secure_round.h"
#include "server/session_token.h"
#include "server/store.h"
#include "server/update_bound.h"
#include "server/update_intake.h"

namespace fedge::server {

struct CoordinatorOptions {
  base::Clock* clock = nullptr;  // default: the system clock
  // The deployment's shared secret that devices present to Register. Required, except on
  // a relay (its root checks registrations).
  std::string enrollment_token;
  // A client that has not called FetchTask for this long is not sampled, and a sampled
  // client that goes quiet this long is dropped from the round.
  absl::Duration liveness_timeout = absl::Seconds(60);
  // How long a secure-aggregation phase waits for the devices still in it after the
  // previous phase's deadline. Zero: liveness_timeout.
  absl::Duration secure_aggregation_phase_timeout = absl::ZeroDuration();
  int aggregation_threads = 1;
  // Accepted updates are validated on arrival and held until `aggregation_batch` of them
  // (or `aggregation_batch_bytes` of their values) are there, then accumulated in one pass
  // that reads the running sum once for all of them (WeightedMean::AccumulateBatch); the
  // round's last ones when it closes. 1 = accumulate each on arrival.
  int aggregation_batch = 8;
  int64_t aggregation_batch_bytes = int64_t{256} << 20;
  // The update bound (server/update_bound.h) holds a round's largest updates until it
  // closes, so that its adaptive bound is the whole round's: at most this many (≥ 1), and
  // at most this many bytes of their values (at least one update).
  int bound_held_updates = 64;
  int64_t bound_held_bytes = int64_t{256} << 20;
  // Called when a job starts or resumes, before its evaluation data is loaded, with its
  // model's parameter bytes (under the coordinator's mutex; it must not call back).
  // fedge-coordinator sizes the heap's freed-memory policy with it (base/memory.h).
  std::function<void(int64_t model_bytes)> on_job_model;
  // Evaluation data, already preprocessed. When null, StartJob loads the job's
  // EvaluationConfig (Fashion-MNIST's test split by default) and preprocesses it.
  std::shared_ptr<const data::Dataset> evaluation_data;
  // A language-model job's held-out text. When null, StartJob reads the job's
  // language_model.eval_text_path (under data_root), if it names one.
  std::shared_ptr<const std::vector<data::TextDocument>> evaluation_text;
  // The only directory a job's paths (evaluation.data_path) may name, relative to it
  // (server/round_report.h ResolveDataPath). Empty: jobs may name no path.
  std::string data_root;
  // Registrations per enrollment token (EnrollmentOptions): a burst, then a rate; 0 = no
  // limit (in-process callers; fedge-coordinator sets one).
  double registrations_per_token_per_second = 0;
  double registrations_per_token_burst = 2000;
  // Bounds on what a device may claim.
  int64_t max_examples_per_client = int64_t{1} << 30;
  // Trusted in-process callers that name their clients (the simulator): Register gives a
  // new client the id it asks for in previous_client_id (1-128 characters from
  // [A-Za-z0-9_.-]) instead of a random one. Never for a network-facing coordinator.
  bool accept_requested_client_ids = false;
  // Seeds the DP noise, for reproducible simulations only; unset: libsodium's CSPRNG.
  std::optional<uint64_t> dp_noise_seed;
  // A relay (docs/relays.md): this coordinator serves its devices' part of a root
  // coordinator's rounds. Its id among the root's relays (RelayIdError); empty: a root, or
  // a coordinator without relays. A relay has no store and starts no job: the job and its
  // rounds come from the root through Follow, a closed round becomes a partial aggregate
  // (TakePartial), and Register goes to the root through `upstream_register` (required).
  std::string relay_id;
  std::function<absl::StatusOr<v1::RegisterResponse>(const v1::RegisterRequest&)>
      upstream_register;
  // A relay closes its part of a round this long before the root's deadline, and at most
  // a tenth of the time left.
  absl::Duration relay_margin = absl::Seconds(5);
};

// A relay id: 1-64 characters from [A-Za-z0-9_.-]. INVALID_ARGUMENT otherwise.
absl::Status CheckRelayId(absl::string_view relay_id);
// The most device ids one relay sync may report.
inline constexpr int kMaxRelaySyncClients = 100000;

class Coordinator {
 public:
  // `store` may be null (state in memory only); otherwise it must outlive the coordinator.
  // With a store, resumes the most recent RUNNING job.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options,
                                                             Store* store);

  // ---- devices ----
  // UNAUTHENTICATED for a wrong enrollment token; INVALID_ARGUMENT for an impossible profile.
  // On a relay: the root registers the device (CoordinatorOptions.upstream_register) and
  // the relay keeps its session.
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request);
  // Makes room in the registry for `clients` clients in all, for a caller that registers a
  // known population at once (the simulator): the table is sized once instead of doubling
  // (each doubling leaves the old table's memory in the heap).
  void ReserveClients(size_t clients) { registry_.Reserve(clients); }
  // The client's task for the open round, if it was sampled and has not answered yet (a
  // client that lost its task may fetch it again); nullopt when there is nothing to do.
  // Marks the client live.
  absl::StatusOr<std::optional<TaskAssignment>> FetchTask(const std::string& client_id,
                                                          const std::string& session_token);
  // FetchTask held until the client has a task, `wait` passes, or `stop` returns true: a
  // long-poll for transports. It wakes when a round opens or the job changes (a condition,
  // not a sleep loop) and checks `stop` every 250 ms. Errors: FetchTask's.
  absl::StatusOr<std::optional<TaskAssignment>> AwaitTask(const std::string& client_id,
                                                          const std::string& session_token,
                                                          absl::Duration wait,
                                                          const std::function<bool()>& stop);
  // An update for the open round. `header` carries the client's credentials, job, round,
  // task id, example count and metrics; `update` the tensors (already reassembled by the
  // transport) and `payload_bytes` their size on the wire.
  absl::Status SubmitUpdate(const v1::UpdateHeader& header, aggregation::Update update,
                            int64_t payload_bytes);
  // Before an upload's payload is read: SubmitUpdate's checks of the header (credentials,
  // job, round, task, duplicate) and of what it announces (server/update_intake.h: FedCG's
  // private tensors, the exact payload size for the client's task model in the job's update
  // encoding). A bad announcement drops the client from the round and is returned (as
  // RejectUpdate). Returns the payload bytes the update must have.
  absl::StatusOr<int64_t> BeginUpload(const v1::UpdateHeader& header);
  // A whole encoded update, as a device sent it (reassembled by the transport, or straight
  // from a simulated device): BeginUpload's checks, the payload decoded against the
  // client's task (outside the lock), then SubmitUpdate. A payload that does not decode
  // drops the client from the round (INVALID_ARGUMENT naming the problem).
  absl::Status SubmitPayload(const v1::UpdateHeader& header, absl::string_view payload);
  // A transport found the update itself malformed (manifest or shapes that differ from the
  // task, non-finite values, a wrong byte count): when `header` names the client's open
  // task (same checks and errors as SubmitUpdate), drops the client from the round,
  // counts the update as rejected, and returns `reason`; otherwise returns the
  // SubmitUpdate-style error (UNAUTHENTICATED, FAILED_PRECONDITION, ALREADY_EXISTS).
  absl::Status RejectUpdate(const v1::UpdateHeader& header, const absl::Status& reason);
  // The device declines its task (UpdateHeader.refusal, e.g. over its memory budget): same
  // checks and errors as SubmitUpdate; the client leaves the round and the reason is kept
  // in the round's metrics. INVALID_ARGUMENT for an empty reason or one over 256 bytes.
  absl::Status DeclineTask(const v1::UpdateHeader& header);
  absl::Status Leave(const std::string& client_id, const std::string& session_token);
  // The running language-model job's base, for a device that asks by its SHA-256 (the
  // task's language_model.base_sha256: the file's bytes as the job read them when it
  // started; or base_int4_sha256: its int4 device form), held in memory while the job
  // runs. UNAUTHENTICATED without a session (the call marks the device live, as FetchTask
  // does); NOT_FOUND when no running job's base has that digest.
  absl::StatusOr<std::shared_ptr<const std::string>> BaseModel(const std::string& client_id,
                                                               const std::string& session_token,
                                                               const std::string& sha256);
  // An operator revokes a device: its session ends, it leaves the round in flight, and
  // its id is refused from now on (ClientRegistry::Revoke). NOT_FOUND for an unknown id.
  absl::StatusOr<v1::ClientRecord> RevokeDevice(const std::string& client_id);
  // The enrollment tokens (the deployment's and the operators' named ones).
  EnrollmentTokens& enrollment() { return enrollment_; }
  // One secure-aggregation message or poll (coordinator.proto, SecureAggregationStep). A bad
  // message drops the client from the round and returns the reason; the round goes on.
  absl::StatusOr<v1::SecAggStepResponse> SecureAggregationStep(const v1::SecAggStepRequest& request);

  // ---- operators ----
  // Validates the config (ValidateJobConfig) and starts it; returns the job id.
  // FAILED_PRECONDITION when a job is already running.
  absl::StatusOr<std::string> StartJob(const v1::JobConfig& config);
  absl::Status StopJob(const std::string& job_id);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  absl::StatusOr<std::vector<v1::RoundRecord>> ListRounds(const std::string& job_id,
                                                          int64_t from_round = 1);
  absl::StatusOr<std::vector<v1::ClientRecord>> ListClients() { return registry_.Records(); }
  // The job's current central model.
  absl::StatusOr<v1::ModelProto> ExportModel(const std::string& job_id);
  // The id of the running job, if any.
  std::optional<std::string> running_job() const;

  // ---- relays, the root's side (docs/relays.md) ----
  // A device registering through relay `relay_id`: Register, and the device is the relay's.
  absl::StatusOr<v1::RegisterResponse> RegisterThroughRelay(const std::string& relay_id,
                                                            const v1::RegisterRequest& request);
  // A relay's sync: its live devices count as live and as its own (at most
  // kMaxRelaySyncClients), and it learns what to serve: the running job, its model's
  // version and the open round's devices that are the relay's (none when relays cannot
  // serve the job: RelayUnsupported). INVALID_ARGUMENT for a bad relay id or too many ids.
  absl::StatusOr<v1::RelayAssignment> RelaySync(const v1::RelaySyncRequest& request);
  // The running job's central model and its version (completed rounds). NOT_FOUND when
  // `job_id` is not the running job.
  struct VersionedModel {
    v1::ModelProto model;
    int64_t version = 0;
  };
  absl::StatusOr<VersionedModel> RelayModel(const std::string& job_id);
  // The running job's model version (completed rounds), cheaply: NOT_FOUND as RelayModel.
  absl::StatusOr<int64_t> RelayModelVersion(const std::string& job_id) const;
  // The most bytes a relay's part of the running job can take serialized (exact sums with
  // coverage for every parameter, and room for the tensors' names); 0 without a job.
  int64_t RelayPartLimit() const;
  // A relay's part of the open round (its header, then its clients' summed updates as
  // Aggregator::Serialize wrote them). FAILED_PRECONDITION for another job, round or
  // attempt, or a round that is closing (the part comes too late; its clients were
  // dropped); INVALID_ARGUMENT for an aggregate that does not load or a part that does not
  // fit the round (OpenRound::AcceptPartial: the relay's clients are dropped).
  absl::Status SubmitPartial(const v1::PartialHeader& header, absl::string_view aggregate);

  // ---- relays, the relay's side ----
  // Whether Follow needs the central model for `assignment` (a new job or model version).
  bool NeedsModel(const v1::RelayAssignment& assignment) const;
  // Follows the root: ends the job the root no longer runs, takes up the root's job and
  // model (`model`: the central model at assignment.model_version, required when NeedsModel),
  // opens the root's round for the relay's devices with the plans the job's planner makes
  // from the same inputs as the root's, drops devices the root stopped waiting for, and
  // drops a round the root no longer waits on the relay for. FAILED_PRECONDITION on a
  // coordinator that is not a relay, or without a model it needs.
  absl::Status Follow(const v1::RelayAssignment& assignment, const v1::ModelProto* model);
  // The relay's part of its last closed round (Tick closes it when its devices answered or
  // its deadline passed), once.
  struct Partial {
    v1::PartialHeader header;
    std::string aggregate;
  };
  std::optional<Partial> TakePartial();
  // The devices that made an authenticated call since `since` (a relay's report).
  std::vector<std::string> SeenSince(absl::Time since) const { return registry_.SeenSince(since); }

  // ---- driving ----
  // Expires silent clients, opens a round when one can start, closes the open round when
  // everyone answered or its deadline passed. Errors are the store's (the coordinator stays
  // usable; the round is retried).
  absl::Status Tick();

 private:
  struct Job {
    std::string id;
    v1::JobConfig config;  // validated, defaults filled
    std::unique_ptr<aggregation::Strategy> strategy;
    aggregation::ModelWeights weights;
    int64_t completed_rounds = 0;
    int64_t num_parameters = 0;  // of the central model (secure aggregation's vector)
    // A language-model job's base file (its bytes, as read at the start) and its int4
    // device form, served by digest.
    std::shared_ptr<const std::string> base_file;
    std::shared_ptr<const std::string> base_int4_form;
    // Evaluation and the round's per-tier and per-client figures (server/round_report.h).
    std::unique_ptr<RoundReport> report;
    // Tiers, sub-models, teachers and task headers (server/round_planner.h).
    std::unique_ptr<RoundPlanner> planner;
    // Clip norms, noise, the accountant and the ε budget (server/round_privacy.h).
    std::unique_ptr<RoundPrivacy> privacy;
    // The open round: its clients, tasks, updates and figures (server/open_round.h).
    std::optional<OpenRound> round;
    int failed_attempts = 0;
    // CompleteRound is aggregating, evaluating and committing the closed round without the
    // lock: Tick does nothing and StopJob waits until it is done.
    bool completing = false;
    // CompleteRound is writing the round to the ledger (set under the lock just before):
    // readers of the ledger (GetJob, ListRounds) wait until the round is in memory too, so
    // that nobody sees a committed round beside the previous model or job state.
    bool committing = false;
    v1::RoundMetrics latest_metrics;
    // A root: why relays cannot serve this job ("": they can; RelayUnsupported).
    std::string relay_unsupported;
    // The round is being completed, or its secure session unmasked (AdvanceSecureRound from
    // Tick), without the lock.
    bool settling() const { return completing || (round.has_value() && round->unmasking()); }
  };

  Coordinator(CoordinatorOptions options, Store* store);
  absl::Status Resume() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::unique_ptr<Job>> MakeJob(const std::string& id,
                                               const v1::JobConfig& config)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MaybeOpenRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A relay's Tick: its open round closes into a Partial when its devices answered or its
  // deadline passed.
  absl::Status RelayTick(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The relay's round closes into its Partial (the group's figures and sums); the costly
  // part runs without the lock, once the round is sealed.
  absl::Status CloseRelayRound(OpenRound& round) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Follow's round: the relay's part of the root's round `r` of the running job.
  absl::Status OpenRelayRound(const v1::RelayRound& r, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool is_relay() const { return !options_.relay_id.empty(); }
  // Why relays cannot serve a job ("": they can): secure aggregation (for now), FedCG, a
  // language model, or an aggregate that cannot be merged (the robust rules hold the
  // round's updates).
  static std::string RelayUnsupported(const v1::JobConfig& config,
                                      const aggregation::Strategy& strategy);
  absl::Status CloseRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CompleteRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The open round's attempt failed (`why`): it is dropped, to be retried with a new sample,
  // or, after round_policy.max_failed_attempts in a row, the job ends as FAILED.
  absl::Status RoundFailed(const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CompleteRound's work without the lock: the aggregate, DP noise, the strategy's step,
  // evaluation, the round's figures and the ledger's commit; the new model into `next`.
  absl::Status AggregateEvaluateCommit(Job& job, OpenRound& round, absl::Time now,
                                       std::chrono::steady_clock::time_point t0,
                                       const OpenRound::Closing& closing,
                                       aggregation::ModelWeights& next);
  // Ends the running job as `state` with `message`, recording it in the ledger.
  absl::Status EndJob(v1::JobState state, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tick's step of a secure round: closes every phase that is complete or timed out, the
  // unmasking phase without the lock; when the protocol finishes, the released sum becomes
  // the round's one aggregated update. REQUIRES: a secure round is open.
  // The device leaves the round in flight, if it is in it.
  void DropFromRound(const std::string& client_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status AdvanceSecureRound(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Credentials, job, then the open round's checks (OpenRound::CheckHeader).
  absl::Status CheckUpdateHeader(const v1::UpdateHeader& header)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CheckUpdateHeader, then what the client's update must be (its task model, the job's
  // update encoding). FAILED_PRECONDITION in a secure-aggregation round.
  absl::StatusOr<ExpectedUpdate> ExpectedUpdateOf(const v1::UpdateHeader& header)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::JobStatus> StatusOf(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits (letting the lock go) while a completed round is being written to the ledger and
  // not yet published in memory (Job.committing).
  void AwaitPublished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A round's intake: the accumulation batch, and the job's update bound
  // (server/update_bound.h) within the options' memory.
  RoundIntake::Options IntakeOptions(const Job& job) const {
    RoundIntake::Options o;
    o.batch = options_.aggregation_batch;
    o.batch_bytes = options_.aggregation_batch_bytes;
    o.threads = options_.aggregation_threads;
    o.keep_updates = job.strategy->KeepsClientUpdates();
    o.bound = UpdateBound::ForJob(job.config, job.num_parameters, options_.bound_held_updates,
                                  options_.bound_held_bytes);
    return o;
  }
  absl::Duration SecurePhaseTimeout() const {
    return options_.secure_aggregation_phase_timeout > absl::ZeroDuration()
               ? options_.secure_aggregation_phase_timeout
               : options_.liveness_timeout;
  }

  const CoordinatorOptions options_;
  base::Clock& clock_;
  Store* const store_;
  // Jobs' and rounds' records: the store, or memory (its own lock; taken after mu_).
  JobLedger ledger_;
  // Devices: enrollment, sessions, profiles, liveness (its own lock; taken after mu_).
  EnrollmentTokens enrollment_;
  ClientRegistry registry_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
  // Counts the rounds opened and jobs started or ended; AwaitTask waits on task_cv_ for it
  // to change.
  int64_t task_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar task_cv_;
  int64_t next_job_number_ ABSL_GUARDED_BY(mu_) = 1;
  // A relay: its closed round's part, until taken; and the key of the last round it
  // closed, which it does not open again.
  std::optional<Partial> partial_ ABSL_GUARDED_BY(mu_);
  uint64_t relay_closed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_COORDINATOR_H_
