// fedge-sim's engine: the same round logic in-process, with a virtual clock and simulated
// devices and links (docs/simulation.md). Transport-free: it drives the same
// server::Coordinator the gRPC service drives, sends every task through the same
// server::TaskPayloadEncoder, and runs the device round the device runtime runs
// (client/device_round.h: admission against the memory budget, decoding as sent, training,
// the update's encoding and header, sent over a client::DeviceLink into the coordinator,
// sim/coordinator_link.h), so what is simulated is what ships, secure aggregation included
// (below).
//
//   FEDGE_ASSIGN_OR_RETURN(v1::SimConfig config, LoadSimConfigFile(path));
//   FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<Simulator> sim, Simulator::Create(config, {}));
//   FEDGE_RETURN_IF_ERROR(sim->Run([](const RoundReport& r) { ... }));
//
// Population. Create registers N virtual clients with the coordinator (in memory, no store)
// under the ids "v00000000".."v<N-1>" (CoordinatorOptions.accept_requested_client_ids) with
// their device profiles (memory budget, example count), so that which virtual client the
// coordinator's seeded sample picks, and every per-client seed derived from an id (random
// sub-model subsets), depend only on the seeds; DP noise is seeded from the config's seed
// too (CoordinatorOptions.dp_noise_seed). Per client the simulator keeps only its session
// token (32 bytes; the id is rebuilt from the index); devices (sim/device_model.h) and data
// (sim/client_data.h) are recomputed when a client is sampled. What grows with N beyond that
// is the coordinator's registry (about 140 bytes a client).
//
// A round, on a virtual clock (base::ManualClock) starting at 0:
//   1. Tick opens the round at virtual time T0: the coordinator samples K clients.
//   2. Every client that is online this round (probability = its device's availability,
//      drawn from (seed, client, round, attempt)) polls FetchTask; those sampled get their
//      task. A sampled client that is offline never fetches and is dropped at the deadline.
//   3. For each task: bytes down (model + teacher as encoded), bytes up (the update as
//      encoded), examples trained (epochs × its examples, capped by max_steps × batch) give
//      its virtual finish time T0 + VirtualRoundSeconds. A client drops out with its device's
//      dropout probability (drawn from (seed, client, round, attempt)); a client finishing at
//      or after the job's deadline is a straggler. Neither trains nor submits.
//   4. The rest train on a thread pool (their shuffling seed depends only on (seed, client,
//      round)); their updates are submitted in order of finish time (ties by client index),
//      the clock advanced to each finish time first. The submission order is thus fixed by
//      the seeds, so the aggregate and every metric are identical whatever the thread count.
//   5. The clock moves to the last finish time and Tick closes the round when everyone
//      sampled answered; otherwise to the deadline, where Tick closes it with what it has, as
//      the real coordinator does. Below quorum the coordinator fails the round and the next
//      Tick retries it with a new sample (attempt + 1).
// Secure aggregation (job.privacy.secure_aggregation_threshold > 0; SecAgg or SecAgg+, with
// distributed DP when the job has a noise multiplier): every virtual device runs the device
// side of the protocol (client::SecAggDevice, what fedge-client runs), phase by phase through
// its link: its keys at its finish time (step 4), then the shares, the masked input and the
// unmasking shares, each phase when the previous one closed. A device that drops out (its
// dropout probability) drops at a phase drawn uniformly from the four: before its keys (it
// never trains), or before its shares, masked input or unmasking shares. A phase some device
// missed closes at its deadline (CoordinatorOptions.secure_aggregation_phase_timeout,
// kSecAggPhaseTimeout of virtual time after the previous one), and the unmasking runs from
// Tick as on a real coordinator. The devices' noise shares are seeded from the config's seed
// (client::DeviceNoiseSeed; a fleet device draws them from its CSPRNG). After each completed
// round the simulator checks the coordinator's released sum against the plain sum of the
// fixed-point inputs of the devices whose masked input it took (their digests, RoundMetrics
// secure_aggregation.sum_digest): a mismatch fails the run (INTERNAL).
//
// Memory per round: the datasets and models of the clients training at once, and the
// updates finished but not yet submitted (bounded by K); not N.
//
// Over several processes (SimulatorOptions.cluster, sim/cluster.h; fedge-sim under mpirun):
// rank 0 runs everything above, the coordinator included; only step 4's training is shared.
// The i-th update of step 4's fixed submission order is trained by rank i mod P. Rank 0
// sends each other rank its share (sim/training_share.h; one message per round: every
// distinct task model and teacher once, then per client its index, task header and
// shuffling seed); each rank
// loads the same data (MakeClientDataSource of the same config) and runs RunTrainingWorker,
// which trains its share on its own thread pool with the same TrainLocally and sends the
// updates back one message each, in order. Rank 0 submits every update in the same order
// as a single process would, so the metrics are identical whatever the ranks and threads:
// what is random (sampling, availability, dropouts, virtual times, DP noise) is drawn on
// rank 0 from the seeds, and training is a pure function of (model, data, seed).
//
// FedCG jobs (strategy.fed_cg): each virtual client that takes part gets a
// client::FedCgClient at its first task, kept for the run (its private E and D, as a device
// keeps them; memory grows with the clients that trained, not with N), seeded as a device
// seeds it (training.shuffle_seed ^ Fnv1a(id)). Its examples become FedCG's inputs
// (client::FedCgInputs) and it evaluates on its FashionMnistData.client_test_sets test half,
// or on the share it holds out (client::FedCgHoldOut) as a device does. Only in one process
// (the clients' state lives on rank 0): Create refuses FedCG with a cluster of several ranks.
//
// Not thread-safe: one thread drives a Simulator.
#ifndef FEDGE_SIM_SIMULATOR_H_
#define FEDGE_SIM_SIMULATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/clock.h"
#include "client/fedcg_device.h"
#include "client/fedcg_trainer.h"
#include "client/local_trainer.h"
#include "client/secagg_device.h"
#include "proto/sim.pb.h"
#include "server/coordinator.h"
#include "server/task_payload.h"
#include "sim/attacks.h"
#include "sim/client_data.h"
#include "sim/cluster.h"
#include "sim/coordinator_link.h"

namespace fedge::sim {

class DeviceLanguageModels;  // simulator.cc

struct SimulatorOptions {
  // Training threads; > 0 overrides config.threads (0 there = the machine's cores shared
  // among the cluster's ranks on this machine).
  int threads = 0;
  // The processes the run is spread over, or null for this process alone. Not owned; must
  // outlive the Simulator. A Simulator lives on rank 0; every other rank runs
  // RunTrainingWorker with the same config.
  Cluster* cluster = nullptr;
  // For tests: called with every update a virtual device sends, as it reaches the
  // coordinator (header with credentials, encoded payload), on the driving thread.
  std::function<void(const v1::UpdateHeader& header, std::string_view payload)> on_upload;
};

// The training threads `options` and `config` ask for (see SimulatorOptions.threads).
int TrainingThreads(const v1::SimConfig& config, const SimulatorOptions& options);

// A rank other than 0 (simulator.h, "Over several processes"): loads the data of `config`,
// then trains the shares rank 0 sends until rank 0 says stop (when its Simulator is
// destroyed). Errors: the data (MakeClientDataSource), the cluster's, and a malformed
// message; a client's training error is sent to rank 0, which fails the run with it.
// REQUIRES: `config` validated and the same as rank 0's; options.cluster set, rank > 0.
absl::Status RunTrainingWorker(const v1::SimConfig& config, const SimulatorOptions& options);

// One completed round, as fedge-sim writes it (sim/report.h).
struct RoundReport {
  int64_t round = 0;
  int attempts = 1;             // rounds opened for this number (failed ones were retried)
  double virtual_time_s = 0;    // virtual clock at the round's close, from the start
  double round_virtual_s = 0;   // open → close of the completed attempt
  double wall_time_s = 0;       // real seconds since the first round opened
  bool evaluated = false;
  double test_accuracy = 0;
  double test_loss = 0;
  double test_perplexity = 0;   // a language-model job: e^test_loss over its held-out tokens
  double train_loss = 0;        // participants' mean local loss, weighted by examples
  int sampled = 0;
  int participants = 0;
  int dropped = 0;              // sampled − participants (offline, dropouts, stragglers,
                                // rejected)
  int rejected = 0;             // updates refused or excluded (RoundMetrics.rejected)
  int offline = 0;              // sampled but never fetched its task
  int dropouts = 0;             // fetched, dropped out before uploading
  int stragglers = 0;           // would have finished at or after the deadline
  int64_t examples = 0;
  int64_t bytes_up = 0;         // accepted update payload bytes
  int64_t bytes_down = 0;       // task payload bytes fetched
  double epsilon = 0;           // DP ε after this round (0 without DP)
  // DP: the clip norm C the round's devices used; with adaptive clipping, the noised
  // fraction of participants whose update was within C, and C for the next round
  // (RoundMetrics.dp_*). Written to the metrics line only when dp_clip_norm > 0.
  double dp_clip_norm = 0;
  double dp_unclipped_fraction = 0;
  double dp_next_clip_norm = 0;
  int declined = 0;             // fetched, declined as over the device's memory budget
  // The update bound (RoundMetrics.robustness): the L2 bound of a full-model update at the
  // round's close, and the updates clipped to it or whose weight was capped. Written to
  // the metrics line when the round had a bound (not under secure aggregation), with the updates its direction check
  // excluded when there were any.
  bool bounded = false;
  double bound_norm = 0;
  int bound_clipped = 0;
  int bound_weight_capped = 0;
  int bound_excluded = 0;       // updates the direction check excluded
  // Secure-aggregation rounds: devices that took part in each phase (RoundMetrics
  // secure_aggregation: keys, shares, masked input, unmasking), and whether the released sum
  // was checked against the plain sum of the inputs (it is on every completed round; a
  // mismatch fails the run). Written to the metrics line only for such rounds.
  bool secure_aggregation = false;
  int secagg_advertised = 0;
  int secagg_shared = 0;
  int secagg_masked = 0;
  int secagg_unmasked_by = 0;
  bool secagg_sum_checked = false;
  // FedCG jobs (strategy.fed_cg): test_accuracy is then the paper's mean client accuracy
  // of this round, which the simulator measures itself after the round: each participant's
  // private E with the new global C on its own test examples (client_test_sets, else its
  // held-out share), weighted by their count. The coordinator's figures follow.
  bool fed_cg = false;
  double fedcg_reported_accuracy = 0;  // RoundMetrics.fed_cg.client_accuracy (round − 1's model)
  double fedcg_first_kl = 0;           // the server distillation (RoundMetrics.fed_cg)
  double fedcg_last_kl = 0;
  double fedcg_synthetic_accuracy = 0;
};

// Virtual time a secure-aggregation phase waits for a device that dropped out.
inline constexpr absl::Duration kSecAggPhaseTimeout = absl::Seconds(60);

class Simulator {
 public:
  // Loads the data, starts a coordinator on a virtual clock, registers the population and
  // starts the job. REQUIRES: `config` validated (ValidateSimConfig). Errors: the data
  // (MakeClientDataSource) and the coordinator's (Register, StartJob).
  static absl::StatusOr<std::unique_ptr<Simulator>> Create(const v1::SimConfig& config,
                                                           SimulatorOptions options = {});
  // With a cluster, tells the other ranks to stop.
  ~Simulator();

  // Runs rounds until the job has run all of them, calling `on_round` (may be empty) after
  // each completed round. Errors: training errors, the coordinator's errors, and
  // FAILED_PRECONDITION when 100 attempts in a row fail (quorum out of reach).
  absl::Status Run(const std::function<void(const RoundReport&)>& on_round);

  // Runs attempts until one round completes and returns it; nullopt when the job is over.
  absl::StatusOr<std::optional<RoundReport>> RunRound();

  int threads() const { return threads_; }
  int ranks() const { return cluster_ != nullptr ? cluster_->size() : 1; }
  int64_t rounds() const { return config_.job().rounds(); }
  const v1::SimConfig& config() const { return config_; }
  // The job's final central model (after Run).
  absl::StatusOr<v1::ModelProto> ExportModel() { return coordinator_->ExportModel(job_id_); }
  // The job's rounds as the coordinator recorded them (metrics of every client and tier).
  absl::StatusOr<std::vector<v1::RoundRecord>> ListRounds() {
    return coordinator_->ListRounds(job_id_);
  }

 // Virtual client `client`'s id ("v00000042").
  static std::string ClientId(int64_t client);

 private:
  // A sampled client that fetched its task, and what the round made of it.
  struct ClientRun {
    int64_t client = 0;
    // The task as the device holds it: the header as sent (manifests, byte count) and the
    // models decoded from the payload (shared by the round's devices that got the same
    // bytes); the encodings are those of the payload.
    server::TaskAssignment task;
    int64_t bytes_down = 0;  // the task's payload
    bool declined = false;   // over the device's memory budget (client::AdmitTask)
    double finish_s = 0;  // virtual seconds after the round opened
    bool dropout = false;
    bool straggler = false;
    // Secure aggregation: the device's side of the protocol (made when it finished
    // training), the phase (1-3) before whose message it drops out (0: it stays), and
    // whether the coordinator took its masked input.
    std::unique_ptr<client::SecAggDevice> secagg;
    int secagg_drop_phase = 0;
    bool secagg_masked = false;
  };
  struct Attempt {
    bool completed = false;
    RoundReport report;
  };

  Simulator(v1::SimConfig config, int threads, Cluster* cluster);
  CoordinatorLink::UploadHook on_upload_;
  absl::Status RegisterPopulation();
  absl::StatusOr<Attempt> RunAttempt(int attempt);
  // Trains `runs` (those that neither drop out nor straggle) on the pool, and on the other
  // ranks, and submits them in order, advancing the clock to each finish time.
  absl::Status TrainAndSubmit(std::vector<ClientRun*>& runs, absl::Time opened);
  // A device's update as it leaves the device (client::SendUpdate over its link, into the
  // coordinator's intake), as a fleet device's arrives; in a secure-aggregation round, the
  // device's protocol starts (StartSecureAggregation).
  absl::Status Submit(ClientRun& run, client::LocalUpdate update);
  CoordinatorLink LinkOf(int64_t client) const;
  // ---- secure aggregation (sim/secure_phases.cc) ----
  // The device's SecAggDevice and its phase-0 message (its keys).
  absl::Status StartSecureAggregation(ClientRun& run, const client::LocalUpdate& update);
  // After every device's keys (phase 0, sent in Submit): closes phase 0, then runs phases
  // 1-3 for the devices still in, then the unmasking (Tick), on the virtual clock. Stops
  // early when the protocol fails (the round then fails).
  absl::Status RunSecurePhases(const std::vector<ClientRun*>& runs, absl::Time opened);
  // Whether `phase` has closed, as a device of `runs` that sent its message for it sees
  // it by polling (also true when the protocol failed or nobody is left to ask).
  absl::StatusOr<bool> PhaseClosed(const std::vector<ClientRun*>& runs, int phase);
  // The completed round's released sum against the plain sum of `runs`' inputs.
  absl::Status CheckReleasedSum(const std::vector<ClientRun*>& runs,
                                const v1::SecureAggregationRoundMetrics& m, RoundReport& report);
  // Decoded task models of one attempt, by the encoded sections they came from (the
  // encoder shares a section between the tasks that send the same model).
  struct DecodedModels {
    struct Models {
      std::shared_ptr<const v1::ModelProto> model, teacher;
      // The key's sections, held so that their addresses stay theirs for the attempt.
      std::vector<std::shared_ptr<const server::EncodedModel>> sections;
    };
    std::map<std::pair<const void*, const void*>, Models> by_sections;
  };
  // What a device does with the task it fetched (client/device_round.h): the coordinator's
  // encoder sends it as a fleet device gets it, the device admits it against its memory
  // budget (declining it through the coordinator when over) and decodes the payload.
  absl::Status Deliver(server::TaskAssignment task, DecodedModels& decoded, ClientRun& run);
  // FedCG: the mean accuracy of `runs`' clients (private E, the job's current global C) on
  // their evaluation examples, weighted by their count; 0 when none has any.
  absl::StatusOr<double> FedCgClientAccuracy(const std::vector<ClientRun*>& runs);
  // Virtual client `client`'s session token (64 hex characters).
  std::string Token(int64_t client) const;
  void AdvanceTo(absl::Time t);

  const v1::SimConfig config_;
  const Attack attack_{config_.attack()};  // hostile clients (none unless configured)
  const int threads_;
  Cluster* const cluster_;  // null: this process alone
  std::unique_ptr<ClientDataSource> data_;
  // Language-model jobs: the devices' copies of the base (simulator.cc).
  std::unique_ptr<DeviceLanguageModels> language_models_;
  base::ManualClock clock_;
  absl::Time start_;
  std::unique_ptr<server::Coordinator> coordinator_;
  // Encodes tasks as the gRPC service does (server/task_payload.h).
  server::TaskPayloadEncoder encoder_;
  std::string job_id_;
  // The coordinator's session tokens are 32 random bytes, as 64 hex characters.
  static constexpr size_t kTokenBytes = 32;
  // Every client's session token, raw: client i's is tokens_[32 i .. 32 i + 32).
  std::string tokens_;
  int64_t wall_start_ns_ = -1;
  // FedCG: each virtual client's FedCG state (null until its first task), by index.
  std::vector<std::unique_ptr<client::FedCgDevice>> fedcg_;
};

}  // namespace fedge::sim

#endif  // FEDGE_SIM_SIMULATOR_H_
