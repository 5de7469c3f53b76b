// The cost of the update bound at a round's close, and of its direction check: a round of
// N held updates of P floats through UpdateBound (Take every update, Release at the close)
// with the adaptive norm bound and weight caps only, then with the direction check too, in
// the same run; prints the check's cost as a ratio to the bound alone and to the weighted
// mean's accumulation of the same updates (the work every round does anyway).
//
// N = 10 (the fleet demo), 64 (the most the coordinator holds by default); P = 44k (the
// cnn), 1M, 4M (N × P × 4 bytes within the coordinator's 256 MiB of held values: at 4M
// parameters it holds at most 16). The updates are random around one direction, so that
// the check keeps them all and the pass is the whole work. Timing: the fastest round of the
// repetitions (the machine is shared; interference only ever slows a round).
//
//   build/bin/update_bound_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "aggregation/weighted_mean.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "server/update_bound.h"

namespace fedge::server {
namespace {

enum Mode { kBoundOnly = 0, kWithDirection = 1, kAccumulateOnly = 2 };

// N updates of P values: a common direction plus noise of the same size.
const std::vector<aggregation::Update>& Round(int n, int64_t p) {
  static std::map<std::pair<int, int64_t>, std::vector<aggregation::Update>> rounds;
  std::vector<aggregation::Update>& r = rounds[{n, p}];
  if (!r.empty()) return r;
  base::Rng rng(7);
  std::vector<float> d(static_cast<size_t>(p));
  for (float& x : d) x = static_cast<float>(rng.Normal());
  for (int i = 0; i < n; ++i) {
    aggregation::Update u;
    u.client_id = "c" + std::to_string(i);
    u.weight = 100;
    std::vector<float> v(static_cast<size_t>(p));
    for (int64_t j = 0; j < p; ++j) v[j] = 1e-3f * (d[j] + static_cast<float>(rng.Normal()));
    u.tensors.push_back({"w", {p}, std::move(v), std::nullopt});
    r.push_back(std::move(u));
  }
  return r;
}

std::map<std::tuple<int, int64_t, int>, double>& Best() {
  static std::map<std::tuple<int, int64_t, int>, double> best;
  return best;
}

void BM_RoundClose(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const int64_t p = state.range(1);
  const Mode mode = static_cast<Mode>(state.range(2));
  if (int64_t{n} * p * 4 > (int64_t{256} << 20)) {
    state.SkipWithError("over the coordinator's 256 MiB of held values");
    return;
  }
  const std::vector<aggregation::Update>& round = Round(n, p);
  std::vector<double> norms;
  for (const aggregation::Update& u : round) norms.push_back(aggregation::L2Norm(u));
  double& best = Best()[{n, p, static_cast<int>(mode)}];
  for (auto _ : state) {
    std::vector<aggregation::Update> copies = round;  // the bound takes its updates
    const auto t0 = std::chrono::steady_clock::now();
    size_t out = 0;
    if (mode == kAccumulateOnly) {
      auto mean = aggregation::WeightedMean::Create({{"w", {p}}}).value();
      for (const aggregation::Update& u : copies) FEDGE_CHECK_OK(mean->Accumulate(u));
      out = copies.size();
    } else {
      UpdateBound::Options o;
      o.norm_multiple = 2;
      o.weight_multiple = 2;
      o.direction_check = mode == kWithDirection;
      o.held_updates = 64;
      UpdateBound bound(o);
      for (size_t i = 0; i < copies.size(); ++i) {
        out += bound.Take(std::move(copies[i]), norms[i]).size();
      }
      out += bound.Release().size();
      FEDGE_CHECK(bound.excluded().empty());
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    if (best == 0 || s < best) best = s;
    FEDGE_CHECK(out == round.size());
  }
}

BENCHMARK(BM_RoundClose)
    ->ArgNames({"N", "P", "mode"})
    ->ArgsProduct({{10, 64}, {44426, 1 << 20, 4 << 20}, {kAccumulateOnly, kBoundOnly, kWithDirection}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

void PrintSummary() {
  std::printf("\nA round's close: N held updates of P floats (ms, fastest round)\n");
  std::printf("%4s %9s %12s %12s %15s %14s %16s\n", "N", "P", "accumulate", "bound only",
              "bound+direction", "check / bound", "check / accumulate");
  for (int n : {10, 64}) {
    for (int64_t p : {int64_t{44426}, int64_t{1} << 20, int64_t{4} << 20}) {
      if (int64_t{n} * p * 4 > (int64_t{256} << 20)) continue;
      const double acc = Best()[{n, p, kAccumulateOnly}] * 1e3;
      const double bound = Best()[{n, p, kBoundOnly}] * 1e3;
      const double dir = Best()[{n, p, kWithDirection}] * 1e3;
      if (acc == 0 || bound == 0 || dir == 0) continue;  // filtered out of this run
      std::printf("%4d %9lld %12.2f %12.2f %15.2f %14.2f %16.2f\n", n,
                  static_cast<long long>(p), acc, bound, dir, dir / bound, (dir - bound) / acc);
    }
  }
}

}  // namespace
}  // namespace fedge::server

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  fedge::server::PrintSummary();
  return 0;
}
