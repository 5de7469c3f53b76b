// A real federated training run on Fashion-MNIST in one process: the transport-free
// Coordinator with its SQLite store, and N devices that each hold a label-Dirichlet shard
// (by default NIID-Bench's own split for the seed, --split-rng numpy) and
// train with client::TrainLocally. It runs exactly the round logic the gRPC services will
// call, without sockets (examples/fleet/run.sh runs the same job as processes over gRPC).
//
//   build/bin/fedavg_inprocess --model cnn --clients 10 --alpha 0.5 --rounds 20
//       --local-epochs 1 --state-dir out/fedavg --metrics-out out/fedavg/metrics.jsonl
//
// Devices train two at a time (one per core). A second run on the same --state-dir resumes
// the job where it stopped.
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "base/flags.h"
#include "base/status_macros.h"
#include "client/local_trainer.h"
#include "data/idx_reader.h"
#include "data/partition.h"
#include "server/coordinator.h"
#include "server/job_config.h"
#include "server/model_weights.h"
#include "server/store.h"

ABSL_FLAG(std::string, model, "cnn", "architecture: mlp or cnn");
ABSL_FLAG(int, clients, 10, "number of devices");
ABSL_FLAG(int, per_round, 0, "clients sampled per round (0: all)");
ABSL_FLAG(double, alpha, 0.5, "label-Dirichlet concentration of the split");
ABSL_FLAG(int, rounds, 20, "federated rounds");
ABSL_FLAG(int, local_epochs, 1, "local epochs per round");
ABSL_FLAG(int, batch, 64, "local batch size");
ABSL_FLAG(double, lr, 0.01, "local SGD learning rate");
ABSL_FLAG(double, momentum, 0.9, "local SGD momentum");
ABSL_FLAG(double, weight_decay, 0.0, "local L2 weight decay");
ABSL_FLAG(std::string, mode, "fp32", "local compute: fp32 or int8 (quantization-aware)");
ABSL_FLAG(uint64_t, seed, 0, "seed of the split, the initial model and the sampling");
ABSL_FLAG(std::string, split_rng, "numpy",
          "random stream of the split: numpy (np.random.seed(seed): NIID-Bench's split, which "
          "Python baselines train on) or fedge (base::Rng)");
ABSL_FLAG(int, threads, 2, "devices training at the same time");
ABSL_FLAG(std::string, state_dir, "out/fedavg", "the coordinator's SQLite state directory");
ABSL_FLAG(std::string, metrics_out, "",
          "one JSON object per round (appended to when the job resumes)");

namespace fedge {
namespace {

constexpr char kToken[] = "in-process-enrollment";

struct Device {
  std::string id, token;
  data::Dataset data;
};

absl::Status RunDevice(server::Coordinator& c, const Device& d, uint64_t seed) {
  FEDGE_ASSIGN_OR_RETURN(std::optional<server::TaskAssignment> task, c.FetchTask(d.id, d.token));
  if (!task.has_value()) return absl::OkStatus();
  FEDGE_ASSIGN_OR_RETURN(client::LocalTrainingOptions options,
                         client::OptionsFromTask(task->header, seed));
  options.teacher = task->teacher.get();  // in-process: the teacher in fp32, unencoded
  FEDGE_ASSIGN_OR_RETURN(client::LocalUpdate update,
                         client::TrainLocally(*task->model, d.data, options));
  v1::UpdateHeader h;
  h.set_client_id(d.id);
  h.set_session_token(d.token);
  h.set_job_id(task->header.job_id());
  h.set_round(task->header.round());
  h.set_task_id(task->header.task_id());
  h.set_num_examples(update.num_examples);
  h.mutable_metrics()->set_train_loss(update.train_loss);
  h.mutable_metrics()->set_train_accuracy(update.train_accuracy);
  h.mutable_metrics()->set_steps(update.steps);
  h.mutable_metrics()->set_train_seconds(update.seconds);
  return c.SubmitUpdate(h, server::UpdateFromDeltaProto(d.id, update.num_examples, update.delta),
                        static_cast<int64_t>(update.delta.ByteSizeLong()));
}

absl::Status Run() {
  const int n = absl::GetFlag(FLAGS_clients);
  if (n < 1 || n > 10000) return absl::InvalidArgumentError("--clients must be in [1, 10000]");
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "fp32" && mode != "int8") return absl::InvalidArgumentError("--mode: fp32 or int8");
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const std::string split_rng = absl::GetFlag(FLAGS_split_rng);
  FEDGE_ASSIGN_OR_RETURN(const data::SplitStream stream, data::ParseSplitStream(split_rng));

  v1::JobConfig job;
  job.set_name(absl::StrFormat("fedavg-%s", absl::GetFlag(FLAGS_model)));
  job.set_architecture(absl::GetFlag(FLAGS_model));
  job.set_init_seed(seed);
  job.set_rounds(absl::GetFlag(FLAGS_rounds));
  const int per_round = absl::GetFlag(FLAGS_per_round) > 0 ? absl::GetFlag(FLAGS_per_round) : n;
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_selection()->set_seed(seed);
  job.mutable_round_policy()->set_quorum(per_round);
  job.mutable_round_policy()->set_deadline_seconds(0);
  v1::LocalTraining* t = job.mutable_local_training();
  t->set_epochs(absl::GetFlag(FLAGS_local_epochs));
  t->set_batch_size(absl::GetFlag(FLAGS_batch));
  t->set_learning_rate(absl::GetFlag(FLAGS_lr));
  t->set_momentum(absl::GetFlag(FLAGS_momentum));
  t->set_weight_decay(absl::GetFlag(FLAGS_weight_decay));
  t->set_compute_mode(mode == "int8" ? v1::COMPUTE_MODE_INT8 : v1::COMPUTE_MODE_FP32);
  job.mutable_preprocessing()->set_kind(v1::Preprocessing::KIND_UNIT_RANGE);
  FEDGE_ASSIGN_OR_RETURN(job, server::ValidateJobConfig(job));

  // Data: pixels in [0, 1] (the job's UNIT_RANGE preprocessing), split by label-Dirichlet.
  FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm, data::LoadFashionMnist());
  FEDGE_ASSIGN_OR_RETURN(data::ClientIndices parts,
                         data::LabelDirichletFrom(stream, fm.train.labels, fm.train.num_classes,
                                                  n, absl::GetFlag(FLAGS_alpha), seed));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<server::Store> store,
                         server::Store::Open(absl::GetFlag(FLAGS_state_dir)));
  server::CoordinatorOptions options;
  options.enrollment_token = kToken;
  options.liveness_timeout = absl::Hours(24);  // in-process devices never go away
  options.aggregation_threads = 2;
  options.evaluation_data = std::make_shared<const data::Dataset>(std::move(fm.test));
  FEDGE_ASSIGN_OR_RETURN(std::unique_ptr<server::Coordinator> c,
                         server::Coordinator::Create(options, store.get()));

  std::vector<Device> devices(n);
  for (int i = 0; i < n; ++i) {
    v1::RegisterRequest r;
    r.set_enrollment_token(kToken);
    r.set_previous_client_id(absl::StrFormat("device-%05d", i));
    r.mutable_profile()->set_num_examples(static_cast<int64_t>(parts[i].size()));
    r.mutable_profile()->set_platform("in-process");
    FEDGE_ASSIGN_OR_RETURN(v1::RegisterResponse resp, c->Register(r));
    devices[i] = {resp.client_id(), resp.session_token(), data::Subset(fm.train, parts[i])};
  }
  std::string job_id;
  const bool resumed = c->running_job().has_value();
  if (std::optional<std::string> running = c->running_job(); running.has_value()) {
    job_id = *running;
    std::printf("resuming job %s from %s\n", job_id.c_str(), store->path().c_str());
  } else {
    FEDGE_ASSIGN_OR_RETURN(job_id, c->StartJob(job));
  }
  std::printf("fedavg_inprocess: %s, %d devices (label-Dirichlet α=%.2f, seed %llu, %s "
              "stream), %d per round, %d rounds, %d local epoch(s), %s, state in %s\n",
              absl::GetFlag(FLAGS_model).c_str(), n, absl::GetFlag(FLAGS_alpha),
              static_cast<unsigned long long>(seed), split_rng.c_str(), per_round, job.rounds(),
              job.local_training().epochs(), mode.c_str(), store->path().c_str());
  std::ofstream metrics;
  if (const std::string path = absl::GetFlag(FLAGS_metrics_out); !path.empty()) {
    // A resumed job appends to its metrics; a new one starts the file afresh.
    metrics.open(path, resumed ? std::ios::app : std::ios::trunc);
    if (!metrics) return absl::UnavailableError("cannot write --metrics-out " + path);
  }
  int64_t reported = 0;
  {
    FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, c->GetJob(job_id));
    reported = s.completed_rounds();
  }
  const int threads = std::max(1, absl::GetFlag(FLAGS_threads));
  while (c->running_job().has_value()) {
    FEDGE_RETURN_IF_ERROR(c->Tick());
    std::atomic<int> next{0};
    std::atomic<uint64_t> round_seed{seed * 1000003 + static_cast<uint64_t>(reported)};
    std::vector<absl::Status> errors(threads);
    std::vector<std::thread> pool;
    for (int w = 0; w < threads; ++w) {
      pool.emplace_back([&, w] {
        for (int i = next++; i < n; i = next++) {
          absl::Status s = RunDevice(*c, devices[i], round_seed.load() * 131 + i);
          if (!s.ok() && errors[w].ok()) errors[w] = s;
        }
      });
    }
    for (std::thread& th : pool) th.join();
    for (const absl::Status& e : errors) FEDGE_RETURN_IF_ERROR(e);
    FEDGE_RETURN_IF_ERROR(c->Tick());
    FEDGE_ASSIGN_OR_RETURN(std::vector<v1::RoundRecord> rounds, c->ListRounds(job_id, reported + 1));
    for (const v1::RoundRecord& r : rounds) {
      if (r.state() != v1::ROUND_STATE_COMPLETED) continue;
      const v1::RoundMetrics& m = r.metrics();
      std::printf("round %3lld  clients %d/%d  train loss %.4f  test loss %.4f acc %.4f  %.1fs  "
                  "up %.1f MB down %.1f MB\n",
                  static_cast<long long>(m.round()), m.participants(), m.sampled(),
                  m.train_loss(), m.test_loss(), m.test_accuracy(), m.round_seconds(),
                  m.bytes_up() / 1e6, m.bytes_down() / 1e6);
      std::fflush(stdout);
      if (metrics.is_open()) {
        metrics << absl::StrFormat(
                       "{\"round\":%d,\"participants\":%d,\"sampled\":%d,\"train_loss\":%.6f,"
                       "\"test_loss\":%.6f,\"test_accuracy\":%.6f,\"round_seconds\":%.3f,"
                       "\"bytes_up\":%d,\"bytes_down\":%d}",
                       m.round(), m.participants(), m.sampled(), m.train_loss(), m.test_loss(),
                       m.test_accuracy(), m.round_seconds(), m.bytes_up(), m.bytes_down())
                << "\n";
        metrics.flush();
      }
      reported = std::max(reported, m.round());
    }
  }
  FEDGE_ASSIGN_OR_RETURN(v1::JobStatus s, c->GetJob(job_id));
  std::printf("job %s: %s after %lld rounds, final test accuracy %.4f\n", job_id.c_str(),
              v1::JobState_Name(s.state()).c_str(), static_cast<long long>(s.completed_rounds()),
              s.latest_metrics().test_accuracy());
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Federated averaging on Fashion-MNIST with the coordinator and N devices in one process.");
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = fedge::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "fedavg_inprocess: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
