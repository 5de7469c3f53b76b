// FedCG (Wu et al., IJCAI 2022) in one process, with FedAvg and local-only
// training in the same harness, on the paper's Fashion-MNIST setting:
//
//   4 clients, 2000 training examples each drawn IID (disjoint) from the 60k training set;
//   the 10k test set shuffled and split into one part per client, each halved into a
//   validation and a test half; images resized to 32×32 (bilinear, half-pixel centres, as
//   torchvision's Resize) and normalized to [−1, 1]; batch 8, 20 local epochs, Adam lr 3e-4
//   with weight decay 1e-4; the LeNet extractor/classifier of model/fedcg_nets.h.
//
//   fedcg   clients: client::FedCgClient (private E and D; upload Δ of C and G);
//           server: aggregation::FedCg (FedAvg of C and G, then distillation).
//           A client's model is its own E with the global C.
//   fedavg  the whole E∘C shared: client::TrainLocally (Adam) + example-weighted FedAvg;
//           a fresh Adam every round, or (--keep-optimizer) one per client kept across
//           rounds, as FedCG's clients keep theirs.
//   fedprox fedavg with the proximal term μ/2·‖w − w_global‖² in the clients' loss (--mu).
//   local   each client trains E∘C on its own data only, for as many epochs.
//
// --partition dirichlet (the non-IID run): the pool of clients × train_per_client
// training examples is split by label-Dirichlet(--alpha) (data::LabelDirichlet, at least
// 10 per client); each client's validation and test sets are drawn from the test set with
// its training label mix (about 10k / clients examples, halved).
//
// Evaluation (as the paper): each client's model on its own validation and test halves;
// the mean over clients per round. One JSON line per round and per algorithm, and a
// summary line per algorithm: the final round's test accuracy, the test accuracy at the
// round of best mean validation accuracy, and the paper's protocol (its code's evaluate()):
// each client's test accuracy at the round of its own best validation accuracy, averaged
// over clients (per_client_best_val_test_acc). --early-stop-rounds N ends an algorithm's
// run once its mean validation accuracy has not improved for N rounds (the paper's code
// runs until early_stop_rounds = 20 such rounds; --rounds is then the cap).
//
//   fedcg_inprocess --algorithms fedcg,fedavg,local --rounds 10 --seed 0
//       --metrics-out out/fedcg/seed0.jsonl
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "aggregation/fed_cg.h"
#include "base/flags.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "client/fedcg_trainer.h"
#include "client/local_trainer.h"
#include "data/idx_reader.h"
#include "data/image_transform.h"
#include "data/partition.h"
#include "model/fedcg_nets.h"
#include "model/loss.h"
#include "model/sequential.h"

ABSL_FLAG(std::string, algorithms, "fedcg,fedavg,local",
          "comma-separated: fedcg, fedavg, fedprox, local");
ABSL_FLAG(int, rounds, 10, "federated rounds (the most run, with --early-stop-rounds)");
ABSL_FLAG(int, early_stop_rounds, 0,
          "stop an algorithm once its mean validation accuracy has not improved for this many "
          "rounds (the paper's code: early_stop_rounds 20); 0: run all --rounds");
ABSL_FLAG(uint64_t, seed, 0, "seed of the split, the initial models, shuffling and noise");
ABSL_FLAG(int, clients, 4, "number of clients");
ABSL_FLAG(int, train_per_client, 2000,
          "training examples per client (iid); with --partition dirichlet, the pool of "
          "clients × this examples is split by label-Dirichlet");
ABSL_FLAG(std::string, partition, "iid",
          "iid (the paper's setting) or dirichlet (label-Dirichlet(--alpha) of the pool; each "
          "client's validation and test sets follow its training label mix)");
ABSL_FLAG(double, alpha, 0.5, "label-Dirichlet concentration (--partition dirichlet)");
ABSL_FLAG(double, mu, 0.01, "FedProx: proximal term μ (algorithm fedprox)");
ABSL_FLAG(int, local_epochs, 20, "local epochs per round (E+C)");
ABSL_FLAG(int, gan_epochs, 20, "FedCG: local GAN epochs per round");
ABSL_FLAG(int, batch, 8, "local batch size");
ABSL_FLAG(double, lr, 3e-4, "Adam learning rate (clients' E+C, server distillation)");
ABSL_FLAG(double, weight_decay, 1e-4, "Adam L2 weight decay");
ABSL_FLAG(double, gan_lr, 3e-4, "FedCG: Adam learning rate of G and D (betas 0.5, 0.999)");
ABSL_FLAG(int, distill_steps, 2000, "FedCG: server distillation steps per round");
ABSL_FLAG(int, distill_batch, 8, "FedCG: server distillation batch");
ABSL_FLAG(int, gamma_ramp_rounds, 50, "FedCG: γ_t ramp, p = min(round / this, 1)");
ABSL_FLAG(bool, keep_optimizer, false,
          "fedavg/fedprox/local: each client keeps its Adam (moments, step count) across rounds, "
          "as FedCG's clients and a PyTorch client that creates its optimizer once do; "
          "false: a fresh Adam every round");
ABSL_FLAG(bool, persistent_distill_optimizer, false,
          "FedCG: the server's distillation Adam carries its moments across rounds (the paper's "
          "code creates it once); default: a fresh Adam each round");
ABSL_FLAG(bool, spectral_norm, true,
          "FedCG: spectral normalization in the dense discriminators (--gan_arch dense; "
          "--nospectral_norm: plain D)");
ABSL_FLAG(std::string, gan_arch, "dense",
          "FedCG: G and D architecture: dense (one hidden layer of 256) or conv (the paper's "
          "code's transposed-conv/conv stacks with batch norm)");
ABSL_FLAG(int, threads, 2, "clients training at the same time");
ABSL_FLAG(std::string, data_dir, fedge::data::kFashionMnistDir, "Fashion-MNIST IDX directory");
ABSL_FLAG(std::string, metrics_out, "", "JSON-lines output (appended); empty: stdout only");

namespace fedge {
namespace {

constexpr int kSize = 32;

// [n, 1, 28, 28] in [0, 1] → [n, 1, 32, 32] in [−1, 1] (data/image_transform.h, as FedCG
// devices and fedge-sim prepare their examples: client::FedCgInputs).
data::Dataset Resize32(const data::Dataset& in) {
  absl::StatusOr<data::Dataset> out = data::ResizeImages(in, kSize);
  FEDGE_CHECK(out.ok());  // IDX images are [1, 28, 28]
  data::ScaleToSymmetricRange(*out);
  return *std::move(out);
}

struct ClientData {
  data::Dataset train, val, test;
};

// Each client's validation and test examples: `count` test-set examples whose labels follow
// the client's training label mix (drawn per class without replacement from that class's
// examples; clients may share test examples, never training ones), split in halves.
void LabelMatchedEvalSets(const data::Dataset& test, const data::Dataset& train, int count,
                          base::Rng& rng, ClientData& out) {
  std::vector<std::vector<int>> by_class(test.num_classes);
  for (int i = 0; i < test.num_examples; ++i) by_class[test.labels[i]].push_back(i);
  std::vector<int> per_class(test.num_classes, 0);
  for (int32_t y : train.labels) ++per_class[y];
  std::vector<int> val, tst;
  for (int k = 0; k < test.num_classes; ++k) {
    const int want = std::min<int>(
        static_cast<int>(by_class[k].size()),
        static_cast<int>(std::lround(static_cast<double>(count) * per_class[k] /
                                     train.num_examples)));
    rng.Shuffle(by_class[k]);
    for (int i = 0; i < want; ++i) (i % 2 == 0 ? val : tst).push_back(by_class[k][i]);
  }
  out.val = Resize32(data::Subset(test, val));
  out.test = Resize32(data::Subset(test, tst));
}

absl::StatusOr<std::vector<ClientData>> Split(uint64_t seed) {
  FEDGE_ASSIGN_OR_RETURN(data::FashionMnist fm,
                         data::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  const int k = absl::GetFlag(FLAGS_clients), per = absl::GetFlag(FLAGS_train_per_client);
  if (k < 1 || per < 1 || static_cast<int64_t>(k) * per > fm.train.num_examples) {
    return absl::InvalidArgumentError("fedcg_inprocess: clients × train_per_client too large");
  }
  const std::string partition = absl::GetFlag(FLAGS_partition);
  if (partition != "iid" && partition != "dirichlet") {
    return absl::InvalidArgumentError(absl::StrCat(
        "fedcg_inprocess: --partition is '", partition, "', expected iid or dirichlet"));
  }
  base::Rng rng(seed, 77);
  std::vector<int> tr = data::AllIndices(fm.train), te = data::AllIndices(fm.test);
  rng.Shuffle(tr);
  rng.Shuffle(te);
  const int part = fm.test.num_examples / k;
  std::vector<ClientData> out(k);
  if (partition == "dirichlet") {
    const data::Dataset pool =
        data::Subset(fm.train, std::vector<int>(tr.begin(), tr.begin() + k * per));
    FEDGE_ASSIGN_OR_RETURN(
        data::ClientIndices parts,
        data::LabelDirichlet(pool.labels, pool.num_classes, k, absl::GetFlag(FLAGS_alpha),
                             seed, /*min_size=*/10));
    for (int c = 0; c < k; ++c) {
      const data::Dataset train = data::Subset(pool, parts[c]);
      LabelMatchedEvalSets(fm.test, train, part, rng, out[c]);
      out[c].train = Resize32(train);
    }
    return out;
  }
  for (int c = 0; c < k; ++c) {
    out[c].train = Resize32(data::Subset(
        fm.train, std::vector<int>(tr.begin() + c * per, tr.begin() + (c + 1) * per)));
    const auto base = te.begin() + c * part;
    out[c].val = Resize32(data::Subset(fm.test, std::vector<int>(base, base + part / 2)));
    out[c].test = Resize32(data::Subset(fm.test, std::vector<int>(base + part / 2, base + part)));
  }
  return out;
}

// Runs fn(0 .. n−1) on up to --threads threads.
template <typename Fn>
void ParallelFor(int n, Fn fn) {
  const int threads = std::max(1, std::min(absl::GetFlag(FLAGS_threads), n));
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (std::thread& th : pool) th.join();
}

double Mean(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::string JsonList(const std::vector<double>& v) {
  std::vector<std::string> s;
  for (double x : v) s.push_back(absl::StrFormat("%.4f", x));
  return absl::StrCat("[", absl::StrJoin(s, ","), "]");
}

class Output {
 public:
  explicit Output(const std::string& path) {
    if (!path.empty()) file_.open(path, std::ios::app);
  }
  void Line(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (file_.is_open()) file_ << line << "\n" << std::flush;
  }

 private:
  std::ofstream file_;
};

struct Tracker {
  double best_val = -1, test_at_best_val = 0, last_test = 0;
  int best_round = -1;
  // The paper's protocol (its code's evaluate()): each client keeps the test accuracy of the
  // round where its own validation accuracy was best (first such round); the mean over
  // clients of those.
  std::vector<double> client_best_val, client_test_at_best;
  int rounds_run = 0;
  // --early-stop-rounds: true once the mean validation accuracy has not improved for
  // `patience` rounds (patience 0: never).
  bool Stop(int patience) const {
    return patience > 0 && best_round >= 0 && rounds_run - best_round >= patience;
  }
  void Add(int round, const std::vector<double>& val, const std::vector<double>& test) {
    const double v = Mean(val), t = Mean(test);
    if (v > best_val) {
      best_val = v;
      test_at_best_val = t;
      best_round = round;
    }
    last_test = t;
    rounds_run = round;
    client_best_val.resize(val.size(), -1.0);
    client_test_at_best.resize(val.size(), 0.0);
    for (size_t c = 0; c < val.size(); ++c) {
      if (val[c] > client_best_val[c]) {
        client_best_val[c] = val[c];
        client_test_at_best[c] = test[c];
      }
    }
  }
};

// `rounds` is the number run; `stopped_early` says whether --early-stop-rounds ended the
// run before --rounds.
std::string Summary(const std::string& algo, uint64_t seed, const Tracker& t, double seconds) {
  const int patience = absl::GetFlag(FLAGS_early_stop_rounds);
  return absl::StrFormat(
      "{\"summary\":true,\"algorithm\":\"%s\",\"seed\":%d,\"rounds\":%d,"
      "\"early_stop_rounds\":%d,\"stopped_early\":%s,"
      "\"final_test_acc\":%.4f,\"best_val_round\":%d,\"best_val_acc\":%.4f,"
      "\"test_acc_at_best_val\":%.4f,\"per_client_best_val_test_acc\":%.4f,"
      "\"seconds\":%.1f}",
      algo, seed, t.rounds_run, patience,
      t.Stop(patience) && t.rounds_run < absl::GetFlag(FLAGS_rounds) ? "true" : "false",
      t.last_test, t.best_round, t.best_val, t.test_at_best_val, Mean(t.client_test_at_best),
      seconds);
}

double Accuracy(model::Sequential& net, const data::Dataset& d) {
  int64_t correct = 0;
  const int in = static_cast<int>(d.feature_size());
  for (int b = 0; b < d.num_examples; b += 256) {
    const int n = std::min(256, d.num_examples - b);
    const float* logits = net.Forward(d.features.data() + static_cast<size_t>(b) * in, n,
                                      model::ComputeMode::kFp32, false);
    correct += model::CountCorrect(logits, d.labels.data() + b, n, d.num_classes);
  }
  return static_cast<double>(correct) / d.num_examples;
}

// E∘C as one Sequential (FedAvg and local-only).
v1::ModelSpec WholeSpec(const model::FedCgShape& shape) {
  v1::ModelSpec spec = model::FedCgExtractorSpec(shape);
  spec.set_name("fedcg_lenet");
  const v1::ModelSpec classifier = model::FedCgClassifierSpec(shape);
  for (const v1::LayerSpec& l : classifier.layers()) *spec.add_layers() = l;
  return spec;
}

void AddDelta(v1::ModelProto& model, const v1::ModelProto& delta, float w) {
  for (int i = 0; i < model.parameters_size(); ++i) {
    auto* t = model.mutable_parameters(i);
    for (int j = 0; j < t->values_size(); ++j) {
      t->set_values(j, t->values(j) + w * delta.parameters(i).values(j));
    }
  }
}

client::LocalTrainingOptions PlainOptions(uint64_t seed) {
  client::LocalTrainingOptions o;
  o.epochs = absl::GetFlag(FLAGS_local_epochs);
  o.batch_size = absl::GetFlag(FLAGS_batch);
  o.optimizer = client::LocalTrainingOptions::Optimizer::kAdam;
  o.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  o.seed = seed;
  return o;
}

// fedavg / fedprox (shared = true; fedprox adds the proximal term --mu) or local
// (shared = false).
absl::Status RunPlain(const std::vector<ClientData>& clients, const std::string& algo,
                      uint64_t seed, Output& out) {
  const bool shared = algo != "local";
  const float mu = algo == "fedprox" ? static_cast<float>(absl::GetFlag(FLAGS_mu)) : 0.0f;
  const auto start = std::chrono::steady_clock::now();
  const model::FedCgShape shape;
  FEDGE_ASSIGN_OR_RETURN(auto init, model::Sequential::Create(WholeSpec(shape)));
  init->InitParameters(seed * 7 + 3);
  const int k = static_cast<int>(clients.size());
  std::vector<v1::ModelProto> models(shared ? 1 : k, init->ToProto());
  std::vector<std::unique_ptr<model::Optimizer>> optimizers(k);
  if (absl::GetFlag(FLAGS_keep_optimizer)) {
    for (int c = 0; c < k; ++c) {
      FEDGE_ASSIGN_OR_RETURN(optimizers[c], client::MakeLocalOptimizer(PlainOptions(0)));
    }
  }
  Tracker tracker;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int patience = absl::GetFlag(FLAGS_early_stop_rounds);
  for (int r = 0; r < rounds && !tracker.Stop(patience); ++r) {
    const auto round_start = std::chrono::steady_clock::now();
    std::vector<v1::ModelProto> deltas;
    std::vector<double> weights, losses;
    std::vector<absl::StatusOr<client::LocalUpdate>> results(k);
    ParallelFor(k, [&](int c) {
      client::LocalTrainingOptions o = PlainOptions(seed * 1000003 + r * 101 + c);
      o.proximal_mu = mu;
      o.persistent_optimizer = optimizers[c].get();
      results[c] = client::TrainLocally(models[shared ? 0 : c], clients[c].train, o);
    });
    for (int c = 0; c < k; ++c) {
      FEDGE_ASSIGN_OR_RETURN(client::LocalUpdate u, std::move(results[c]));
      losses.push_back(u.train_loss);
      if (shared) {
        deltas.push_back(std::move(u.delta));
        weights.push_back(static_cast<double>(u.num_examples));
      } else {
        AddDelta(models[c], u.delta, 1.0f);
      }
    }
    if (shared) {
      const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
      for (int c = 0; c < k; ++c) {
        AddDelta(models[0], deltas[c], static_cast<float>(weights[c] / total));
      }
    }
    std::vector<double> val, test;
    for (int c = 0; c < k; ++c) {
      FEDGE_ASSIGN_OR_RETURN(auto net, model::Sequential::FromProto(models[shared ? 0 : c]));
      val.push_back(Accuracy(*net, clients[c].val));
      test.push_back(Accuracy(*net, clients[c].test));
    }
    tracker.Add(r + 1, val, test);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count();
    out.Line(absl::StrFormat(
        "{\"algorithm\":\"%s\",\"seed\":%d,\"round\":%d,\"val_acc\":%.4f,\"test_acc\":%.4f,"
        "\"client_val_acc\":%s,\"client_test_acc\":%s,\"train_loss\":%.4f,\"seconds\":%.1f}",
        algo, seed, r + 1, Mean(val), Mean(test), JsonList(val), JsonList(test), Mean(losses),
        secs));
  }
  out.Line(Summary(algo, seed, tracker,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                       .count()));
  return absl::OkStatus();
}

v1::ModelProto ToProto(const aggregation::ModelWeights& w) {
  v1::ModelProto p;
  for (const aggregation::Tensor& t : w) {
    v1::TensorProto* q = p.add_parameters();
    q->set_name(t.name);
    for (int64_t d : t.shape) q->add_shape(d);
    q->mutable_values()->Assign(t.values.begin(), t.values.end());
  }
  return p;
}

aggregation::Update ToUpdate(const std::string& id, const client::FedCgUpdate& u) {
  aggregation::Update up;
  up.client_id = id;
  up.weight = static_cast<double>(u.num_examples);
  for (const v1::TensorProto& t : u.delta.parameters()) {
    aggregation::Tensor x;
    x.name = t.name();
    x.shape.assign(t.shape().begin(), t.shape().end());
    x.values.assign(t.values().begin(), t.values().end());
    up.tensors.push_back(std::move(x));
  }
  return up;
}

absl::Status RunFedCg(const std::vector<ClientData>& clients, uint64_t seed, Output& out) {
  const auto start = std::chrono::steady_clock::now();
  model::FedCgShape shape;
  shape.discriminator_spectral_norm = absl::GetFlag(FLAGS_spectral_norm);
  const std::string arch = absl::GetFlag(FLAGS_gan_arch);
  if (arch == "conv") {
    shape.gan = model::FedCgGanArchitecture::kConvBatchNorm;
  } else if (arch != "dense") {
    return absl::InvalidArgumentError(
        absl::StrCat("fedcg_inprocess: --gan-arch must be dense or conv, got '", arch, "'"));
  }
  client::FedCgClientOptions co;
  co.local_epochs = absl::GetFlag(FLAGS_local_epochs);
  co.gan_epochs = absl::GetFlag(FLAGS_gan_epochs);
  co.batch_size = absl::GetFlag(FLAGS_batch);
  co.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_lr));
  co.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  co.gan_learning_rate = static_cast<float>(absl::GetFlag(FLAGS_gan_lr));
  co.gamma_ramp_rounds = absl::GetFlag(FLAGS_gamma_ramp_rounds);
  const int k = static_cast<int>(clients.size());
  std::vector<std::unique_ptr<client::FedCgClient>> devices;
  for (int c = 0; c < k; ++c) {
    FEDGE_ASSIGN_OR_RETURN(auto d, client::FedCgClient::Create(shape, co, seed * 100 + c + 1));
    devices.push_back(std::move(d));
  }
  aggregation::FedCgOptions so;
  so.shape = shape;
  so.distill_steps = absl::GetFlag(FLAGS_distill_steps);
  so.distill_batch = absl::GetFlag(FLAGS_distill_batch);
  so.learning_rate = co.learning_rate;
  so.weight_decay = co.weight_decay;
  so.seed = seed;
  so.persistent_distill_optimizer = absl::GetFlag(FLAGS_persistent_distill_optimizer);
  FEDGE_ASSIGN_OR_RETURN(auto server, aggregation::FedCg::Create(so));
  FEDGE_ASSIGN_OR_RETURN(aggregation::ModelWeights global,
                         aggregation::FedCg::InitialModel(shape, seed * 7 + 5));
  Tracker tracker;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int patience = absl::GetFlag(FLAGS_early_stop_rounds);
  for (int r = 0; r < rounds && !tracker.Stop(patience); ++r) {
    const auto round_start = std::chrono::steady_clock::now();
    const v1::ModelProto broadcast = ToProto(global);
    std::vector<aggregation::Update> updates;
    std::vector<double> ce, mse, dl, gl, local_val;
    double gamma = 0, client_secs = 0;
    std::vector<absl::StatusOr<client::FedCgUpdate>> results(k);
    ParallelFor(k, [&](int c) {
      results[c] = devices[c]->TrainRound(broadcast, clients[c].train, r);
    });
    for (int c = 0; c < k; ++c) {
      FEDGE_ASSIGN_OR_RETURN(client::FedCgUpdate u, std::move(results[c]));
      ce.push_back(u.classifier_loss);
      mse.push_back(u.distance_loss);
      dl.push_back(u.d_loss);
      gl.push_back(u.g_loss);
      gamma = u.gamma;
      client_secs += u.seconds;
      updates.push_back(ToUpdate(absl::StrCat("client-", c), u));
    }
    // Also each client's E_i with its own C_i right after its local steps (before the
    // server replaces C): how much averaging + distillation gains or loses.
    std::vector<double> own_val, own_test;
    for (int c = 0; c < k; ++c) {
      v1::ModelProto own = broadcast;
      for (int i = 0; i < own.parameters_size(); ++i) {
        auto* t = own.mutable_parameters(i);
        const aggregation::Tensor& d = updates[c].tensors[i];
        for (int j = 0; j < t->values_size(); ++j) t->set_values(j, t->values(j) + d.values[j]);
      }
      FEDGE_ASSIGN_OR_RETURN(double v, devices[c]->Evaluate(own, clients[c].val));
      FEDGE_ASSIGN_OR_RETURN(double t, devices[c]->Evaluate(own, clients[c].test));
      own_val.push_back(v);
      own_test.push_back(t);
    }
    FEDGE_ASSIGN_OR_RETURN(auto agg, server->CreateAggregator(aggregation::SpecsOf(global)));
    for (const aggregation::Update& u : updates) FEDGE_RETURN_IF_ERROR(agg->Accumulate(u));
    FEDGE_ASSIGN_OR_RETURN(aggregation::ModelDelta delta, std::move(*agg).Report());
    FEDGE_RETURN_IF_ERROR(server->Apply(delta, &global));
    std::vector<const aggregation::Update*> kept;
    for (const aggregation::Update& u : updates) kept.push_back(&u);
    FEDGE_RETURN_IF_ERROR(server->ServerTrainingStep(kept, &global));
    const v1::ModelProto after = ToProto(global);
    std::vector<double> val, test;
    for (int c = 0; c < k; ++c) {
      FEDGE_ASSIGN_OR_RETURN(double v, devices[c]->Evaluate(after, clients[c].val));
      FEDGE_ASSIGN_OR_RETURN(double t, devices[c]->Evaluate(after, clients[c].test));
      val.push_back(v);
      test.push_back(t);
    }
    tracker.Add(r + 1, val, test);
    const auto& rep = server->last_report();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count();
    out.Line(absl::StrFormat(
        "{\"algorithm\":\"fedcg\",\"seed\":%d,\"round\":%d,\"val_acc\":%.4f,\"test_acc\":%.4f,"
        "\"client_val_acc\":%s,\"client_test_acc\":%s,\"own_c_val_acc\":%.4f,\"own_c_test_acc\":%.4f,\"gamma\":%.4f,\"ce\":%.4f,\"mse\":%.5f,\"d_loss\":%.4f,"
        "\"g_loss\":%.4f,\"distill_first_kl\":%.4f,\"distill_last_kl\":%.4f,"
        "\"synthetic_acc\":%.4f,\"client_seconds\":%.1f,\"server_seconds\":%.1f,"
        "\"seconds\":%.1f}",
        seed, r + 1, Mean(val), Mean(test), JsonList(val), JsonList(test), Mean(own_val), Mean(own_test), gamma, Mean(ce), Mean(mse),
        Mean(dl), Mean(gl), rep.first_kl, rep.last_kl, rep.synthetic_accuracy, client_secs,
        rep.seconds, secs));
  }
  out.Line(Summary("fedcg", seed, tracker,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                       .count()));
  return absl::OkStatus();
}

absl::Status Run() {
  if (absl::GetFlag(FLAGS_rounds) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rounds must be at least 1, got ", absl::GetFlag(FLAGS_rounds)));
  }
  if (absl::GetFlag(FLAGS_early_stop_rounds) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--early-stop-rounds must be 0 (off) or positive, got ",
        absl::GetFlag(FLAGS_early_stop_rounds)));
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  FEDGE_ASSIGN_OR_RETURN(std::vector<ClientData> clients, Split(seed));
  Output out(absl::GetFlag(FLAGS_metrics_out));
  for (absl::string_view algo : absl::StrSplit(absl::GetFlag(FLAGS_algorithms), ',')) {
    if (algo == "fedcg") {
      FEDGE_RETURN_IF_ERROR(RunFedCg(clients, seed, out));
    } else if (algo == "fedavg" || algo == "fedprox" || algo == "local") {
      FEDGE_RETURN_IF_ERROR(RunPlain(clients, std::string(algo), seed, out));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("fedcg_inprocess: unknown algorithm '", algo, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  fedge::base::AcceptDashedFlags(argc, argv);
  absl::SetProgramUsageMessage(
      "FedCG vs FedAvg vs local-only on the paper's Fashion-MNIST setting, in one process");
  absl::ParseCommandLine(argc, argv);
  const absl::Status s = fedge::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "fedcg_inprocess: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
