// Simulated devices and links: each virtual client's compute speed, memory
// budget, availability and dropout probabilities, bandwidths and latency are drawn from
// the config's distributions with Rng(seed, client), so a client's profile is a pure
// function of (config, client) and is recomputed when needed instead of stored: memory
// does not grow with the population.
//
// A client's virtual round time (VirtualRoundSeconds) is
//   download bytes / down bandwidth + latency + examples trained / speed + upload bytes / up
// bandwidth, the quantities a real device spends between fetching its task and its update
// arriving.
#ifndef FEDGE_SIM_DEVICE_MODEL_H_
#define FEDGE_SIM_DEVICE_MODEL_H_

#include <cstdint>

#include "base/rng.h"
#include "proto/sim.pb.h"

namespace fedge::sim {

struct DeviceModel {
  double compute_speed = 1000;      // examples per second
  int64_t memory_budget_bytes = 0;  // 0 = unknown
  double availability = 1;          // P(online for a round it was sampled for)
  double dropout = 0;               // P(drops out before uploading)
  double bandwidth_down_bps = 20e6;  // bits per second
  double bandwidth_up_bps = 5e6;
  double latency_s = 0.05;
};

// A draw from `d` (validated by ValidateSimConfig). Lognormal draws and the like are not
// clamped here; DrawDevice clamps into each field's range.
double SampleDistribution(const v1::Distribution& d, base::Rng& rng);

// Client `client`'s device, from config.devices, config.links and config.seed.
// REQUIRES: `config` validated.
DeviceModel DrawDevice(const v1::SimConfig& config, int64_t client);

// The round's seconds for `device` moving the given bytes and training `examples` examples.
double VirtualRoundSeconds(const DeviceModel& device, int64_t bytes_down, int64_t bytes_up,
                           int64_t examples);

// 64-bit mixing of several values (SplitMix64 finalizer over each in turn): seeds and
// streams derived from (seed, client, round, ...) that do not collide for nearby inputs.
uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_DEVICE_MODEL_H_
