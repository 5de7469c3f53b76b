// fedge::Client (client/include/fedge/client.h) over client::ClientRuntime.
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc/client_runtime.h"
#include "data/shard.h"
#include "fedge/client.h"

namespace fedge {
namespace {

absl::StatusOr<std::shared_ptr<const data::Dataset>> FromLocalData(const DataSource& source) {
  LocalData local;
  std::string error;
  if (!source(&local, &error)) {
    return absl::UnavailableError(absl::StrCat("data source: ", error.empty() ? "no data" : error));
  }
  data::Dataset d;
  d.shape = std::move(local.shape);
  d.num_classes = local.num_classes;
  d.features = std::move(local.features);
  d.labels = std::move(local.labels);
  d.num_examples = static_cast<int>(d.labels.size());
  const absl::Status s = data::ValidateDataset(d);
  if (!s.ok()) return s;
  return std::make_shared<const data::Dataset>(std::move(d));
}

}  // namespace

class Client::Impl {
 public:
  std::unique_ptr<client::ClientRuntime> runtime;
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

std::unique_ptr<Client> Client::Create(ClientConfig config, std::string* error) {
  client::ClientRuntimeOptions o;
  o.target = std::move(config.coordinator);
  o.enrollment_token = std::move(config.enrollment_token);
  o.insecure = config.insecure;
  o.tls_root_ca_pem = std::move(config.tls_root_ca_pem);
  o.tls_cert_chain_pem = std::move(config.tls_cert_chain_pem);
  o.tls_private_key_pem = std::move(config.tls_private_key_pem);
  o.state_path = std::move(config.state_path);
  o.leave_on_stop = config.leave_on_stop;
  o.profile.set_memory_budget_bytes(config.memory_budget_bytes);
  o.profile.set_compute_class(static_cast<v1::ComputeClass>(config.compute_class));
  o.profile.set_platform(config.platform);
  o.profile.set_client_version("fedge-client-library 0.1.0");
  auto fail = [error](const absl::Status& s) {
    if (error != nullptr) *error = std::string(s.message());
    return std::unique_ptr<Client>();
  };
  if (!config.shard_path.empty() && config.data_source) {
    return fail(absl::InvalidArgumentError("fedge::Client: give shard_path or data_source, not both"));
  }
  if (!config.shard_path.empty()) {
    data::ShardReadOptions compact;  // 8-bit images stay 8-bit in memory
    compact.compact_u8 = true;
    auto d = data::ReadShard(config.shard_path, compact);
    if (!d.ok()) return fail(d.status());
    o.data = std::make_shared<const data::Dataset>(std::move(d).value());
  } else if (config.data_source) {
    o.data_source = [source = std::move(config.data_source)] { return FromLocalData(source); };
  }
  if (config.on_round) {
    o.on_round = [cb = std::move(config.on_round)](const client::RoundReport& r) {
      RoundSummary s;
      s.job_id = r.job_id;
      s.round = r.round;
      s.num_examples = r.num_examples;
      s.train_loss = r.train_loss;
      s.train_accuracy = r.train_accuracy;
      s.seconds = r.total_seconds;
      s.bytes_down = r.bytes_down;
      s.bytes_up = r.bytes_up;
      s.peak_rss_bytes = r.peak_rss_bytes;
      cb(s);
    };
  }
  auto runtime = client::ClientRuntime::Create(std::move(o));
  if (!runtime.ok()) return fail(runtime.status());
  auto impl = std::make_unique<Impl>();
  impl->runtime = std::move(runtime).value();
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

bool Client::Run(const std::atomic<bool>& stop, std::string* error) {
  const absl::Status s = impl_->runtime->Run(stop);
  if (!s.ok() && error != nullptr) *error = s.ToString();
  return s.ok();
}

std::string Client::client_id() const { return impl_->runtime->client_id(); }

}  // namespace fedge
