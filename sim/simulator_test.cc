#include "sim/simulator.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/synchronization/mutex.h"
#include "model/zoo.h"
#include "sim/report.h"
#include "sim/sim_config.h"
#include "tests/status_matchers.h"
#include "tests/tiny_language_model.h"

namespace fedge::sim {
namespace {

using ::fedge::testing::IsOk;

// A small synthetic scenario: 16 features, 4 classes, a 16-32-4 MLP.
v1::SimConfig Scenario(int64_t population, int per_round, int rounds, double deadline_s) {
  v1::SimConfig c;
  v1::JobConfig& job = *c.mutable_job();
  job.set_name("sim-test");
  *job.mutable_model_spec() = model::MlpSpec({16, 32, 4});
  job.set_init_seed(3);
  job.set_rounds(rounds);
  job.mutable_selection()->set_clients_per_round(per_round);
  job.mutable_selection()->set_seed(5);
  job.mutable_round_policy()->set_quorum(1);
  job.mutable_round_policy()->set_deadline_seconds(deadline_s);
  job.mutable_local_training()->set_batch_size(8);
  job.mutable_local_training()->set_learning_rate(0.05);
  job.mutable_local_training()->set_momentum(0.5);
  c.set_population(population);
  v1::SyntheticData& s = *c.mutable_data()->mutable_synthetic();
  s.set_features(16);
  s.set_classes(4);
  s.set_examples_per_client(24);
  s.set_label_alpha(0.5);
  s.set_test_examples(400);
  s.set_seed(11);
  c.set_seed(17);
  return c;
}

absl::StatusOr<std::vector<RoundReport>> RunAll(const v1::SimConfig& raw, int threads) {
  absl::StatusOr<v1::SimConfig> config = ValidateSimConfig(raw);
  if (!config.ok()) return config.status();
  SimulatorOptions options;
  options.threads = threads;
  absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(*config, options);
  if (!sim.ok()) return sim.status();
  std::vector<RoundReport> rounds;
  absl::Status s = (*sim)->Run([&](const RoundReport& r) { rounds.push_back(r); });
  if (!s.ok()) return s;
  return rounds;
}

std::vector<std::string> Lines(const std::vector<RoundReport>& rounds) {
  std::vector<std::string> lines;
  for (const RoundReport& r : rounds) lines.push_back(MetricsJsonLine(r, /*wall_time=*/false));
  return lines;
}

TEST(SimulatorTest, OneAndTwoThreadsGiveIdenticalMetrics) {
  v1::SimConfig c = Scenario(60, 12, 4, 600);
  // Heterogeneous devices, offline clients and dropouts exercise every random draw.
  c.mutable_devices()->mutable_compute_speed()->mutable_lognormal()->set_median(50);
  c.mutable_devices()->mutable_compute_speed()->mutable_lognormal()->set_sigma(0.7);
  c.mutable_devices()->mutable_availability()->mutable_uniform()->set_min(0.6);
  c.mutable_devices()->mutable_availability()->mutable_uniform()->set_max(1.0);
  c.mutable_devices()->mutable_dropout()->set_constant(0.1);
  absl::StatusOr<std::vector<RoundReport>> one = RunAll(c, 1);
  absl::StatusOr<std::vector<RoundReport>> two = RunAll(c, 2);
  ASSERT_THAT(one, IsOk());
  ASSERT_THAT(two, IsOk());
  ASSERT_EQ(one->size(), 4u);
  EXPECT_EQ(Lines(*one), Lines(*two));
  // And the model learnt something: better than chance (0.25) on 4 classes.
  EXPECT_GT(one->back().test_accuracy, 0.5);
  // A different seed gives a different run (the seed reaches the draws).
  c.set_seed(18);
  absl::StatusOr<std::vector<RoundReport>> other = RunAll(c, 2);
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(Lines(*one), Lines(*other));
}

// Central DP noise and Federated-Dropout subsets (seeded per client id) are reproducible
// from the config's seed too: two runs give the same metrics, ε included.
TEST(SimulatorTest, DpNoiseAndRandomSubsetsAreReproducible) {
  v1::SimConfig c = Scenario(40, 8, 3, 600);
  v1::PrivacyConfig& p = *c.mutable_job()->mutable_privacy();
  p.set_clip_norm(1.0);
  p.set_noise_multiplier(0.5);
  absl::StatusOr<std::vector<RoundReport>> a = RunAll(c, 2);
  absl::StatusOr<std::vector<RoundReport>> b = RunAll(c, 1);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_EQ(a->size(), 3u);
  EXPECT_GT(a->back().epsilon, 0.0);
  EXPECT_EQ(Lines(*a), Lines(*b));
  v1::SimConfig r = Scenario(40, 8, 3, 600);
  v1::SubModelConfig& sub = *r.mutable_job()->mutable_sub_models();
  v1::SubModelTier* half = sub.add_tiers();
  half->set_name("half");
  half->set_width_ratio(0.5);
  sub.set_extraction(v1::SubModelConfig::EXTRACTION_RANDOM_SUBSET);
  sub.set_seed(9);
  absl::StatusOr<std::vector<RoundReport>> x = RunAll(r, 2);
  absl::StatusOr<std::vector<RoundReport>> y = RunAll(r, 2);
  ASSERT_THAT(x, IsOk());
  ASSERT_THAT(y, IsOk());
  EXPECT_EQ(Lines(*x), Lines(*y));
}

// Ranks as threads of this process (sim/cluster.h without MPI): ordered byte queues.
class ThreadCluster {
 public:
  explicit ThreadCluster(int size) : size_(size), queues_(static_cast<size_t>(size * size)) {}

  class Rank final : public Cluster {
   public:
    Rank(ThreadCluster* cluster, int rank) : cluster_(cluster), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return cluster_->size_; }
    int local_size() const override { return cluster_->size_; }
    absl::Status Send(int to, std::string_view bytes) override {
      Queue& q = cluster_->queue(rank_, to);
      absl::MutexLock lock(&q.mu);
      q.messages.emplace_back(bytes);
      return absl::OkStatus();
    }
    absl::StatusOr<std::string> Receive(int from) override {
      Queue& q = cluster_->queue(from, rank_);
      absl::MutexLock lock(&q.mu);
      q.mu.Await(absl::Condition(
          +[](std::deque<std::string>* m) { return !m->empty(); }, &q.messages));
      std::string bytes = std::move(q.messages.front());
      q.messages.pop_front();
      return bytes;
    }
    absl::Status Broadcast(std::string&) override {
      return absl::UnimplementedError("ThreadCluster: no broadcast");
    }
    void Abort(int) override { std::abort(); }

   private:
    ThreadCluster* const cluster_;
    const int rank_;
  };

 private:
  struct Queue {
    absl::Mutex mu;
    std::deque<std::string> messages;
  };
  Queue& queue(int from, int to) { return queues_[static_cast<size_t>(from * size_ + to)]; }
  const int size_;
  std::vector<Queue> queues_;
};

// Rank 0's Simulator with `ranks` - 1 training workers on threads.
absl::StatusOr<std::vector<RoundReport>> RunOnRanks(const v1::SimConfig& raw, int ranks) {
  absl::StatusOr<v1::SimConfig> config = ValidateSimConfig(raw);
  if (!config.ok()) return config.status();
  ThreadCluster cluster(ranks);
  std::vector<std::unique_ptr<ThreadCluster::Rank>> members;
  for (int r = 0; r < ranks; ++r) members.push_back(std::make_unique<ThreadCluster::Rank>(&cluster, r));
  std::vector<absl::Status> worker_status(static_cast<size_t>(ranks));
  std::vector<std::thread> workers;
  for (int r = 1; r < ranks; ++r) {
    workers.emplace_back([&, r] {
      SimulatorOptions options;
      options.threads = 1;
      options.cluster = members[static_cast<size_t>(r)].get();
      worker_status[static_cast<size_t>(r)] = RunTrainingWorker(*config, options);
    });
  }
  absl::Status status;
  std::vector<RoundReport> rounds;
  {
    SimulatorOptions options;
    options.threads = 1;
    options.cluster = members[0].get();
    absl::StatusOr<std::unique_ptr<Simulator>> sim = Simulator::Create(*config, options);
    status = sim.ok() ? (*sim)->Run([&](const RoundReport& r) { rounds.push_back(r); })
                      : sim.status();
  }  // ~Simulator stops the workers
  for (std::thread& t : workers) t.join();
  for (const absl::Status& s : worker_status) {
    if (status.ok()) status = s;
  }
  if (!status.ok()) return status;
  return rounds;
}

// The split of simulator.h's "Over several processes", without MPI: rank 0 and two
// training ranks give the metrics of one process, with two sub-model tiers (two task
// models per round), a distillation teacher, offline clients, dropouts and stragglers.
TEST(SimulatorTest, ThreeRanksGiveTheMetricsOfOneProcess) {
  v1::SimConfig c = Scenario(80, 14, 4, 1.0);
  c.mutable_devices()->mutable_compute_speed()->mutable_lognormal()->set_median(60);
  c.mutable_devices()->mutable_compute_speed()->mutable_lognormal()->set_sigma(0.8);
  c.mutable_devices()->mutable_availability()->mutable_uniform()->set_min(0.7);
  c.mutable_devices()->mutable_availability()->mutable_uniform()->set_max(1.0);
  c.mutable_devices()->mutable_dropout()->set_constant(0.1);
  v1::DiscreteDistribution& memory = *c.mutable_devices()->mutable_memory_budget_mb()->mutable_choices();
  memory.add_values(128);
  memory.add_values(1024);
  v1::SubModelConfig& sub = *c.mutable_job()->mutable_sub_models();
  v1::SubModelTier* full = sub.add_tiers();
  full->set_name("full");
  full->set_width_ratio(1);
  v1::SubModelTier* half = sub.add_tiers();
  half->set_name("half");
  half->set_width_ratio(0.5);
  v1::TierRule* rule = sub.add_rules();
  rule->set_tier("full");
  rule->set_min_memory_budget_bytes(256 << 20);
  sub.set_default_tier("half");
  c.mutable_job()->mutable_distillation()->set_weight(0.3);
  c.mutable_job()->mutable_distillation()->set_teacher_compute_mode(v1::COMPUTE_MODE_FP32);
  absl::StatusOr<std::vector<RoundReport>> one = RunAll(c, 1);
  absl::StatusOr<std::vector<RoundReport>> three = RunOnRanks(c, 3);
  ASSERT_THAT(one, IsOk());
  ASSERT_THAT(three, IsOk());
  ASSERT_EQ(one->size(), 4u);
  EXPECT_EQ(Lines(*one), Lines(*three));
  int participants = 0, lost = 0;
  for (const RoundReport& r : *one) {
    participants += r.participants;
    lost += r.offline + r.dropouts + r.stragglers;
  }
  EXPECT_GT(participants, 12);  // every rank had updates to train
  EXPECT_GT(lost, 0);
}

TEST(SimulatorTest, StragglersPastTheDeadlineAreDropped) {
  // Half the devices train 24 examples at 1 example/s (24 s + links > the 10 s deadline),
  // half at 10,000 examples/s.
  v1::SimConfig c = Scenario(40, 10, 3, 10);
  v1::DiscreteDistribution& speed = *c.mutable_devices()->mutable_compute_speed()->mutable_choices();
  speed.add_values(1);
  speed.add_values(10000);
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 3u);
  int stragglers = 0;
  for (const RoundReport& r : *rounds) {
    EXPECT_EQ(r.sampled, 10);
    EXPECT_EQ(r.offline, 0);
    EXPECT_EQ(r.dropouts, 0);
    EXPECT_EQ(r.participants + r.rejected + r.stragglers, r.sampled) << "round " << r.round;
    EXPECT_EQ(r.dropped, r.stragglers);
    if (r.stragglers > 0) {
      // The coordinator waited for them until the deadline, then closed the round.
      EXPECT_DOUBLE_EQ(r.round_virtual_s, 10.0);
    } else {
      EXPECT_LT(r.round_virtual_s, 10.0);
    }
    stragglers += r.stragglers;
  }
  EXPECT_GT(stragglers, 0);
}

TEST(SimulatorTest, FastFleetFinishesBeforeTheDeadline) {
  v1::SimConfig c = Scenario(20, 5, 2, 600);
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 2u);
  for (const RoundReport& r : *rounds) {
    EXPECT_EQ(r.participants + r.rejected, 5);  // the direction check may exclude one
    EXPECT_EQ(r.dropped, r.rejected);
    // 24 examples at 1000/s, 50 ms latency, and the model's bytes over 20/5 Mbit/s.
    EXPECT_GT(r.round_virtual_s, 0.024 + 0.05);
    EXPECT_LT(r.round_virtual_s, 1.0);
    EXPECT_GT(r.bytes_down, 0);
    EXPECT_GT(r.bytes_up, 0);
  }
  EXPECT_DOUBLE_EQ((*rounds)[1].virtual_time_s,
                   (*rounds)[0].round_virtual_s + (*rounds)[1].round_virtual_s);
}

TEST(SimulatorTest, OfflineClientsNeverFetch) {
  v1::SimConfig c = Scenario(50, 20, 2, 30);
  c.mutable_devices()->mutable_availability()->set_constant(0.5);
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  int offline = 0;
  for (const RoundReport& r : *rounds) {
    EXPECT_EQ(r.participants + r.rejected + r.offline, r.sampled);
    offline += r.offline;
  }
  EXPECT_GT(offline, 0);
}

TEST(SimulatorTest, DropoutsNeverSubmit) {
  v1::SimConfig c = Scenario(40, 10, 3, 30);
  c.mutable_devices()->mutable_dropout()->set_constant(0.3);
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  int dropouts = 0;
  for (const RoundReport& r : *rounds) {
    EXPECT_EQ(r.participants + r.rejected + r.dropouts, r.sampled);
    if (r.dropouts > 0) {
      EXPECT_DOUBLE_EQ(r.round_virtual_s, 30.0);  // the coordinator waited for them
    }
    dropouts += r.dropouts;
  }
  EXPECT_GT(dropouts, 0);
}

TEST(SimulatorTest, QuorumOutOfReachFailsClearly) {
  v1::SimConfig c = Scenario(40, 10, 3, 30);
  c.mutable_devices()->mutable_dropout()->set_constant(1.0);  // nobody ever uploads
  EXPECT_THAT(RunAll(c, 2).status(),
              ::fedge::testing::StatusIs(absl::StatusCode::kFailedPrecondition,
                                         ::testing::HasSubstr("attempts in a row")));
}

TEST(SimulatorTest, HundredThousandClientsRegisterAndRun) {
  v1::SimConfig c = Scenario(100000, 20, 2, 600);
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 2u);
  EXPECT_EQ((*rounds)[1].sampled, 20);
  EXPECT_EQ((*rounds)[1].participants + (*rounds)[1].rejected, 20);
}

// FedCG in the simulator: a job of the real coordinator with virtual clients that
// keep their FedCgClient across rounds, on Fashion-MNIST shards with per-client test sets.
v1::SimConfig FedCgScenario() {
  v1::SimConfig c;
  v1::JobConfig& job = *c.mutable_job();
  job.set_name("sim-fedcg-test");
  job.set_rounds(2);
  job.mutable_selection()->set_clients_per_round(3);
  job.mutable_round_policy()->set_quorum(3);
  job.mutable_round_policy()->set_deadline_seconds(0);
  job.mutable_local_training()->set_epochs(1);
  job.mutable_local_training()->set_batch_size(8);
  job.mutable_local_training()->set_weight_decay(1e-4);
  v1::FedCgParams& f = *job.mutable_strategy()->mutable_fed_cg();
  f.set_image_size(16);
  f.set_gan_epochs(1);
  f.set_distill_steps(5);
  c.set_population(3);
  v1::FashionMnistData& d = *c.mutable_data()->mutable_fashion_mnist();
  d.set_partitions(3);
  d.set_max_examples_per_partition(32);
  d.set_test_examples(60);
  d.set_client_test_sets(true);
  c.set_seed(4);
  return c;
}

TEST(SimulatorTest, FedCgJobIsDeterministicAndReportsTheClientsAccuracy) {
  const v1::SimConfig c = FedCgScenario();
  absl::StatusOr<std::vector<RoundReport>> one = RunAll(c, 1);
  absl::StatusOr<std::vector<RoundReport>> two = RunAll(c, 2);
  ASSERT_THAT(one, IsOk());
  ASSERT_THAT(two, IsOk());
  ASSERT_EQ(one->size(), 2u);
  EXPECT_EQ(Lines(*one), Lines(*two));
  for (const RoundReport& r : *one) {
    EXPECT_TRUE(r.fed_cg);
    EXPECT_TRUE(r.evaluated);
    EXPECT_EQ(r.participants, 3);
    EXPECT_EQ(r.examples, 3 * 32);  // every example trains: the test sets are separate
    EXPECT_GE(r.test_accuracy, 0);
    EXPECT_LE(r.test_accuracy, 1);
    EXPECT_GT(r.fedcg_first_kl, 0);
  }
  // Round 2's devices reported (on round 1's model) what the simulator measured after round 1.
  EXPECT_NEAR((*one)[1].fedcg_reported_accuracy, (*one)[0].test_accuracy, 1e-12);
  // The metrics line carries the FedCG figures and parses back.
  const std::string line = MetricsJsonLine((*one)[1], false);
  EXPECT_THAT(line, ::testing::HasSubstr("\"fed_cg\":true"));
  absl::StatusOr<RoundReport> back = ParseMetricsJsonLine(line);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(MetricsJsonLine(*back, false), line);
}

// A SecAgg+ job with distributed DP: 100 virtual devices run the device side of the protocol
// (client::SecAggDevice) through the coordinator's SecureRound, 10% of them dropping out at a
// random phase. Every round's released sum is the plain sum of the fixed-point inputs the
// coordinator took (the simulator checks the digests and fails the run otherwise), devices
// drop at more than one phase, and the run is reproducible.
v1::SimConfig SecAggScenario() {
  v1::SimConfig c = Scenario(100, 100, 3, 600);
  v1::PrivacyConfig& p = *c.mutable_job()->mutable_privacy();
  p.set_clip_norm(1.0);
  p.set_noise_multiplier(0.3);
  p.set_secure_aggregation_threshold(60);
  p.set_secure_aggregation_plus(true);
  c.mutable_job()->mutable_round_policy()->set_quorum(60);
  c.mutable_devices()->mutable_dropout()->set_constant(0.1);
  return c;
}

TEST(SimulatorTest, SecAggPlusWithDropoutsReleasesThePlainSum) {
  const v1::SimConfig c = SecAggScenario();
  absl::StatusOr<std::vector<RoundReport>> rounds = RunAll(c, 2);
  ASSERT_THAT(rounds, IsOk());
  ASSERT_EQ(rounds->size(), 3u);
  int dropouts = 0, late_dropouts = 0;
  for (const RoundReport& r : *rounds) {
    EXPECT_TRUE(r.secure_aggregation);
    EXPECT_TRUE(r.secagg_sum_checked);
    EXPECT_EQ(r.sampled, 100);
    EXPECT_EQ(r.participants, r.secagg_masked);
    EXPECT_GE(r.secagg_masked, 60);
    EXPECT_LE(r.secagg_shared, r.secagg_advertised);
    EXPECT_LE(r.secagg_masked, r.secagg_shared);
    EXPECT_LE(r.secagg_unmasked_by, r.secagg_masked);
    EXPECT_GT(r.epsilon, 0);
    dropouts += r.dropouts;
    // Devices that sent their keys and dropped later.
    late_dropouts += r.secagg_advertised - r.secagg_unmasked_by;
  }
  EXPECT_GT(dropouts, 10);        // ~10% of 300
  EXPECT_GT(late_dropouts, 3);    // some dropped after their keys
  EXPECT_GT(rounds->back().test_accuracy, 0.4);  // it learns (chance: 0.25)
  // Reproducible: the noise shares are seeded from the config's seed.
  absl::StatusOr<std::vector<RoundReport>> again = RunAll(c, 1);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(Lines(*rounds), Lines(*again));
  // The metrics line carries the phases' counts and the check, and parses back.
  const std::string line = MetricsJsonLine(rounds->front(), false);
  EXPECT_THAT(line, ::testing::HasSubstr("\"secagg_sum_checked\":true"));
  absl::StatusOr<RoundReport> back = ParseMetricsJsonLine(line);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(MetricsJsonLine(*back, false), line);
}

TEST(SimulatorTest, FedCgRefusesSeveralRanks) {
  EXPECT_THAT(RunOnRanks(FedCgScenario(), 2).status(),
              ::fedge::testing::StatusIs(absl::StatusCode::kUnimplemented,
                                         ::testing::HasSubstr("one process")));
}

// A language-model job on text devices: a small Brown-layout corpus (three fiction
// documents and one non-fiction one, which no device gets) and a tiny base beside it.
class LanguageModelSimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (std::filesystem::temp_directory_path() /
             ("sim_lm_test_" + std::to_string(::getpid())))
                .string();
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ + "/brown");
    ASSERT_NO_FATAL_FAILURE(testing::WriteTinyLanguageModel(root_));
    const std::string tagged =
        "\tthe/at cat/nn sat/vbd on/in the/at mat/nn and/cc the/at dog/nn sat/vbd on/in "
        "the/at log/nn while/cs the/at bird/nn sang/vbd in/in the/at tree/nn ./.\n\n";
    for (const char* id : {"ck01", "ck02", "cl01", "ca01"}) {
      std::ofstream out(root_ + "/brown/" + id);
      for (int i = 0; i < 30; ++i) out << tagged;
    }
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  v1::SimConfig Config() const {
    v1::SimConfig c;
    v1::JobConfig& job = *c.mutable_job();
    job.set_name("sim-lm");
    job.set_rounds(3);
    job.mutable_selection()->set_clients_per_round(3);
    job.mutable_round_policy()->set_quorum(2);
    job.mutable_round_policy()->set_deadline_seconds(600);
    v1::LanguageModelJob& lm = *job.mutable_language_model();
    lm.set_base_path("base.pb");
    lm.mutable_lora()->set_rank(4);
    lm.mutable_lora()->set_attention(true);
    lm.mutable_lora()->set_mlp(true);
    lm.mutable_lora()->set_output(true);
    lm.mutable_lora()->set_base_format(v1::LoraSpec::BASE_FORMAT_INT4);
    lm.set_window(16);
    job.mutable_local_training()->set_batch_size(4);
    job.mutable_local_training()->set_optimizer(v1::OPTIMIZER_KIND_ADAM);
    job.mutable_local_training()->set_learning_rate(0.01);
    job.mutable_local_training()->set_max_steps(20);
    c.set_population(3);
    c.mutable_data()->mutable_brown()->set_dir(root_ + "/brown");
    c.set_data_root(root_);
    c.set_seed(7);
    return c;
  }

  std::string root_;
};

TEST_F(LanguageModelSimTest, TextDevicesTrainAdaptersAndThePerplexityFalls) {
  auto one = RunAll(Config(), 1);
  ASSERT_THAT(one.status(), IsOk());
  ASSERT_EQ(one->size(), 3u);
  const int64_t adapters_bytes = (*one)[0].bytes_down / (*one)[0].participants;
  for (const RoundReport& r : *one) {
    EXPECT_EQ(r.participants, 3);
    EXPECT_TRUE(r.evaluated);
    EXPECT_GT(r.test_perplexity, 1.0);
    EXPECT_NEAR(std::log(r.test_perplexity), r.test_loss, 1e-6);
    // Only the adapters travel, both ways; tokens are the examples: an epoch of each
    // device's text (fewer tokens than max_steps batches of windows).
    EXPECT_EQ(r.bytes_down, adapters_bytes * r.participants);
    EXPECT_EQ(r.examples, (*one)[0].examples);
    EXPECT_GT(r.examples, 3 * 1000);
    EXPECT_LE(r.examples, 3 * 20 * 4 * 16);
  }
  const int64_t base_bytes = static_cast<int64_t>(std::filesystem::file_size(root_ + "/base.pb"));
  EXPECT_LT(adapters_bytes, base_bytes / 2);
  EXPECT_LT(one->back().test_perplexity, 0.8 * one->front().test_perplexity);
  EXPECT_LT(one->back().test_perplexity, 0.5 * 270);
  // The devices' base copies are per thread, their updates submitted in a fixed order: the
  // same model whatever the thread count.
  auto two = RunAll(Config(), 2);
  ASSERT_THAT(two.status(), IsOk());
  ASSERT_EQ(two->size(), 3u);
  for (size_t i = 0; i < one->size(); ++i) {
    EXPECT_EQ((*two)[i].test_perplexity, (*one)[i].test_perplexity) << "round " << i + 1;
  }
}

TEST_F(LanguageModelSimTest, AdaptersTravelAsInt8BothWays) {
  auto fp32 = RunAll(Config(), 2);
  ASSERT_THAT(fp32.status(), IsOk());
  v1::SimConfig c = Config();
  c.mutable_job()->mutable_transfer()->set_task_encoding(v1::TENSOR_ENCODING_INT8_PER_CHANNEL);
  c.mutable_job()->mutable_transfer()->set_update_encoding(
      v1::TENSOR_ENCODING_INT8_STOCHASTIC_CHUNKED);
  auto int8 = RunAll(c, 2);
  ASSERT_THAT(int8.status(), IsOk());
  ASSERT_EQ(int8->size(), fp32->size());
  for (size_t i = 0; i < int8->size(); ++i) {
    // A byte a value and the scales (B's rows hold `rank` values: a scale per 4 of them).
    EXPECT_LT((*int8)[i].bytes_down, 0.5 * (*fp32)[i].bytes_down);
    EXPECT_LT((*int8)[i].bytes_up, 0.3 * (*fp32)[i].bytes_up);
  }
  EXPECT_LT(int8->back().test_perplexity, 0.8 * int8->front().test_perplexity);
  EXPECT_NEAR(int8->back().test_perplexity, fp32->back().test_perplexity,
              0.1 * fp32->back().test_perplexity);
}

// Full-parameter fine-tuning through the same device round: every parameter travels and
// trains, and the perplexity falls further than with adapters.
TEST_F(LanguageModelSimTest, AFullParameterJobTrainsEveryParameter) {
  auto lora = RunAll(Config(), 2);
  ASSERT_THAT(lora.status(), IsOk());
  v1::SimConfig c = Config();
  c.mutable_job()->mutable_language_model()->clear_lora();
  c.mutable_job()->mutable_language_model()->set_full_parameters(true);
  c.mutable_job()->mutable_local_training()->set_learning_rate(3e-3);
  auto full = RunAll(c, 2);
  ASSERT_THAT(full.status(), IsOk());
  ASSERT_EQ(full->size(), 3u);
  const int64_t base_bytes = static_cast<int64_t>(std::filesystem::file_size(root_ + "/base.pb"));
  for (const RoundReport& r : *full) {
    EXPECT_EQ(r.participants, 3);
    // The base's parameters each way (the file also holds the tokenizer).
    EXPECT_GT(r.bytes_down, 3 * base_bytes / 2);
    EXPECT_GT(r.bytes_up, 3 * base_bytes / 2);
  }
  EXPECT_LT(full->back().test_perplexity, 0.8 * full->front().test_perplexity);
  EXPECT_LT(full->back().test_perplexity, lora->back().test_perplexity);
}

TEST_F(LanguageModelSimTest, TextAndLanguageModelsGoTogether) {
  v1::SimConfig images = Config();
  images.mutable_job()->clear_language_model();
  *images.mutable_job()->mutable_model_spec() = model::MlpSpec({16, 4});
  EXPECT_THAT(ValidateSimConfig(images).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("data.brown")));
  v1::SimConfig synthetic = Config();
  synthetic.mutable_data()->mutable_synthetic()->set_features(16);
  EXPECT_THAT(ValidateSimConfig(synthetic).status(),
              testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                ::testing::HasSubstr("must be brown")));
  v1::SimConfig missing = Config();
  missing.mutable_job()->mutable_language_model()->set_base_path("nowhere.pb");
  auto validated = ValidateSimConfig(missing);
  ASSERT_THAT(validated.status(), IsOk());
  EXPECT_THAT(Simulator::Create(*validated).status(),
              testing::StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("nowhere.pb")));
}

}  // namespace
}  // namespace fedge::sim
