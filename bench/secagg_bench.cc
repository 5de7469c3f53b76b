// Secure aggregation cost (privacy/secagg.h): one full in-process session per benchmark, n
// clients, m = 100k values, 0% or 10% of the clients dropping after they shared keys (before
// masked input: the case that makes the server recompute pairwise masks), SecAgg (complete
// graph) vs SecAgg+ (Harary graph, k and t_s from ChooseSecAggPlusParameters with 5%
// colluding / 30% dropout; at n = 100 that k reaches n − 1, so SecAgg+ = SecAgg there).
// Single-threaded; times are the thread's CPU time. Counters, per client (mean over clients) and for the server:
//   client_keys_ms   round 0: two X25519 key pairs
//   client_share_ms  round 1: Shamir shares of b and s_SK, one AEAD encryption per holder
//   client_mask_ms   round 2: decrypting shares, key agreement, PRG expansion, masking
//   server_unmask_ms round 3: reconstruction and removing masks (SecAggServer::Finish)
//   server_total_ms  every server call of the session
// Compare with Bonawitz et al. 2017 (Table 3, single-threaded Java, n = 1000, m = 100k):
// server 4.9 s at 0% dropout, 181 s at 10%.
#include <benchmark/benchmark.h>

#include <time.h>

#include <cstdio>
#include <memory>
#include <set>
#include <vector>

#include "base/status_macros.h"
#include "privacy/secagg.h"

namespace fedge::privacy {
namespace {

// Thread CPU time, so that the figures hold on a shared machine (the session is one thread).
struct Clock {
  static double now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  }
};
double Ms(double d) { return d; }

void BM_SecAggSession(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const bool plus = state.range(1) != 0;
  const int drop_pct = static_cast<int>(state.range(2));
  const int64_t m = 100000;
  SecAggConfig c;
  c.num_clients = n;
  c.threshold = n * 2 / 3;
  c.vector_length = m;
  c.session_id = 1;
  c.secagg_plus = plus;
  c.graph_seed.fill(7);
  auto plan = SecAggPlan::Create(c);
  FEDGE_CHECK_OK(plan.status());
  std::set<uint32_t> dropped;
  for (int u = 0; u < n && static_cast<int>(dropped.size()) * 100 < drop_pct * n; u += 10) {
    dropped.insert(u);
  }
  std::vector<uint32_t> input(m);
  for (int64_t i = 0; i < m; ++i) input[i] = static_cast<uint32_t>(i * 2654435761u);

  for (auto _ : state) {
    double keys_ms = 0, share_ms = 0, mask_ms = 0, server_ms = 0, unmask_ms = 0;
    auto server_or = SecAggServer::Create(c);
    FEDGE_CHECK_OK(server_or.status());
    SecAggServer& server = **server_or;
    std::vector<std::unique_ptr<SecAggClient>> clients;
    for (int u = 0; u < n; ++u) {
      auto t0 = Clock::now();
      auto cl = SecAggClient::Create(c, u);
      FEDGE_CHECK_OK(cl.status());
      auto adv = (*cl)->AdvertiseKeys();
      keys_ms += Ms(Clock::now() - t0);
      clients.push_back(std::move(*cl));
      t0 = Clock::now();
      FEDGE_CHECK_OK(server.ReceiveAdvertiseKeys(*adv));
      server_ms += Ms(Clock::now() - t0);
    }
    auto t0 = Clock::now();
    auto keys = server.CloseAdvertiseKeys();
    server_ms += Ms(Clock::now() - t0);
    FEDGE_CHECK_OK(keys.status());
    for (int u = 0; u < n; ++u) {
      t0 = Clock::now();
      auto sk = clients[u]->ShareKeys(*keys);
      share_ms += Ms(Clock::now() - t0);
      FEDGE_CHECK_OK(sk.status());
      t0 = Clock::now();
      FEDGE_CHECK_OK(server.ReceiveShareKeys(*sk));
      server_ms += Ms(Clock::now() - t0);
    }
    t0 = Clock::now();
    auto routed = server.CloseShareKeys();
    server_ms += Ms(Clock::now() - t0);
    FEDGE_CHECK_OK(routed.status());
    int masked_clients = 0;
    for (auto& [v, shares] : *routed) {
      if (dropped.count(v)) continue;
      t0 = Clock::now();
      auto mi = clients[v]->MaskedInput(shares, input);
      mask_ms += Ms(Clock::now() - t0);
      ++masked_clients;
      FEDGE_CHECK_OK(mi.status());
      t0 = Clock::now();
      FEDGE_CHECK_OK(server.ReceiveMaskedInput(*mi));
      server_ms += Ms(Clock::now() - t0);
    }
    routed->clear();
    t0 = Clock::now();
    auto req = server.CloseMaskedInput();
    server_ms += Ms(Clock::now() - t0);
    FEDGE_CHECK_OK(req.status());
    for (uint32_t v : req->survivors) {
      auto resp = clients[v]->Unmask(*req);
      FEDGE_CHECK_OK(resp.status());
      t0 = Clock::now();
      FEDGE_CHECK_OK(server.ReceiveUnmaskingResponse(*resp));
      server_ms += Ms(Clock::now() - t0);
    }
    t0 = Clock::now();
    auto sum = server.Finish();
    unmask_ms = Ms(Clock::now() - t0);
    server_ms += unmask_ms;
    FEDGE_CHECK_OK(sum.status());
    benchmark::DoNotOptimize(sum->data());
    state.SetIterationTime((keys_ms + share_ms + mask_ms + server_ms) / 1000.0);
    state.counters["k"] = plan->num_neighbors();
    state.counters["t_s"] = plan->share_threshold();
    state.counters["dropped"] = static_cast<double>(dropped.size());
    state.counters["client_keys_ms"] = keys_ms / n;
    state.counters["client_share_ms"] = share_ms / n;
    state.counters["client_mask_ms"] = mask_ms / masked_clients;
    state.counters["server_unmask_ms"] = unmask_ms;
    state.counters["server_total_ms"] = server_ms;
  }
}

// {n, SecAgg+?, dropout %}
BENCHMARK(BM_SecAggSession)
    ->ArgNames({"n", "plus", "drop_pct"})
    ->Args({100, 0, 0})
    ->Args({100, 0, 10})
    ->Args({100, 1, 0})
    ->Args({100, 1, 10})
    ->Args({1000, 1, 0})
    ->Args({1000, 1, 10})
    ->Args({1000, 0, 0})
    ->Args({1000, 0, 10})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kSecond);

}  // namespace
}  // namespace fedge::privacy

BENCHMARK_MAIN();
