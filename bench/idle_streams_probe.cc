// idle_streams_probe: an attacker's view of a running fedge-coordinator. It tries to hold N
// upload streams open that never send a header (no credential): a stream the server ends
// is reopened at once, one it refused for this address a second later. Meanwhile it
// measures what an operator sees (GetJob latency on the admin listener) and the
// coordinator's thread count (/proc/PID/status).
//
//   idle_streams_probe --coordinator [::1]:50051 --admin 127.0.0.1:50052 \
//       --token_file op.token --pid $(pidof fedge-coordinator) --streams 2000 --seconds 60
//
// Prints one summary line per 10 s and a final report: streams opened, ended by the server
// (and with which code), GetJob p50/p99/max, threads before/max. Used by
// bench/idle_streams.sh; figures in docs/security.md.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/admin.grpc.pb.h"
#include "proto/coordinator.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "Devices' listener (plaintext).");
ABSL_FLAG(std::string, admin, "127.0.0.1:50052", "Admin listener (plaintext, loopback).");
ABSL_FLAG(std::string, token_file, "", "Operator token for GetJob.");
ABSL_FLAG(int, pid, 0, "The coordinator's pid (threads from /proc/PID/status).");
ABSL_FLAG(int, streams, 2000, "Idle upload streams to hold open.");
ABSL_FLAG(int, connections, 20, "Connections they are spread over.");
ABSL_FLAG(int, seconds, 60, "How long to hold them.");

namespace fedge {
namespace {

int Threads(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "Threads:")) return std::stoi(line.substr(8));
  }
  return -1;
}

// One idle call: opened, never written to, until the server ends it.
struct IdleCall {
  grpc::ClientContext ctx;
  v1::UploadUpdateResponse response;
  std::unique_ptr<grpc::ClientAsyncWriter<v1::UpdateChunk>> writer;
  grpc::Status status;
  bool started = false;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

int Run() {
  const int n = absl::GetFlag(FLAGS_streams), pid = absl::GetFlag(FLAGS_pid);
  std::string token;
  {
    std::ifstream in(absl::GetFlag(FLAGS_token_file));
    std::getline(in, token);
    token = std::string(absl::StripAsciiWhitespace(token));
  }
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> stubs;
  for (int c = 0; c < absl::GetFlag(FLAGS_connections); ++c) {
    grpc::ChannelArguments args;
    args.SetInt("fedge.probe.connection", c);  // distinct args: a connection of its own
    stubs.push_back(v1::Coordinator::NewStub(grpc::CreateCustomChannel(
        absl::GetFlag(FLAGS_coordinator), grpc::InsecureChannelCredentials(), args)));
  }
  auto admin = v1::Admin::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_admin), grpc::InsecureChannelCredentials()));

  // One call before the attack: the admin connection is up, so that its setup is not counted.
  auto get_job = [&]() {
    v1::GetJobRequest req;
    v1::JobStatus status;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return admin->GetJob(&ctx, req, &status);
  };
  get_job();

  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<IdleCall>> calls(n);
  // Streams the server refused for this address, to reopen after a second.
  absl::Mutex retry_mu;
  std::vector<std::pair<int, absl::Time>> retry;
  std::atomic<int64_t> opened{0}, ended{0};
  std::map<std::string, int64_t> end_codes;
  auto open = [&](int i) {
    calls[i] = std::make_unique<IdleCall>();
    IdleCall& c = *calls[i];
    c.writer = stubs[i % stubs.size()]->PrepareAsyncUploadUpdate(&c.ctx, &c.response, &cq);
    c.writer->StartCall(reinterpret_cast<void*>(static_cast<intptr_t>(2 * i)));
    ++opened;
  };
  for (int i = 0; i < n; ++i) open(i);
  // Completions: even tags = StartCall done (then wait for the server's status), odd = the
  // server ended the call (open another in its place).
  const absl::Time end = absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::thread pump([&] {
    void* tag;
    bool ok;
    while (cq.Next(&tag, &ok)) {
      const intptr_t t = reinterpret_cast<intptr_t>(tag);
      const int i = static_cast<int>(t / 2);
      if (t % 2 == 0) {
        calls[i]->writer->Finish(&calls[i]->status, reinterpret_cast<void*>(t + 1));
      } else {
        ++ended;
        const grpc::StatusCode code = calls[i]->status.error_code();
        ++end_codes[std::to_string(code) + " " + calls[i]->status.error_message().substr(0, 60)];
        if (absl::Now() >= end) continue;
        if (code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          // Refused for this address: try again in a second (the main loop reopens it).
          absl::MutexLock lock(&retry_mu);
          retry.push_back({i, absl::Now() + absl::Seconds(1)});
        } else {
          open(i);
        }
      }
    }
  });

  auto reopen_due = [&] {
    std::vector<int> due;
    {
      absl::MutexLock lock(&retry_mu);
      const absl::Time now = absl::Now();
      for (size_t j = 0; j < retry.size();) {
        if (retry[j].second <= now) {
          due.push_back(retry[j].first);
          retry[j] = retry.back();
          retry.pop_back();
        } else {
          ++j;
        }
      }
    }
    for (int i : due) open(i);
  };
  const int threads_before = Threads(pid);
  int threads_max = threads_before;
  std::vector<double> latencies_ms;
  int64_t getjob_errors = 0;
  absl::Time next_report = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end) {
    const absl::Time t0 = absl::Now();
    const grpc::Status s = get_job();
    latencies_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    // NOT_FOUND (no job yet) is an answer; anything else is a failure.
    if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) ++getjob_errors;
    threads_max = std::max(threads_max, Threads(pid));
    if (absl::Now() >= next_report) {
      std::printf("idle_streams_probe: %lld opened, %lld ended by the server, threads %d, GetJob "
                  "p99 %.2f ms\n",
                  static_cast<long long>(opened.load()), static_cast<long long>(ended.load()), Threads(pid),
                  Percentile(latencies_ms, 0.99));
      std::fflush(stdout);
      next_report += absl::Seconds(10);
    }
    reopen_due();
    absl::SleepFor(absl::Milliseconds(100));
  }
  for (auto& c : calls) {
    if (c) c->ctx.TryCancel();
  }
  absl::SleepFor(absl::Milliseconds(500));
  cq.Shutdown();
  pump.join();
  std::printf("idle_streams_probe: held %d idle upload streams for %d s over %d connections\n", n,
              absl::GetFlag(FLAGS_seconds), absl::GetFlag(FLAGS_connections));
  std::printf("  streams opened %lld, ended by the server before the end %lld\n",
              static_cast<long long>(opened.load()), static_cast<long long>(ended.load()));
  for (const auto& [code, count] : end_codes) {
    std::printf("    code %s: %lld\n", code.c_str(), static_cast<long long>(count));
  }
  std::printf("  coordinator threads: %d before, %d at most\n", threads_before, threads_max);
  std::printf("  operator GetJob: %zu calls, %lld failed, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
              latencies_ms.size(), static_cast<long long>(getjob_errors),
              Percentile(latencies_ms, 0.5), Percentile(latencies_ms, 0.99),
              Percentile(latencies_ms, 1.0));
  return 0;
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fedge::Run();
}
