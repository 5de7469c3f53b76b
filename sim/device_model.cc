#include "sim/device_model.h"

#include <algorithm>
#include <cmath>

namespace fedge::sim {
namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Streams of the config seed, one per kind of draw.
constexpr uint64_t kDeviceStream = 0x6465766963650001ULL;  // "device"

}  // namespace

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t h = SplitMix(a);
  h = SplitMix(h ^ b);
  h = SplitMix(h ^ c);
  return SplitMix(h ^ d);
}

double SampleDistribution(const v1::Distribution& d, base::Rng& rng) {
  switch (d.kind_case()) {
    case v1::Distribution::kConstant:
      return d.constant();
    case v1::Distribution::kLognormal:
      return d.lognormal().median() * std::exp(d.lognormal().sigma() * rng.Normal());
    case v1::Distribution::kUniform:
      return d.uniform().min() + (d.uniform().max() - d.uniform().min()) * rng.Uniform();
    case v1::Distribution::kChoices: {
      const v1::DiscreteDistribution& c = d.choices();
      if (c.values().empty()) return 0;
      if (c.weights().empty()) return c.values(static_cast<int>(rng.UniformInt(c.values_size())));
      double total = 0;
      for (double w : c.weights()) total += w;
      double u = rng.Uniform() * total;
      for (int i = 0; i < c.values_size(); ++i) {
        u -= c.weights(i);
        if (u < 0) return c.values(i);
      }
      return c.values(c.values_size() - 1);
    }
    case v1::Distribution::KIND_NOT_SET:
      break;
  }
  return 0;
}

DeviceModel DrawDevice(const v1::SimConfig& config, int64_t client) {
  // One generator per client; the draws happen in this fixed order.
  base::Rng rng(MixSeed(config.seed(), kDeviceStream), static_cast<uint64_t>(client));
  const v1::DeviceProfiles& d = config.devices();
  const v1::LinkProfiles& l = config.links();
  DeviceModel m;
  m.compute_speed = std::max(1e-3, SampleDistribution(d.compute_speed(), rng));
  m.memory_budget_bytes =
      static_cast<int64_t>(std::max(0.0, SampleDistribution(d.memory_budget_mb(), rng)) * 1e6);
  m.availability = std::clamp(SampleDistribution(d.availability(), rng), 0.0, 1.0);
  m.dropout = std::clamp(SampleDistribution(d.dropout(), rng), 0.0, 1.0);
  m.bandwidth_down_bps = std::max(1.0, SampleDistribution(l.bandwidth_down_mbps(), rng) * 1e6);
  m.bandwidth_up_bps = std::max(1.0, SampleDistribution(l.bandwidth_up_mbps(), rng) * 1e6);
  m.latency_s = std::max(0.0, SampleDistribution(l.latency_ms(), rng) / 1e3);
  return m;
}

double VirtualRoundSeconds(const DeviceModel& device, int64_t bytes_down, int64_t bytes_up,
                           int64_t examples) {
  return 8.0 * static_cast<double>(bytes_down) / device.bandwidth_down_bps + device.latency_s +
         static_cast<double>(examples) / device.compute_speed +
         8.0 * static_cast<double>(bytes_up) / device.bandwidth_up_bps;
}

}  // namespace fedge::sim
