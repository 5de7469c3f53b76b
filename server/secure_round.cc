#include "server/secure_round.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "privacy/secagg_wire.h"
#include "privacy/sodium.h"

namespace fedge::server {
namespace {

// How long a device waits before polling an open phase again.
constexpr int64_t kPollRetryMs = 200;

const char* PhaseName(int phase) {
  switch (phase) {
    case 0: return "keys";
    case 1: return "shares";
    case 2: return "masked input";
    case 3: return "unmasking";
    default: return "done";
  }
}

int PhaseOf(const v1::SecAggStepRequest& r) {
  switch (r.step_case()) {
    case v1::SecAggStepRequest::kAdvertiseKeys: return 0;
    case v1::SecAggStepRequest::kShareKeys: return 1;
    case v1::SecAggStepRequest::kMaskedInput: return 2;
    case v1::SecAggStepRequest::kUnmasking: return 3;
    default: return -1;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SecureRound>> SecureRound::Create(
    const v1::PrivacyConfig& privacy, const std::vector<std::string>& participants,
    int64_t vector_length, const Encoding& encoding) {
  FEDGE_RETURN_IF_ERROR(privacy::EnsureSodium());
  privacy::SecAggConfig c;
  c.num_clients = static_cast<int>(participants.size());
  c.threshold = privacy.secure_aggregation_threshold();
  c.vector_length = vector_length;
  c.secagg_plus = privacy.secure_aggregation_plus();
  c.num_neighbors = privacy.secure_aggregation_neighbors();
  c.share_threshold = privacy.secure_aggregation_share_threshold();
  const privacy::Seed session = privacy::RandomSeed();
  for (int i = 0; i < 8; ++i) c.session_id |= uint64_t{session[i]} << (8 * i);
  if (c.secagg_plus) c.graph_seed = privacy::RandomSeed();
  // Every coordinate of a clipped update lies in [−S, S] (the count coordinate in [0, S]);
  // distributed noise adds N(0, σ²), clamped at 6σ (privacy/fixed_point.h).
  const double sigma = std::max(encoding.noise_stddev,
                                encoding.clipped_count ? encoding.count_noise_stddev : 0.0);
  FEDGE_ASSIGN_OR_RETURN(privacy::FixedPointEncoder encoder,
                         privacy::FixedPointEncoder::Create(encoding.clip_norm + 6 * sigma,
                                                            c.num_clients));
  FEDGE_ASSIGN_OR_RETURN(privacy::SecAggPlan plan, privacy::SecAggPlan::Create(c));
  if (plan.sparse()) {
    // The derived k and t_s travel in the session: a device never searches for them (the
    // search grows fast with n, and n comes from the coordinator).
    c.num_neighbors = plan.num_neighbors();
    c.share_threshold = plan.share_threshold();
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<privacy::SecAggServer> server,
                         privacy::SecAggServer::Create(c));
  auto round = std::unique_ptr<SecureRound>(
      new SecureRound(c, encoder, std::move(server), encoding));
  round->participants_ = participants;
  for (size_t i = 0; i < participants.size(); ++i) {
    round->index_[participants[i]] = static_cast<uint32_t>(i);
  }
  round->metrics_.set_plus(plan.sparse());
  round->metrics_.set_num_neighbors(plan.num_neighbors());
  return round;
}

v1::SecureAggregationSession SecureRound::SessionFor(const std::string& client_id) const {
  v1::SecureAggregationSession s = privacy::SessionFromConfig(config_);
  s.set_client_index(static_cast<int32_t>(index_.at(client_id)));
  s.set_max_abs_value(encoder_.max_abs_value());
  s.set_max_summands(static_cast<int32_t>(encoder_.max_summands()));
  s.set_noise_stddev(encoding_.noise_stddev);
  s.set_clipped_count(encoding_.clipped_count);
  s.set_count_noise_stddev(encoding_.count_noise_stddev);
  return s;
}

absl::Status SecureRound::Receive(const std::string& client_id,
                                  const v1::SecAggStepRequest& request) {
  const auto it = index_.find(client_id);
  if (it == index_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_id, " is not a participant of this round"));
  }
  const uint32_t u = it->second;
  const int want = PhaseOf(request);
  if (want < 0) return absl::InvalidArgumentError("SecAgg: empty step");
  if (phase_ >= kFinished) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: the round's protocol is over; got ", PhaseName(want)));
  }
  if (want == phase_ && (sent_.count(u) > 0)) {
    return absl::AlreadyExistsError(absl::StrCat("SecAgg: client ", client_id, " already sent its ",
                                                 PhaseName(want), " message"));
  }
  if (want != phase_) {
    return absl::FailedPreconditionError(absl::StrCat("SecAgg: client ", client_id, " sent its ",
                                                      PhaseName(want), " message during the ",
                                                      PhaseName(phase_), " phase"));
  }
  const int n = config_.num_clients;
  absl::Status s;
  switch (want) {
    case 0:
      s = server_->ReceiveAdvertiseKeys(privacy::KeysFromWire(u, request.advertise_keys()));
      break;
    case 1: {
      FEDGE_ASSIGN_OR_RETURN(privacy::SecAggShareKeys m,
                             privacy::ShareKeysFromWire(u, request.share_keys(), n));
      s = server_->ReceiveShareKeys(m);
      break;
    }
    case 2: {
      FEDGE_ASSIGN_OR_RETURN(
          privacy::SecAggMaskedInput m,
          privacy::MaskedFromWire(u, request.masked_input().masked(), config_.vector_length));
      s = server_->ReceiveMaskedInput(m);
      break;
    }
    case 3: {
      FEDGE_ASSIGN_OR_RETURN(privacy::SecAggUnmaskingResponse m,
                             privacy::UnmaskingFromWire(u, request.unmasking(), n));
      s = server_->ReceiveUnmaskingResponse(m);
      break;
    }
  }
  FEDGE_RETURN_IF_ERROR(s);
  sent_.insert(u);
  in_phase_[want].insert(u);
  if (want != 2) {
    metrics_.set_protocol_bytes(metrics_.protocol_bytes() +
                                static_cast<int64_t>(request.ByteSizeLong()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::SecAggStepResponse> SecureRound::Poll(const std::string& client_id,
                                                         int phase) const {
  const auto it = index_.find(client_id);
  if (it == index_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("SecAgg: client ", client_id, " is not a participant of this round"));
  }
  const uint32_t u = it->second;
  if (phase_ == kFailed) {
    return absl::AbortedError(absl::StrCat("SecAgg: the round's protocol failed: ",
                                           metrics_.failure()));
  }
  if (phase < 0 || phase > 2) {
    return absl::InvalidArgumentError(absl::StrCat("SecAgg: cannot poll phase ", phase));
  }
  if (!(in_phase_[phase].count(u) > 0)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SecAgg: client ", client_id, " did not send its ", PhaseName(phase), " message"));
  }
  v1::SecAggStepResponse r;
  if (phase == phase_) {
    r.set_retry_after_ms(kPollRetryMs);
    return r;
  }
  switch (phase) {
    case 0:
      *r.mutable_keys() = *keys_;
      break;
    case 1: {
      const auto s = shares_.find(u);
      if (s == shares_.end()) {
        return absl::FailedPreconditionError(
            absl::StrCat("SecAgg: client ", client_id, " is not in the round after the shares"));
      }
      *r.mutable_shares() = s->second;
      break;
    }
    case 2:
      *r.mutable_unmasking_request() = *unmasking_;
      break;
  }
  return r;
}

bool SecureRound::Joined(const std::string& client_id) const {
  const auto it = index_.find(client_id);
  return it != index_.end() && in_phase_[0].count(it->second) > 0;
}

bool SecureRound::PhaseComplete(const absl::flat_hash_set<std::string>& remaining) const {
  if (phase_ >= kFinished) return false;
  for (const std::string& id : remaining) {
    const auto it = index_.find(id);
    if (it != index_.end() && !(sent_.count(it->second) > 0)) return false;
  }
  return true;
}

std::vector<std::string> SecureRound::Names(const std::vector<uint32_t>& indices) const {
  std::vector<std::string> out;
  out.reserve(indices.size());
  for (uint32_t i : indices) out.push_back(participants_[i]);
  return out;
}

absl::StatusOr<std::vector<std::string>> SecureRound::ClosePhase() {
  if (phase_ >= kFinished) {
    return absl::FailedPreconditionError("SecAgg: the round's protocol is over");
  }
  std::vector<uint32_t> next;
  absl::Status status;
  switch (phase_) {
    case 0: {
      absl::StatusOr<privacy::SecAggKeysBroadcast> b = server_->CloseAdvertiseKeys();
      status = b.status();
      if (b.ok()) {
        keys_ = privacy::KeyListToWire(*b);
        for (const auto& k : b->clients) next.push_back(k.client);
        metrics_.set_advertised(static_cast<int32_t>(next.size()));
      }
      break;
    }
    case 1: {
      absl::StatusOr<std::map<uint32_t, privacy::SecAggSharesForClient>> m =
          server_->CloseShareKeys();
      status = m.status();
      if (m.ok()) {
        for (const auto& [v, shares] : *m) {
          shares_[v] = privacy::ShareListToWire(shares);
          next.push_back(v);
        }
        metrics_.set_shared(static_cast<int32_t>(next.size()));
      }
      break;
    }
    case 2: {
      absl::StatusOr<privacy::SecAggUnmaskingRequest> r = server_->CloseMaskedInput();
      status = r.status();
      if (r.ok()) {
        unmasking_ = privacy::UnmaskingRequestToWire(*r);
        next = r->survivors;
        metrics_.set_masked(static_cast<int32_t>(next.size()));
      }
      break;
    }
    case 3: {
      metrics_.set_unmasked_by(static_cast<int32_t>(sent_.size()));
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<std::vector<uint32_t>> sum = server_->Finish();
      metrics_.set_unmask_seconds(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      status = sum.status();
      if (sum.ok()) {
        sum_ = std::move(sum).value();
        metrics_.set_sum_digest(privacy::SumDigest(sum_));
      }
      break;
    }
  }
  sent_.clear();
  if (!status.ok()) {
    phase_ = kFailed;
    metrics_.set_failure(std::string(status.message().substr(0, 256)));
    return status;
  }
  phase_ = phase_ == 3 ? kFinished : phase_ + 1;
  return Names(next);
}

std::vector<float> SecureRound::DecodedSum() const {
  std::vector<float> out(sum_.size());
  encoder_.Decode(sum_, absl::MakeSpan(out));
  return out;
}

std::vector<std::string> SecureRound::Survivors() const {
  return Names(server_->survivors());
}

std::vector<std::string> SecureRound::Misbehaving() const {
  const std::set<uint32_t>& bad = server_->misbehaving_clients();
  return Names(std::vector<uint32_t>(bad.begin(), bad.end()));
}

absl::StatusOr<bool> SecureRound::Advance(absl::Time now, absl::Duration phase_timeout,
                                          absl::flat_hash_set<std::string>& waiting,
                                          bool unmask) {
  while (phase_ < kFinished && (unmask || phase_ < 3)) {
    if (!PhaseComplete(waiting) && now < phase_deadline_) break;
    absl::StatusOr<std::vector<std::string>> next = ClosePhase();
    if (!next.ok()) {
      waiting.clear();
      return next.status();
    }
    // Clients that missed the phase are out of the protocol (dropouts).
    const absl::flat_hash_set<std::string> in_next(next->begin(), next->end());
    for (auto it = waiting.begin(); it != waiting.end();) {
      if (in_next.contains(*it)) {
        ++it;
      } else {
        waiting.erase(it++);
      }
    }
    phase_deadline_ =
        std::max(now, phase_deadline_ == absl::InfiniteFuture() ? now : phase_deadline_) +
        phase_timeout;
  }
  return phase_ == kFinished;
}

SecureRound::Release SecureRound::Released(const aggregation::ModelWeights& model) const {
  // The released sum of the survivors' clipped (and noised) updates → their mean.
  const std::vector<float> sum = DecodedSum();
  Release r;
  r.mean.client_id = "secure-aggregation";
  r.mean.weight = static_cast<double>(Survivors().size());
  size_t offset = 0;
  for (const aggregation::Tensor& w : model) {
    aggregation::Tensor t;
    t.name = w.name;
    t.shape = w.shape;
    t.values.resize(w.values.size());
    for (size_t i = 0; i < t.values.size(); ++i) {
      t.values[i] = static_cast<float>(sum[offset + i] / r.mean.weight);
    }
    offset += w.values.size();
    r.mean.tensors.push_back(std::move(t));
  }
  if (encoding_.clipped_count && offset < sum.size()) {
    r.noised_unclipped = sum[offset] / encoding_.clip_norm;
  }
  return r;
}

}  // namespace fedge::server
