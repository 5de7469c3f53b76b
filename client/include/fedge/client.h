// fedge's device library: embed a federated-learning client in an app.
//
// This header depends only on the C++17 standard library (no gRPC, protobuf or Abseil
// headers); link the fedge_client_grpc library.
//
//   fedge::ClientConfig config;
//   config.coordinator = "coordinator.example:7070";
//   config.enrollment_token = token;
//   config.tls_root_ca_pem = ca_pem;                  // TLS unless config.insecure
//   config.state_path = app_dir + "/fedge.state";     // keeps the device's id (mode 0600)
//   config.data_source = [&](fedge::LocalData* d, std::string* error) {
//     d->shape = {1, 28, 28};  d->num_classes = 10;   // the app's own examples
//     d->features = ...;  d->labels = ...;
//     return true;
//   };
//   std::string error;
//   std::unique_ptr<fedge::Client> client = fedge::Client::Create(config, &error);
//   if (!client) { report(error); return; }
//   std::atomic<bool> stop{false};                    // set it to stop (e.g. app paused)
//   if (!client->Run(stop, &error)) report(error);
//
// Run registers, then trains every task the coordinator sends on the local data and
// uploads the update, reconnecting by itself (jittered exponential backoff) while the
// coordinator is away, until `stop` is set; client/grpc/client_runtime.h documents the
// details. The data never leaves the device; only model updates do.
#ifndef FEDGE_CLIENT_INCLUDE_FEDGE_CLIENT_H_
#define FEDGE_CLIENT_INCLUDE_FEDGE_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fedge {

// The device's local training examples.
struct LocalData {
  std::vector<int> shape;        // per example, e.g. {1, 28, 28}
  int num_classes = 0;
  std::vector<float> features;   // examples × product(shape) values, pixels in [0, 1]
  std::vector<int32_t> labels;   // one per example, in [0, num_classes)
};

// Fills `data`; returns false with `*error` set when no data is available. Called when
// the client is created and again before every task (so it may return fresh data).
using DataSource = std::function<bool(LocalData* data, std::string* error)>;

enum class ComputeClass { kUnspecified = 0, kLow = 1, kMedium = 2, kHigh = 3 };

// What one round did on this device.
struct RoundSummary {
  std::string job_id;
  int64_t round = 0;
  int64_t num_examples = 0;
  double train_loss = 0;
  double train_accuracy = 0;
  double seconds = 0;       // task received → update acknowledged
  int64_t bytes_down = 0;   // model received
  int64_t bytes_up = 0;     // update sent
  int64_t peak_rss_bytes = 0;  // the process's peak resident memory so far
};

struct ClientConfig {
  std::string coordinator;        // host:port
  std::string enrollment_token;
  bool insecure = false;          // plaintext: loopback and tests only
  std::string tls_root_ca_pem;    // empty: the system's roots
  std::string tls_cert_chain_pem; // mutual TLS (with tls_private_key_pem)
  std::string tls_private_key_pem;
  // The local data: a shard file written by fedge's partitioning tools, or a callback.
  std::string shard_path;
  DataSource data_source;
  std::string state_path;         // keeps the client id across restarts; empty: not kept
  int64_t memory_budget_bytes = 0;  // tasks estimated to need more are refused; 0 = none
  ComputeClass compute_class = ComputeClass::kUnspecified;
  std::string platform;           // e.g. "android-arm64"
  bool leave_on_stop = false;     // leave the population when stopped
  std::function<void(const RoundSummary&)> on_round;  // called on Run's thread
};

class Client {
 public:
  // Null with `*error` set on a bad config (no coordinator, token or data; unreadable
  // shard or state file).
  static std::unique_ptr<Client> Create(ClientConfig config, std::string* error);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Blocks until `stop` is set (true) or a permanent error such as a wrong enrollment
  // token (false, `*error` set).
  bool Run(const std::atomic<bool>& stop, std::string* error);

  // The id the coordinator assigned ("" before registering).
  std::string client_id() const;

 private:
  class Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedge

#endif  // FEDGE_CLIENT_INCLUDE_FEDGE_CLIENT_H_
