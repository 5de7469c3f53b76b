// The open round (a room of server::Coordinator): one round's bookkeeping, from its opening
// to its close. It holds who was sampled, whom the round still waits for and whose update
// it accepted; each sampled client's task (its plan, whether it fetched it, its figures);
// the accepted updates (RoundIntake), the round's privacy state (RoundPrivacy::Round) and
// its secure-aggregation session (SecureRound); and the figures the round collects.
//
//   OpenRound round(*planner, std::move(setup));   // sampled clients, plans, intake, ...
//   FEDGE_RETURN_IF_ERROR(round.CheckHeader(header));     // every device call about it
//   round.Task(client_id);                                // FetchTask
//   round.Accept(header, update, bytes, norm) / Reject / Decline / Drop
//   OpenRound::Closing closing = round.Close();           // then aggregate intake() ...
//
// A client leaves `waiting` once: accepted (its update taken); rejected (a bad update or
// message: outcome REJECTED, with the reason); declined (outcome DECLINED, with the
// device's reason); or dropped (it left, went silent or missed a secure-aggregation phase:
// its outcome stays DROPPED). The round's errors are what devices get from the
// coordinator, so they start with "Coordinator:".
//
// Thread safety: none; the Coordinator calls it under its mutex, with two exceptions it
// arranges: Unmask runs without the mutex between BeginUnmasking and EndUnmasking (the
// session is left alone meanwhile: no task, polls retry, messages are refused), and after
// Close, the intake, privacy state, session and metrics are used without it (nobody is
// waiting in the round any more, so no other call changes them).
#ifndef FEDGE_SERVER_OPEN_ROUND_H_
#define FEDGE_SERVER_OPEN_ROUND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "aggregation/strategy.h"
#include "aggregation/update.h"
#include "base/clock.h"
#include "proto/coordinator.pb.h"
#include "proto/relay.pb.h"
#include "server/round_planner.h"
#include "server/round_privacy.h"
#include "server/secure_round.h"
#include "server/update_intake.h"

namespace fedge::server {

class OpenRound final {
 public:
  // One sampled client's task in the round: its plan and what the round saw of it.
  struct ClientTask : ClientPlan {
    std::string relay;  // the relay that serves the task ("": the coordinator itself)
    int64_t bytes_down = 0;
    bool fetched = false;
    v1::ClientRoundMetrics metrics;
  };

  // What a round opens with (Coordinator::MaybeOpenRound samples and plans it).
  struct Setup {
    std::string job_id;
    int64_t number = 0;
    int attempt = 0;  // failed attempts at this round before it
    absl::Time opened;
    absl::Time deadline = absl::InfiniteFuture();
    std::vector<std::string> sampled;
    std::vector<ClientPlan> plans;  // plans[i] is sampled[i]'s
    // relays[i]: the relay that serves sampled[i]'s task ("": the coordinator itself);
    // empty: none.
    std::vector<std::string> relays;
    uint64_t key = 0;  // see key()
    // The central and tier models the plans were cut from.
    std::unique_ptr<RoundPlanner::RoundModels> models;
    std::unique_ptr<RoundIntake> intake;
    RoundPrivacy::Round dp;               // sampling rate, clip norm
    std::unique_ptr<SecureRound> secure;  // null: updates come in the clear
    // Bounds a device's reported example counts (CoordinatorOptions).
    int64_t max_examples_per_client = int64_t{1} << 30;
    // A secure-aggregation phase closes this long after the previous one.
    absl::Duration phase_timeout = absl::Seconds(60);
  };

  // `planner` is the job's and must outlive the round. Every sampled client starts waiting,
  // with outcome DROPPED and its tier in its metrics. REQUIRES: one plan per sampled client,
  // an intake.
  OpenRound(const RoundPlanner& planner, Setup setup);

  int64_t number() const { return number_; }
  int attempt() const { return attempt_; }
  absl::Time opened() const { return opened_; }
  absl::Time deadline() const { return deadline_; }
  const std::vector<std::string>& sampled() const { return sampled_; }
  size_t accepted() const { return accepted_.size(); }
  // True once every sampled client answered or was dropped.
  bool settled() const { return waiting_.empty(); }
  // The round's parts for the coordinator's own steps: the accepted updates, the privacy
  // state (clip checks, noise at the close), the figures, and the secure-aggregation
  // session (null without secure aggregation).
  RoundIntake& intake() { return *intake_; }
  RoundPrivacy::Round& dp() { return dp_; }
  v1::RoundMetrics& metrics() { return metrics_; }
  SecureRound* secure() { return secure_.get(); }
  const SecureRound* secure() const { return secure_.get(); }

  // ---- device calls (the coordinator checked credentials and the job) ----
  // Whether `header` may answer this round: FAILED_PRECONDITION for another round, a client
  // not (or no longer) waiting, or another task id; ALREADY_EXISTS when the client's update
  // was accepted.
  absl::Status CheckHeader(const v1::UpdateHeader& header) const;
  // The client's task when the round waits for it (it may fetch it again), nullopt
  // otherwise; in a secure round also nullopt once the client joined the session or while
  // it is unmasked. The first fetch counts the task's bytes down.
  std::optional<TaskAssignment> Task(const std::string& client_id);
  // FAILED_PRECONDITION in a secure-aggregation round: updates come masked, through
  // SecureAggregationStep.
  absl::Status CheckInTheClear(const std::string& client_id) const;
  // What the client's update must be: its task's model, named for errors; the caller adds
  // the job's encoding and strategy. REQUIRES: a sampled client.
  ExpectedUpdate Expected(const std::string& client_id) const;
  // A sub-model's update scattered into the full shapes with coverage masks (the full
  // model's update is left as it is). INVALID_ARGUMENT naming the client and its tier when
  // the update does not fit its sub-model.
  absl::Status ToFullShapes(const std::string& client_id, aggregation::Update& update) const;
  // A checked update (REQUIRES: CheckHeader passed): into the intake, then the client's and
  // the round's figures (bytes, examples, loss, seconds, peak RSS, `norm` — the update's
  // L2 norm as the coordinator measured it — for the metrics, adaptive clipping and the
  // update bound, the device's own evaluation). When the intake refuses it, the client is
  // rejected and the refusal returned.
  absl::Status Accept(const v1::UpdateHeader& header, aggregation::Update update,
                      int64_t payload_bytes, double norm);
  // Drops the client as REJECTED with `reason` (an OK reason becomes INVALID_ARGUMENT
  // "update rejected"), counts the rejection and returns the reason.
  absl::Status Reject(const std::string& client_id, absl::Status reason);
  // The device declined its task: it leaves the round as DECLINED with `reason`.
  void Decline(const std::string& client_id, const std::string& reason, int64_t peak_rss_bytes);
  // The client leaves the round without an answer (its outcome stays DROPPED).
  void Drop(const std::string& client_id) { waiting_.erase(client_id); }
  // Drops every waiting client for which `live` is false.
  void DropSilent(absl::FunctionRef<bool(const std::string&)> live);

  // ---- relays (docs/relays.md) ----
  // The sampled clients relay `relay_id` serves that the round still waits for, sorted.
  std::vector<std::string> RelayClients(const std::string& relay_id) const;
  // How many of the sampled clients relay `relay_id` serves (waiting or not).
  int RelaySampled(const std::string& relay_id) const;
  // The relay that serves a sampled client's task ("": the coordinator itself).
  const std::string& TaskRelay(const std::string& client_id) const {
    return tasks_.at(client_id).relay;
  }
  // A key for this round and attempt of this coordinator (random per opening): a relay's
  // part names it, so that a part of a round a restarted root opened again under the same
  // number and attempt is refused.
  uint64_t key() const { return key_; }
  // Relay `header.relay_id()`'s part of the round (the caller checked job, round and
  // attempt): every client it names must be one the relay serves and the round waits for,
  // named once; the ACCEPTED ones' updates are summed in `aggregate` (exactly that many),
  // which is merged into the intake, and their figures are taken as the relay measured
  // them; REJECTED and DECLINED ones leave with the relay's reason, DROPPED ones without.
  // `released`: a secure-aggregation group's part, whose aggregate is the group's released
  // mean, one update of weight |accepted| (none when the group released nothing; the
  // caller checks the weight). The relay's clients it does not name are dropped.
  // INVALID_ARGUMENT, naming the problem, for a part that does not fit: nothing of it is
  // taken (RefuseRelay).
  absl::Status AcceptPartial(const v1::PartialHeader& header,
                             std::unique_ptr<aggregation::Aggregator> aggregate, bool released);
  // Relay `relay_id`'s part was refused (`reason`): each of its clients that has not
  // answered leaves the round REJECTED with the reason (a later part naming them is
  // refused too). Returns `reason`.
  absl::Status RefuseRelay(const std::string& relay_id, absl::Status reason);

  // ---- secure aggregation ----
  // One secure-aggregation message or poll (Coordinator::SecureAggregationStep), once
  // CheckHeader passed. FAILED_PRECONDITION in a round without secure aggregation, and for
  // a message while the session is unmasked (a poll is then told to retry). A poll gets
  // the phase's result (SecureRound::Poll). A repeat of a message already taken is
  // ALREADY_EXISTS and changes nothing; a bad message rejects the client (a dropout for the
  // protocol) and is returned; the masked input's figures go to the client's metrics.
  // After a message taken or rejected, the session advances at `clock`'s time (AdvanceSecure,
  // then SettleSecure with `model`), whose error is returned first.
  absl::StatusOr<v1::SecAggStepResponse> SecureStep(const v1::SecAggStepRequest& request,
                                                    const base::Clock& clock,
                                                    const aggregation::ModelWeights& model);
  // REQUIRES for the rest: secure() != nullptr.
  // Closes the session's complete or timed-out phases short of unmasking (SecureRound::
  // Advance, with the phase timeout); clients that missed a phase are dropped. True once
  // the sum is released.
  absl::StatusOr<bool> AdvanceSecure(absl::Time now);
  bool UnmaskDue(absl::Time now) const { return secure_->UnmaskDue(now, waiting_); }
  // The unmasking phase, in three steps so that the costly one runs without the lock:
  // BeginUnmasking (locked) takes who is waiting, Unmask (unlocked) closes the phase,
  // EndUnmasking (locked) puts who is left back and returns Unmask's outcome.
  struct Unmasking {
    absl::flat_hash_set<std::string> waiting;
    absl::StatusOr<bool> finished = false;
  };
  Unmasking BeginUnmasking();
  void Unmask(absl::Time now, Unmasking& unmasking);
  absl::StatusOr<bool> EndUnmasking(Unmasking unmasking);
  bool unmasking() const { return unmasking_; }
  // After AdvanceSecure or EndUnmasking. A failed session is logged (the round goes on and
  // fails at its close). A finished one: the survivors' mean, in the shapes of `model`,
  // becomes the round's one update (RoundIntake::AddReleased's errors), the survivors are
  // accepted with their figures, misbehaving clients are recorded, and waiting empties.
  absl::Status SettleSecure(const absl::StatusOr<bool>& finished,
                            const aggregation::ModelWeights& model);

  // ---- closing ----
  struct Closing {
    // Every sampled client's figures and tier (index into the planner's tiers, -1: none),
    // in id order.
    std::vector<std::pair<v1::ClientRoundMetrics, int>> clients;
    std::vector<std::string> participants;  // the accepted clients
  };
  // Ends the round for every device call: from here CheckHeader refuses every update,
  // step and decline ("closing"), Task gives nothing, and nothing else of the round's state
  // is touched by a device call. Cheap; the coordinator calls it under its mutex.
  void Seal();
  bool sealed() const { return sealed_; }
  // Seals the round if it is not, then accumulates the held updates (one that fails to is
  // rejected; not expected), runs the update bound's close (the medians and the direction
  // check: the costly part, so the coordinator calls this without its mutex once sealed),
  // and fills the round's counts, what the bound did (RoundMetrics.robustness), mean
  // training loss and client seconds.
  Closing Close();
  // The accepted devices' own evaluation (FedCG), for the strategy's round report.
  aggregation::DeviceEvaluation Devices() const;

 private:
  // The rejection's bookkeeping: outcome, reason, count (not `waiting`).
  void MarkRejected(ClientTask& task, const absl::Status& reason);
  // An accepted update's figures into the client's and the round's, and the client out of
  // `waiting` into `accepted` (`norm` < 0: not measured).
  void MarkAccepted(const std::string& client_id, int64_t bytes_up, int64_t num_examples,
                    double train_loss, double train_seconds, int64_t peak_rss_bytes,
                    double norm, double eval_accuracy, int64_t eval_examples);
  // AcceptPartial's checks of `header` against the round (no state changed).
  absl::Status CheckPartial(const v1::PartialHeader& header,
                            const aggregation::Aggregator& aggregate, bool released) const;
  // An accepted update left out of the aggregate at the close: its counts leave the
  // round's sums and its outcome becomes REJECTED with `reason`.
  void Unaccept(const std::string& client_id, const absl::Status& reason);

  const RoundPlanner* planner_;
  std::string job_id_;
  int64_t number_;
  int attempt_;
  uint64_t key_ = 0;
  absl::Time opened_;
  absl::Time deadline_;
  int64_t max_examples_per_client_;
  absl::Duration phase_timeout_;
  std::vector<std::string> sampled_;
  bool sealed_ = false;
  absl::flat_hash_set<std::string> waiting_;  // sampled, not yet answered or dropped
  absl::flat_hash_set<std::string> accepted_;
  absl::flat_hash_map<std::string, ClientTask> tasks_;  // per sampled client
  std::unique_ptr<RoundPlanner::RoundModels> models_;
  std::unique_ptr<RoundIntake> intake_;
  RoundPrivacy::Round dp_;
  std::unique_ptr<SecureRound> secure_;
  bool unmasking_ = false;
  v1::RoundMetrics metrics_;
  double train_loss_sum_ = 0;
  double client_seconds_sum_ = 0;
  // FedCG: the accepted devices' evaluation reports (Σ accuracy·examples, Σ examples).
  double eval_correct_sum_ = 0;
  int64_t eval_examples_ = 0;
  int32_t clients_evaluated_ = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_OPEN_ROUND_H_
