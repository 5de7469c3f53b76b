#include "client/secagg_device.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "base/log.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "privacy/dp.h"
#include "privacy/fixed_point.h"
#include "privacy/secagg_wire.h"

namespace fedge::client {

absl::StatusOr<std::unique_ptr<SecAggDevice>> SecAggDevice::Create(const v1::TaskHeader& task,
                                                                  const LocalUpdate& update,
                                                                  const Options& options) {
  const v1::SecureAggregationSession& session = task.secure_aggregation();
  FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggConfig config, privacy::ConfigFromSession(session));
  // The clipped Δ, flattened in the task model's parameter order.
  std::vector<float> x;
  x.reserve(static_cast<size_t>(std::max<int64_t>(0, config.vector_length)));
  for (const v1::TensorProto& p : update.delta.parameters()) {
    x.insert(x.end(), p.values().begin(), p.values().end());
  }
  const size_t num_params = x.size();
  if (session.clipped_count()) {
    // Adaptive clipping: whether this update was within the clip norm, as one more summand.
    const double clip = task.privacy().clip_norm();
    x.push_back(update.delta_norm <= clip ? static_cast<float>(clip) : 0.0f);
  }
  if (static_cast<int64_t>(x.size()) != config.vector_length) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SecAggDevice: the update has ", x.size(), " values, the secure-aggregation session ",
        config.vector_length));
  }
  const bool noise_params = session.noise_stddev() > 0;
  const bool noise_count = session.clipped_count() && session.count_noise_stddev() > 0;
  if (noise_params || noise_count) {
    // Distributed DP: this device's share of the noise.
    std::unique_ptr<privacy::NoiseGenerator> noise;
    if (options.noise_seed.has_value()) {
      noise = privacy::NoiseGenerator::CreateFromSeed(*options.noise_seed);
    } else {
      FEDGE_ASSIGN_OR_RETURN(noise, privacy::NoiseGenerator::Create());
    }
    if (noise_params) {
      noise->AddGaussianNoise(absl::MakeSpan(x).subspan(0, num_params), session.noise_stddev());
    }
    if (noise_count) {
      noise->AddGaussianNoise(absl::MakeSpan(x).subspan(num_params), session.count_noise_stddev());
    }
  }
  FEDGE_ASSIGN_OR_RETURN(const privacy::FixedPointEncoder encoder,
                         privacy::FixedPointEncoder::Create(session.max_abs_value(),
                                                            session.max_summands()));
  std::vector<uint32_t> input(x.size());
  FEDGE_ASSIGN_OR_RETURN(const int64_t clamped, encoder.Encode(x, absl::MakeSpan(input)));
  if (clamped > 0) {
    FEDGE_LOG(WARNING) << "job " << task.job_id() << " round " << task.round() << ": " << clamped
                       << " update values clamped to the fixed-point bound";
  }
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<privacy::SecAggClient> client,
                         privacy::SecAggClient::Create(
                             config, static_cast<uint32_t>(session.client_index())));
  std::unique_ptr<SecAggDevice> device(new SecAggDevice(config.num_clients, std::move(client)));
  device->input_ = std::move(input);
  device->clamped_ = clamped;
  v1::SecAggMaskedInput& m = device->masked_metrics_;
  m.set_num_examples(update.num_examples);
  m.mutable_metrics()->set_train_loss(update.train_loss);
  m.mutable_metrics()->set_train_accuracy(update.train_accuracy);
  m.mutable_metrics()->set_steps(update.steps);
  m.mutable_metrics()->set_train_seconds(update.seconds);
  m.mutable_metrics()->set_peak_rss_bytes(options.peak_rss_bytes);
  return device;
}

absl::StatusOr<v1::SecAggStepRequest> SecAggDevice::Start() {
  if (phase_ != -1) return absl::FailedPreconditionError("SecAggDevice: already started");
  FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggAdvertiseKeys keys, client_->AdvertiseKeys());
  v1::SecAggStepRequest r;
  *r.mutable_advertise_keys() = privacy::KeysToWire(keys);
  phase_ = 0;
  return r;
}

absl::StatusOr<v1::SecAggStepRequest> SecAggDevice::Continue(const v1::SecAggStepResponse& result) {
  v1::SecAggStepRequest r;
  switch (phase_) {
    case 0: {
      if (!result.has_keys()) return absl::InternalError("SecAggDevice: expected the key list");
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggKeysBroadcast list,
                             privacy::KeyListFromWire(result.keys(), num_clients_));
      // Encrypted shares of the self-mask seed and the mask key.
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggShareKeys shares, client_->ShareKeys(list));
      *r.mutable_share_keys() = privacy::ShareKeysToWire(shares);
      break;
    }
    case 1: {
      if (!result.has_shares()) return absl::InternalError("SecAggDevice: expected shares");
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggSharesForClient mine,
                             privacy::ShareListFromWire(result.shares(), num_clients_));
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggMaskedInput masked,
                             client_->MaskedInput(mine, input_));
      v1::SecAggMaskedInput* m = r.mutable_masked_input();
      *m = masked_metrics_;
      m->set_masked(privacy::PackMasked(masked.masked));
      break;
    }
    case 2: {
      if (!result.has_unmasking_request()) {
        return absl::InternalError("SecAggDevice: expected the unmasking request");
      }
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggUnmaskingRequest request,
                             privacy::UnmaskingRequestFromWire(result.unmasking_request(),
                                                               num_clients_));
      // The shares the coordinator needs to remove the masks.
      FEDGE_ASSIGN_OR_RETURN(const privacy::SecAggUnmaskingResponse reveal,
                             client_->Unmask(request));
      *r.mutable_unmasking() = privacy::UnmaskingToWire(reveal);
      break;
    }
    default:
      return absl::FailedPreconditionError(
          phase_ < 0 ? "SecAggDevice: not started" : "SecAggDevice: the protocol is done");
  }
  ++phase_;
  return r;
}

privacy::Seed DeviceNoiseSeed(uint64_t base_seed, const v1::TaskHeader& task,
                              absl::string_view client_id) {
  base::Rng rng(base_seed ^ base::Fnv1a(client_id), static_cast<uint64_t>(task.round()));
  privacy::Seed seed{};
  for (size_t i = 0; i < seed.size(); i += sizeof(uint64_t)) {
    const uint64_t v = rng.NextU64();
    std::memcpy(seed.data() + i, &v, sizeof v);
  }
  return seed;
}

absl::StatusOr<int64_t> RunSecureAggregation(SecAggDevice& device, const v1::TaskHeader& task,
                                             DeviceLink& link) {
  int64_t sent = 0;
  FEDGE_ASSIGN_OR_RETURN(v1::SecAggStepRequest message, device.Start());
  for (;;) {
    sent += static_cast<int64_t>(message.ByteSizeLong());
    FEDGE_RETURN_IF_ERROR(link.SecureAggregationStep(task, std::move(message)).status());
    if (device.done()) return sent;
    // The phase's result, once the coordinator closed the phase.
    v1::SecAggStepRequest poll;
    poll.set_poll(device.phase());
    v1::SecAggStepResponse result;
    for (;;) {
      FEDGE_ASSIGN_OR_RETURN(result, link.SecureAggregationStep(task, poll));
      if (result.result_case() != v1::SecAggStepResponse::kRetryAfterMs) break;
      if (!link.Pause(absl::Milliseconds(std::clamp<int64_t>(result.retry_after_ms(), 20, 5000)))) {
        return absl::CancelledError("SecAggDevice: stopping");
      }
    }
    FEDGE_ASSIGN_OR_RETURN(message, device.Continue(result));
  }
}

}  // namespace fedge::client
