// Training-step and inference throughput of the zoo models, one thread, batch 64:
// forward + backward + SGD (momentum) per iteration, in fp32 and int8-QAT, and
// inference in fp32, int8 and int4. Reports samples/s ("items_per_second").
//
// After the runs it prints a table with the int8-QAT/fp32 ratio measured in this run.
// PyTorch's figures are measured in the same run by bench/peers/compare_train_step.sh,
// which runs this program and bench/peers/pytorch_train_step.py back to back.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/rng.h"
#include "benchmark/benchmark.h"
#include "kernels/cpu.h"
#include "model/loss.h"
#include "model/optimizer.h"
#include "model/sequential.h"
#include "model/zoo.h"

namespace fedge {
namespace {

constexpr int kBatch = 64;

struct Fixture {
  std::unique_ptr<model::Sequential> net;
  std::unique_ptr<model::Sgd> sgd;
  std::vector<float> x, dlogits;
  std::vector<int32_t> labels;
};

Fixture Make(const std::string& arch) {
  Fixture f;
  f.net = std::move(model::Sequential::Create(*model::ArchitectureByName(arch))).value();
  f.net->InitParameters(1);
  f.sgd = std::move(model::Sgd::Create({0.01f, 0.9f, 0.0f, false})).value();
  base::Rng rng(2);
  f.x.resize(kBatch * f.net->input_size());
  for (float& v : f.x) v = static_cast<float>(rng.Normal());
  f.labels.resize(kBatch);
  for (int32_t& y : f.labels) y = static_cast<int32_t>(rng.UniformInt(10));
  f.dlogits.resize(kBatch * 10);
  return f;
}

model::ComputeMode Mode(int64_t m) { return static_cast<model::ComputeMode>(m); }
const char* kArch[] = {"mlp", "cnn"};

void BM_TrainStep(benchmark::State& state) {
  const std::string arch = kArch[state.range(0)];
  const model::ComputeMode mode = Mode(state.range(1));
  Fixture f = Make(arch);
  const std::vector<model::Parameter*> params = f.net->parameters();
  for (auto _ : state) {
    f.net->ZeroGrad();
    const float* logits = f.net->Forward(f.x.data(), kBatch, mode, true);
    model::SoftmaxCrossEntropy(logits, f.labels.data(), kBatch, 10, f.dlogits.data());
    f.net->Backward(f.dlogits.data());
    f.sgd->Step(params);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(arch + "/" + std::string(model::ComputeModeName(mode)));
}

void BM_Inference(benchmark::State& state) {
  const std::string arch = kArch[state.range(0)];
  const model::ComputeMode mode = Mode(state.range(1));
  Fixture f = Make(arch);
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.net->Forward(f.x.data(), kBatch, mode, false));
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(arch + "/" + std::string(model::ComputeModeName(mode)));
}

BENCHMARK(BM_TrainStep)->ArgsProduct({{0, 1}, {0, 1}})->ArgNames({"cnn", "int8"})->MinTime(1.0);
BENCHMARK(BM_Inference)->ArgsProduct({{0, 1}, {0, 1, 2}})->ArgNames({"cnn", "mode"})->MinTime(0.5);

// Collects items/s per label while printing as usual.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto it = r.counters.find("items_per_second");
      if (it != r.counters.end()) {
        results[r.benchmark_name().substr(0, r.benchmark_name().find('/')) + ":" +
                r.report_label] = it->second;
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> results;
};

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  fedge::CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  auto& r = reporter.results;
  std::printf("\nTraining step, batch 64, one thread, kernels %s\n",
              fedge::kernels::IsaName(fedge::kernels::BestIsa()));
  std::printf("%-5s %14s %14s %10s\n", "model", "fp32 samples/s", "int8 samples/s",
              "int8/fp32");
  for (int a = 0; a < 2; ++a) {
    const std::string arch = fedge::kArch[a];
    const double fp32 = r["BM_TrainStep:" + arch + "/fp32"];
    const double int8 = r["BM_TrainStep:" + arch + "/int8"];
    if (fp32 == 0 || int8 == 0) continue;  // filtered out
    std::printf("%-5s %14.0f %14.0f %10.2f\n", arch.c_str(), fp32, int8, int8 / fp32);
  }
  std::printf("\nInference, batch 64, samples/s\n%-5s %12s %12s %12s\n", "model", "fp32", "int8",
              "int4");
  for (int a = 0; a < 2; ++a) {
    const std::string arch = fedge::kArch[a];
    const double fp32 = r["BM_Inference:" + arch + "/fp32"];
    if (fp32 == 0) continue;  // filtered out
    std::printf("%-5s %12.0f %12.0f %12.0f\n", arch.c_str(), fp32,
                r["BM_Inference:" + arch + "/int8"], r["BM_Inference:" + arch + "/int4"]);
  }
  benchmark::Shutdown();
  return 0;
}
