// fedge-sim's secure-aggregation rounds (simulator.h, "Secure aggregation"): every virtual
// device runs client::SecAggDevice through its link, one phase at a time on the virtual
// clock; the coordinator's SecureRound runs as it does behind the gRPC service.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "client/secagg_device.h"
#include "privacy/secagg_wire.h"
#include "sim/simulator.h"

namespace fedge::sim {
namespace {

// Phase timeouts the clock may step through before a phase must have closed: the phases'
// deadlines are at most the round's deadline plus a timeout per phase.
constexpr int kMaxPhaseWaits = 100000;

}  // namespace

absl::Status Simulator::StartSecureAggregation(ClientRun& run, const client::LocalUpdate& update) {
  const v1::TaskHeader& task = run.task.header;
  client::SecAggDevice::Options options;
  // Reproducible from the config's seed (a fleet device draws its noise from its CSPRNG).
  options.noise_seed = client::DeviceNoiseSeed(config_.seed(), task, ClientId(run.client));
  FEDGE_ASSIGN_OR_RETURN(run.secagg, client::SecAggDevice::Create(task, update, options));
  FEDGE_ASSIGN_OR_RETURN(v1::SecAggStepRequest keys, run.secagg->Start());
  CoordinatorLink link = LinkOf(run.client);
  absl::Status sent = link.SecureAggregationStep(task, std::move(keys)).status();
  if (!sent.ok()) {
    return absl::Status(sent.code(), absl::StrCat("Simulator: client ", run.client,
                                                  "'s keys: ", sent.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> Simulator::PhaseClosed(const std::vector<ClientRun*>& runs, int phase) {
  for (const ClientRun* run : runs) {
    if (run->secagg == nullptr || run->secagg->phase() != phase) continue;
    v1::SecAggStepRequest poll;
    poll.set_poll(phase);
    CoordinatorLink link = LinkOf(run->client);
    absl::StatusOr<v1::SecAggStepResponse> r = link.SecureAggregationStep(run->task.header, poll);
    // An error here is the protocol's failure or the round's end: nothing to wait for.
    if (!r.ok()) return true;
    return r->result_case() != v1::SecAggStepResponse::kRetryAfterMs;
  }
  return true;
}

absl::Status Simulator::RunSecurePhases(const std::vector<ClientRun*>& runs, absl::Time opened) {
  if (runs.empty()) return absl::OkStatus();  // nobody trained: the round fails at its deadline
  const int64_t round = runs.front()->task.header.round();
  auto round_open = [&]() -> absl::StatusOr<bool> {
    FEDGE_ASSIGN_OR_RETURN(const v1::JobStatus status, coordinator_->GetJob(job_id_));
    return status.state() == v1::JOB_STATE_RUNNING && status.current_round() == round;
  };
  // A phase some device missed closes at its deadline: step the clock a phase timeout at a
  // time (Tick closes what is due) until `closed`.
  auto wait_until = [&](const std::function<absl::StatusOr<bool>()>& closed) -> absl::Status {
    for (int i = 0; i < kMaxPhaseWaits; ++i) {
      FEDGE_ASSIGN_OR_RETURN(const bool done, closed());
      if (done) return absl::OkStatus();
      AdvanceTo(clock_.Now() + kSecAggPhaseTimeout);
      FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
    }
    return absl::InternalError("Simulator: a secure-aggregation phase never closed");
  };

  // Phase 0 (keys, sent at each device's finish time) closes when every device still in the
  // round sent its keys, or at the round's deadline.
  FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  FEDGE_ASSIGN_OR_RETURN(bool closed, PhaseClosed(runs, 0));
  if (!closed) {
    const double deadline = config_.job().round_policy().deadline_seconds();
    if (deadline <= 0) {
      return absl::InternalError(
          "Simulator: secure aggregation is waiting for devices and the round has no deadline");
    }
    AdvanceTo(opened + absl::Seconds(deadline));
    FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  }
  for (int phase = 1; phase <= 3; ++phase) {
    FEDGE_ASSIGN_OR_RETURN(const bool open, round_open());
    if (!open) return absl::OkStatus();  // the protocol failed and the round with it
    for (ClientRun* run : runs) {
      // Out of the protocol (dropped before), or dropping out now.
      if (run->secagg == nullptr || run->secagg->phase() != phase - 1) continue;
      if (run->secagg_drop_phase == phase) continue;
      const v1::TaskHeader& task = run->task.header;
      CoordinatorLink link = LinkOf(run->client);
      v1::SecAggStepRequest poll;
      poll.set_poll(phase - 1);
      absl::StatusOr<v1::SecAggStepResponse> result = link.SecureAggregationStep(task, poll);
      if (absl::IsAborted(result.status())) return absl::OkStatus();  // the protocol failed
      const std::string who = absl::StrCat("Simulator: client ", run->client, ", phase ", phase);
      if (!result.ok()) {
        return absl::Status(result.status().code(), absl::StrCat(who, ": ", result.status().message()));
      }
      if (result->result_case() == v1::SecAggStepResponse::kRetryAfterMs) {
        return absl::InternalError(absl::StrCat(who, ": the previous phase has not closed"));
      }
      absl::StatusOr<v1::SecAggStepRequest> message = run->secagg->Continue(*result);
      if (!message.ok()) {
        return absl::Status(message.status().code(), absl::StrCat(who, ": ", message.status().message()));
      }
      absl::Status sent = link.SecureAggregationStep(task, *std::move(message)).status();
      if (!sent.ok()) return absl::Status(sent.code(), absl::StrCat(who, ": ", sent.message()));
      if (phase == 2) run->secagg_masked = true;
    }
    if (phase < 3) {
      FEDGE_RETURN_IF_ERROR(wait_until([&] { return PhaseClosed(runs, phase); }));
    }
  }
  // The unmasking runs from Tick (as on a real coordinator), and the round closes with it.
  FEDGE_RETURN_IF_ERROR(coordinator_->Tick());
  return wait_until([&]() -> absl::StatusOr<bool> {
    FEDGE_ASSIGN_OR_RETURN(const bool open, round_open());
    return !open;
  });
}

absl::Status Simulator::CheckReleasedSum(const std::vector<ClientRun*>& runs,
                                         const v1::SecureAggregationRoundMetrics& m,
                                         RoundReport& report) {
  report.secure_aggregation = true;
  report.secagg_advertised = m.advertised();
  report.secagg_shared = m.shared();
  report.secagg_masked = m.masked();
  report.secagg_unmasked_by = m.unmasked_by();
  // The plain sum, mod 2^32, of the fixed-point inputs the coordinator took masked.
  std::vector<uint32_t> plain;
  int masked = 0;
  for (const ClientRun* run : runs) {
    if (!run->secagg_masked) continue;
    const std::vector<uint32_t>& x = run->secagg->input();
    if (plain.empty()) plain.assign(x.size(), 0);
    for (size_t i = 0; i < x.size() && i < plain.size(); ++i) plain[i] += x[i];
    ++masked;
  }
  if (masked != m.masked() || privacy::SumDigest(plain) != m.sum_digest()) {
    return absl::InternalError(absl::StrCat(
        "Simulator: round ", report.round, ": the released sum (", m.masked(),
        " inputs, digest ", absl::BytesToHexString(m.sum_digest()),
        ") is not the plain sum of the inputs sent masked (", masked, " inputs, digest ",
        absl::BytesToHexString(privacy::SumDigest(plain)), ")"));
  }
  report.secagg_sum_checked = true;
  return absl::OkStatus();
}

}  // namespace fedge::sim
