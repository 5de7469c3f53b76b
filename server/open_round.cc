#include "server/open_round.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "base/text.h"
#include "base/status_macros.h"

namespace fedge::server {

OpenRound::OpenRound(const RoundPlanner& planner, Setup setup)
    : planner_(&planner),
      job_id_(std::move(setup.job_id)),
      number_(setup.number),
      attempt_(setup.attempt),
      key_(setup.key),
      opened_(setup.opened),
      deadline_(setup.deadline),
      max_examples_per_client_(setup.max_examples_per_client),
      phase_timeout_(setup.phase_timeout),
      sampled_(std::move(setup.sampled)),
      models_(std::move(setup.models)),
      intake_(std::move(setup.intake)),
      dp_(setup.dp),
      secure_(std::move(setup.secure)) {
  FEDGE_CHECK(setup.plans.size() == sampled_.size() && intake_ != nullptr);
  waiting_.insert(sampled_.begin(), sampled_.end());
  for (size_t i = 0; i < sampled_.size(); ++i) {
    const std::string& id = sampled_[i];
    ClientTask& task = tasks_[id];
    static_cast<ClientPlan&>(task) = std::move(setup.plans[i]);
    task.metrics.set_client_id(id);
    task.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_DROPPED);
    if (task.tier >= 0) task.metrics.set_tier(planner.tiers()[task.tier].name);
    if (i < setup.relays.size()) task.relay = std::move(setup.relays[i]);
  }
  metrics_.set_round(number_);
  metrics_.set_sampled(static_cast<int32_t>(sampled_.size()));
  metrics_.set_started_unix_ms(absl::ToUnixMillis(opened_));
}

// ---------------------------------------------------------------------------------------
// Device calls

absl::Status OpenRound::CheckHeader(const v1::UpdateHeader& header) const {
  const std::string& id = header.client_id();
  if (sealed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: round ", number_, " is closing; its updates are in"));
  }
  if (header.round() != number_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: update for round ", header.round(), ", but round ", number_, " is open"));
  }
  if (accepted_.contains(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("Coordinator: client ", id, " already sent its update for round ", number_));
  }
  if (!waiting_.contains(id)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Coordinator: client ", id, " is not (or no longer) part of round ", number_));
  }
  if (const std::string& relay = tasks_.at(id).relay; !relay.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: client ", id, "'s task in round ", number_,
                     " is served by relay ", relay, "; its update goes there"));
  }
  const std::string expected_task = absl::StrCat(job_id_, "/", number_, "/", attempt_, "/", id);
  if (header.task_id() != expected_task) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: update names task '", header.task_id(), "', expected '",
                     expected_task, "'"));
  }
  return absl::OkStatus();
}

std::optional<TaskAssignment> OpenRound::Task(const std::string& client_id) {
  if (!waiting_.contains(client_id)) return std::nullopt;
  if (secure_ != nullptr && (unmasking_ || secure_->Joined(client_id))) return std::nullopt;
  ClientTask& ct = tasks_[client_id];
  if (!ct.relay.empty()) return std::nullopt;  // its relay serves it
  RoundPlanner::TaskContext context;
  context.job_id = job_id_;
  context.client_id = client_id;
  context.round = number_;
  context.attempt = attempt_;
  context.deadline = deadline_;
  context.clip_norm = dp_.clip_norm;
  context.secure = secure_.get();
  TaskAssignment task = planner_->Assign(ct, context);
  if (!ct.fetched) {
    ct.fetched = true;
    ct.bytes_down = RoundPlanner::EncodedBytes(*task.model, task.model_encoding);
    if (task.teacher != nullptr) {
      ct.bytes_down += RoundPlanner::EncodedBytes(*task.teacher, task.teacher_encoding);
    }
    ct.metrics.set_bytes_down(ct.bytes_down);
    metrics_.set_bytes_down(metrics_.bytes_down() + ct.bytes_down);
  }
  return task;
}

absl::Status OpenRound::CheckInTheClear(const std::string& client_id) const {
  if (secure_ == nullptr) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "Coordinator: round ", number_, " uses secure aggregation: client ", client_id,
      " must send its update masked, through SecureAggregationStep"));
}

ExpectedUpdate OpenRound::Expected(const std::string& client_id) const {
  const ClientTask& ct = tasks_.at(client_id);
  ExpectedUpdate e;
  e.model = ct.model;
  if (ct.tier < 0) {
    e.what = "the task's model";
  } else {
    const RoundPlanner::Tier& tier = planner_->tiers()[ct.tier];
    e.what = absl::StrFormat("the task's sub-model (tier '%s', width %g)", tier.name,
                             tier.width_ratio);
  }
  return e;
}

absl::Status OpenRound::ToFullShapes(const std::string& client_id,
                                     aggregation::Update& update) const {
  const ClientTask& ct = tasks_.at(client_id);
  if (ct.slicer == nullptr) return absl::OkStatus();
  const RoundPlanner::Tier& tier = planner_->tiers()[ct.tier];
  FEDGE_ASSIGN_OR_RETURN(
      aggregation::Update full,
      ExpandSubModelUpdate(*ct.slicer,
                           absl::StrCat("Coordinator: client ", client_id, " (tier '", tier.name,
                                        "', width ", tier.width_ratio, ")"),
                           update));
  full.max_abs = update.max_abs;  // the same values, and zeros
  update = std::move(full);
  return absl::OkStatus();
}

absl::Status OpenRound::Accept(const v1::UpdateHeader& header, aggregation::Update update,
                               int64_t payload_bytes, double norm) {
  const std::string& id = header.client_id();
  if (absl::Status s = intake_->Add(std::move(update), norm); !s.ok()) {
    return Reject(id, std::move(s));
  }
  const v1::ClientTrainMetrics& reported = header.metrics();
  MarkAccepted(id, payload_bytes, header.num_examples(), reported.train_loss(),
               reported.train_seconds(), reported.peak_rss_bytes(), norm,
               reported.eval_accuracy(), reported.eval_examples());
  return absl::OkStatus();
}

void OpenRound::MarkAccepted(const std::string& id, int64_t bytes_up, int64_t num_examples,
                             double train_loss, double train_seconds, int64_t peak_rss_bytes,
                             double norm, double eval_accuracy, int64_t eval_examples) {
  ClientTask& ct = tasks_[id];
  ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
  ct.metrics.set_bytes_up(bytes_up);
  ct.metrics.set_num_examples(num_examples);
  ct.metrics.set_train_loss(train_loss);
  ct.metrics.set_train_seconds(train_seconds);
  ct.metrics.set_peak_rss_bytes(std::max<int64_t>(0, peak_rss_bytes));
  if (std::isfinite(norm) && norm >= 0) {
    ct.metrics.set_update_norm(norm);
    RoundPrivacy::CountMeasuredNorm(norm, dp_);
  }
  waiting_.erase(id);
  accepted_.insert(id);
  metrics_.set_bytes_up(metrics_.bytes_up() + bytes_up);
  metrics_.set_examples(metrics_.examples() + num_examples);
  train_loss_sum_ += train_loss * num_examples;
  client_seconds_sum_ += train_seconds;
  if (eval_examples > 0 && eval_examples <= max_examples_per_client_ &&
      std::isfinite(eval_accuracy) && eval_accuracy >= 0 && eval_accuracy <= 1) {
    // The device's own evaluation (FedCG: its private E with the task's global C on its
    // held-out examples), for the strategy's round report.
    ct.metrics.set_eval_accuracy(eval_accuracy);
    ct.metrics.set_eval_examples(eval_examples);
    eval_correct_sum_ += eval_accuracy * static_cast<double>(eval_examples);
    eval_examples_ += eval_examples;
    ++clients_evaluated_;
  }
}

void OpenRound::MarkRejected(ClientTask& task, const absl::Status& reason) {
  metrics_.set_rejected(metrics_.rejected() + 1);
  task.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_REJECTED);
  task.metrics.set_reason(std::string(reason.message().substr(0, 256)));
}

void OpenRound::Unaccept(const std::string& client_id, const absl::Status& reason) {
  if (accepted_.erase(client_id) == 0) return;
  ClientTask& task = tasks_[client_id];
  const int64_t examples = task.metrics.num_examples();
  metrics_.set_examples(std::max<int64_t>(0, metrics_.examples() - examples));
  train_loss_sum_ -= task.metrics.train_loss() * static_cast<double>(examples);
  client_seconds_sum_ -= task.metrics.train_seconds();
  MarkRejected(task, reason);
}

absl::Status OpenRound::Reject(const std::string& client_id, absl::Status reason) {
  if (reason.ok()) reason = absl::InvalidArgumentError("Coordinator: update rejected");
  waiting_.erase(client_id);
  MarkRejected(tasks_[client_id], reason);
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_
                     << ": rejected the update of client " << client_id << ": "
                     << reason.message();
  return reason;
}

void OpenRound::Decline(const std::string& client_id, const std::string& reason,
                        int64_t peak_rss_bytes) {
  waiting_.erase(client_id);
  v1::ClientRoundMetrics& m = tasks_[client_id].metrics;
  m.set_outcome(v1::ClientRoundMetrics::OUTCOME_DECLINED);
  m.set_reason(reason);
  m.set_peak_rss_bytes(std::max<int64_t>(0, peak_rss_bytes));
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_ << ": client "
                     << client_id << " declined its task: " << reason;
}

void OpenRound::DropSilent(absl::FunctionRef<bool(const std::string&)> live) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (!live(*it)) {
      waiting_.erase(it++);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Secure aggregation

absl::StatusOr<v1::SecAggStepResponse> OpenRound::SecureStep(
    const v1::SecAggStepRequest& request, const base::Clock& clock,
    const aggregation::ModelWeights& model) {
  const std::string& id = request.client_id();
  if (secure_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("Coordinator: round ", number_, " does not use secure aggregation"));
  }
  v1::SecAggStepResponse response;
  if (unmasking_) {
    // The session is being unmasked: a poll is answered later; a message is too late.
    if (request.step_case() != v1::SecAggStepRequest::kPoll) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Coordinator: round ", number_, " is unmasking; the message came too late"));
    }
    response.set_retry_after_ms(200);
    return response;
  }
  if (request.step_case() == v1::SecAggStepRequest::kPoll) return secure_->Poll(id, request.poll());
  ClientTask& ct = tasks_[id];
  if (absl::Status s = secure_->Receive(id, request); !s.ok()) {
    // A repeat of a message already taken (a device retrying after a lost answer, or a
    // replay) changes nothing; the first one counts.
    if (absl::IsAlreadyExists(s)) return s;
    // A bad message drops this client (the protocol treats it as a dropout), never the round.
    waiting_.erase(id);
    MarkRejected(ct, s);
    FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_
                       << ": dropped client " << id << " from secure aggregation: " << s.message();
    FEDGE_RETURN_IF_ERROR(SettleSecure(AdvanceSecure(clock.Now()), model));
    return s;
  }
  if (request.has_masked_input()) {
    const v1::SecAggMaskedInput& in = request.masked_input();
    ct.metrics.set_bytes_up(static_cast<int64_t>(in.masked().size()));
    ct.metrics.set_num_examples(std::clamp<int64_t>(in.num_examples(), 0, max_examples_per_client_));
    // Reported, not checked by the protocol (the masked input is already in the sum): a
    // non-finite or negative figure is recorded as 0 so that one device cannot make the
    // round's means NaN.
    const double loss = in.metrics().train_loss(), seconds = in.metrics().train_seconds();
    ct.metrics.set_train_loss(std::isfinite(loss) ? loss : 0.0);
    ct.metrics.set_train_seconds(std::isfinite(seconds) && seconds >= 0 ? seconds : 0.0);
    ct.metrics.set_peak_rss_bytes(std::max<int64_t>(0, in.metrics().peak_rss_bytes()));
  }
  if (request.has_unmasking()) {
    response.set_done(true);
  } else {
    response.set_retry_after_ms(0);  // poll for the phase's result
  }
  FEDGE_RETURN_IF_ERROR(SettleSecure(AdvanceSecure(clock.Now()), model));
  return response;
}

absl::StatusOr<bool> OpenRound::AdvanceSecure(absl::Time now) {
  return secure_->Advance(now, phase_timeout_, waiting_, /*unmask=*/false);
}

OpenRound::Unmasking OpenRound::BeginUnmasking() {
  unmasking_ = true;
  Unmasking u;
  u.waiting = waiting_;
  return u;
}

void OpenRound::Unmask(absl::Time now, Unmasking& unmasking) {
  unmasking.finished = secure_->Advance(now, phase_timeout_, unmasking.waiting, /*unmask=*/true);
}

absl::StatusOr<bool> OpenRound::EndUnmasking(Unmasking unmasking) {
  unmasking_ = false;
  waiting_ = std::move(unmasking.waiting);
  return std::move(unmasking.finished);
}

absl::Status OpenRound::SettleSecure(const absl::StatusOr<bool>& finished,
                                     const aggregation::ModelWeights& model) {
  if (!finished.ok()) {
    FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_
                       << ": secure aggregation released nothing: " << finished.status().message();
    return absl::OkStatus();
  }
  if (!*finished || !accepted_.empty()) return absl::OkStatus();
  // The survivors' mean, aggregated as one update of weight |U3|.
  SecureRound::Release release = secure_->Released(model);
  if (release.noised_unclipped.has_value()) dp_.noised_unclipped = *release.noised_unclipped;
  FEDGE_RETURN_IF_ERROR(intake_->AddReleased(release.mean));
  for (const std::string& id : secure_->Survivors()) {
    accepted_.insert(id);
    ClientTask& ct = tasks_[id];
    ct.metrics.set_outcome(v1::ClientRoundMetrics::OUTCOME_ACCEPTED);
    metrics_.set_bytes_up(metrics_.bytes_up() + ct.metrics.bytes_up());
    metrics_.set_examples(metrics_.examples() + ct.metrics.num_examples());
    train_loss_sum_ += ct.metrics.train_loss() * ct.metrics.num_examples();
    client_seconds_sum_ += ct.metrics.train_seconds();
  }
  for (const std::string& id : secure_->Misbehaving()) {
    secure_->metrics().add_misbehaving_clients(id);
    FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_ << ": client "
                       << id << " revealed a bad secret share";
  }
  waiting_.clear();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Relays

std::vector<std::string> OpenRound::RelayClients(const std::string& relay_id) const {
  std::vector<std::string> out;
  if (relay_id.empty() || sealed_) return out;
  for (const std::string& id : sampled_) {
    if (waiting_.contains(id) && tasks_.at(id).relay == relay_id) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status OpenRound::RefuseRelay(const std::string& relay_id, absl::Status reason) {
  FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_
                     << ": refused the part of relay " << relay_id << ": " << reason.message();
  for (auto& [id, task] : tasks_) {
    if (relay_id.empty() || task.relay != relay_id || accepted_.contains(id) ||
        task.metrics.outcome() != v1::ClientRoundMetrics::OUTCOME_DROPPED) {
      continue;
    }
    waiting_.erase(id);
    MarkRejected(task, reason);
  }
  return reason;
}

int OpenRound::RelaySampled(const std::string& relay_id) const {
  int n = 0;
  for (const auto& [id, task] : tasks_) n += !relay_id.empty() && task.relay == relay_id;
  return n;
}

namespace {
// Bounds on what a relay reports of a device: a loss, seconds or norm over 1e12, or over
// 2^40 bytes of payload (1 TiB), is no real device's.
constexpr double kMaxReportedFigure = 1e12;
constexpr int64_t kMaxReportedBytes = int64_t{1} << 40;
}  // namespace

absl::Status OpenRound::CheckPartial(const v1::PartialHeader& header,
                                     const aggregation::Aggregator& aggregate,
                                     bool released) const {
  const std::string& relay = header.relay_id();
  const std::string what = absl::StrCat("Coordinator: relay ", relay, "'s part of round ", number_);
  absl::flat_hash_set<std::string> named;
  int64_t accepted = 0;
  for (const v1::ClientRoundMetrics& m : header.clients()) {
    const std::string& id = m.client_id();
    auto it = tasks_.find(id);
    // One of the relay's devices that has not answered here: the root may have dropped it
    // meanwhile (it went quiet, its relay's report came late), and its update, taken by the
    // relay, still counts.
    if (it == tasks_.end() || it->second.relay != relay || accepted_.contains(id) ||
        it->second.metrics.outcome() != v1::ClientRoundMetrics::OUTCOME_DROPPED) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " names client '", id.substr(0, 128),
          "', which is not one of its clients the round waits for"));
    }
    if (!named.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, " names client ", id, " twice"));
    }
    switch (m.outcome()) {
      case v1::ClientRoundMetrics::OUTCOME_ACCEPTED:
        ++accepted;
        if (m.num_examples() < 1 || m.num_examples() > max_examples_per_client_ ||
            !(m.train_loss() >= 0 && m.train_loss() <= kMaxReportedFigure) ||
            !(m.train_seconds() >= 0 && m.train_seconds() <= kMaxReportedFigure) ||
            !(m.update_norm() >= 0 && m.update_norm() <= kMaxReportedFigure) ||
            m.bytes_up() < 0 || m.bytes_up() > kMaxReportedBytes || m.bytes_down() < 0 ||
            m.bytes_down() > kMaxReportedBytes) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": client ", id,
              "'s figures are out of bounds (examples in [1, the most a client may claim], "
              "finite non-negative loss, seconds, norm and bytes)"));
        }
        break;
      case v1::ClientRoundMetrics::OUTCOME_REJECTED:
      case v1::ClientRoundMetrics::OUTCOME_DECLINED:
      case v1::ClientRoundMetrics::OUTCOME_DROPPED:
        if (m.reason().size() > 256 || !base::IsStorableText(m.reason())) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": client ", id, "'s reason is over 256 bytes or not UTF-8 text"));
        }
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": client ", id, " has no outcome"));
    }
  }
  // A secure group's sum is its released mean: one update for all its survivors.
  const int64_t updates = released ? (accepted > 0 ? 1 : 0) : accepted;
  if (updates != aggregate.num_updates()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " accepts ", accepted,
                                                   " clients but its aggregate sums ",
                                                   aggregate.num_updates(), " updates"));
  }
  return absl::OkStatus();
}

absl::Status OpenRound::AcceptPartial(const v1::PartialHeader& header,
                                      std::unique_ptr<aggregation::Aggregator> aggregate,
                                      bool released) {
  const std::string& relay = header.relay_id();
  absl::Status fits = CheckPartial(header, *aggregate, released);
  if (fits.ok() && aggregate->num_updates() > 0) fits = intake_->AddPartial(std::move(aggregate));
  if (!fits.ok()) return RefuseRelay(relay, std::move(fits));
  for (const v1::ClientRoundMetrics& m : header.clients()) {
    const std::string& id = m.client_id();
    ClientTask& ct = tasks_[id];
    if (m.bytes_down() > 0 && !ct.fetched) {
      ct.fetched = true;
      ct.bytes_down = m.bytes_down();
      ct.metrics.set_bytes_down(ct.bytes_down);
      metrics_.set_bytes_down(metrics_.bytes_down() + ct.bytes_down);
    }
    switch (m.outcome()) {
      case v1::ClientRoundMetrics::OUTCOME_ACCEPTED:
        MarkAccepted(id, m.bytes_up(), m.num_examples(), m.train_loss(), m.train_seconds(),
                     m.peak_rss_bytes(), m.update_norm() > 0 ? m.update_norm() : -1.0,
                     m.eval_accuracy(), m.eval_examples());
        break;
      case v1::ClientRoundMetrics::OUTCOME_REJECTED:
        waiting_.erase(id);
        MarkRejected(ct, absl::InvalidArgumentError(m.reason()));
        break;
      case v1::ClientRoundMetrics::OUTCOME_DECLINED:
        Decline(id, m.reason().substr(0, 256), m.peak_rss_bytes());
        break;
      default:
        waiting_.erase(id);
        break;
    }
  }
  for (const std::string& id : RelayClients(relay)) waiting_.erase(id);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Closing

void OpenRound::Seal() {
  sealed_ = true;
  waiting_.clear();
}

OpenRound::Closing OpenRound::Close() {
  // Sealed already when the coordinator calls (under its mutex): waiting_ is not touched
  // again, since device calls read it meanwhile.
  if (!sealed_) Seal();
  for (auto& [client, why] : intake_->Flush()) {
    // Not expected: each update passed Validate and the sum bound rules out an overflow.
    FEDGE_LOG(ERROR) << "Coordinator: job " << job_id_ << " round " << number_
                     << ": dropped the update of client " << client << ": " << why.message();
    Unaccept(client, why);
  }
  for (const UpdateBound::Excluded& e : intake_->Excluded()) {
    FEDGE_LOG(WARNING) << "Coordinator: job " << job_id_ << " round " << number_
                       << ": excluded the update of client " << e.client_id << ": " << e.reason;
    Unaccept(e.client_id, absl::InvalidArgumentError(e.reason));
  }
  if (secure_ == nullptr) intake_->ReportBound(metrics_.mutable_robustness());
  v1::RoundMetrics& m = metrics_;
  m.set_participants(static_cast<int32_t>(accepted_.size()));
  m.set_dropped(static_cast<int32_t>(sampled_.size() - accepted_.size() - m.rejected()));
  if (m.examples() > 0) m.set_train_loss(train_loss_sum_ / static_cast<double>(m.examples()));
  if (!accepted_.empty()) m.set_mean_client_seconds(client_seconds_sum_ / accepted_.size());
  Closing closing;
  std::vector<std::string> sampled = sampled_;
  std::sort(sampled.begin(), sampled.end());
  closing.clients.reserve(sampled.size());
  for (const std::string& id : sampled) {
    const ClientTask& ct = tasks_[id];
    closing.clients.emplace_back(ct.metrics, ct.tier);
  }
  closing.participants.assign(accepted_.begin(), accepted_.end());
  return closing;
}

aggregation::DeviceEvaluation OpenRound::Devices() const {
  aggregation::DeviceEvaluation devices;
  devices.clients = clients_evaluated_;
  devices.examples = eval_examples_;
  devices.correct = eval_correct_sum_;
  devices.model_round = number_ - 1;
  return devices;
}

}  // namespace fedge::server
