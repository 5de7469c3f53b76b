// The language model's training throughput (model/transformer.h), one thread: forward,
// backward and an Adam step per iteration on batches of token windows. Reports tokens/s
// ("items_per_second") for the default model (4 layers, d = 256, 4 heads, SwiGLU 768,
// vocabulary 4096, context 128) at batch 8.
//
//   lm_train_bench                       Google Benchmark run
//   lm_train_bench --dump DIR [STEPS]    parity run: writes the initial weights and STEPS
//                                        batches to DIR, trains on them, writes the losses
//
// The parity run's files, read by bench/peers/pytorch_lm.py (which trains the same
// architecture in PyTorch from the same weights on the same batches):
//   DIR/config.txt     "key value" lines: the model config, batch, len, steps, lr
//   DIR/params.txt     one line per parameter in order: name and shape
//   DIR/weights.f32    the initial parameters, concatenated, float32 little-endian
//   DIR/batches.i32    per step: tokens then targets [batch × len], int32 little-endian
//   DIR/fedge_losses.txt  one training loss per step
// Batches come from a fixed random bigram chain (each token has 4 likely successors), so
// that the loss falls as the model learns it.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "base/rng.h"
#include "benchmark/benchmark.h"
#include "data/token_windows.h"
#include "model/optimizer.h"
#include "model/transformer.h"

namespace fedge {
namespace {

constexpr int kBatch = 8;
constexpr float kLearningRate = 1e-3f;

model::TransformerConfig BenchConfig() { return model::TransformerConfig{}; }

// A stream from a random bigram chain over the vocabulary: token t is followed by one of
// four successors fixed per t (probabilities 0.4, 0.3, 0.2, 0.1).
std::vector<int32_t> BigramStream(int vocab, int64_t n, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<int32_t> next(static_cast<size_t>(vocab) * 4);
  for (auto& v : next) v = static_cast<int32_t>(rng.UniformInt(vocab));
  std::vector<int32_t> out(n);
  int32_t t = 0;
  for (auto& v : out) {
    const double u = rng.Uniform();
    const int k = u < 0.4 ? 0 : u < 0.7 ? 1 : u < 0.9 ? 2 : 3;
    t = next[static_cast<size_t>(t) * 4 + k];
    v = t;
  }
  return out;
}

data::TokenWindows BenchWindows(const model::TransformerConfig& c) {
  return data::TokenWindows::Create(BigramStream(c.vocab_size, 1 << 20, 3), c.context).value();
}

void BM_LmTrainStep(benchmark::State& state) {
  const model::TransformerConfig c = BenchConfig();
  auto lm = model::TransformerLM::Create(c).value();
  lm->InitParameters(1);
  auto adam = model::Adam::Create({kLearningRate}).value();
  const data::TokenWindows windows = BenchWindows(c);
  base::Rng rng(2);
  std::vector<int32_t> tokens(kBatch * c.context), targets(tokens.size());
  const std::vector<model::Parameter*> params = lm->parameters();
  for (auto _ : state) {
    windows.Sample(rng, kBatch, tokens.data(), targets.data());
    lm->ZeroGrad();
    benchmark::DoNotOptimize(lm->Loss(tokens.data(), targets.data(), kBatch, c.context, true));
    adam->Step(params);
  }
  state.SetItemsProcessed(state.iterations() * kBatch * c.context);
}
BENCHMARK(BM_LmTrainStep)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_LmDecodeToken(benchmark::State& state) {
  const model::TransformerConfig c = BenchConfig();
  auto lm = model::TransformerLM::Create(c).value();
  lm->InitParameters(1);
  model::TransformerDecoder decoder(*lm);
  int32_t token = 1;
  for (auto _ : state) {
    if (decoder.position() == c.context) decoder.Reset();
    const float* logits = decoder.Step(token);
    token = static_cast<int32_t>((token * 31 + static_cast<int>(logits[0] > 0)) % c.vocab_size);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_LmDecodeToken)->Unit(benchmark::kMicrosecond)->UseRealTime();

int Dump(const std::string& dir, int steps) {
  const model::TransformerConfig c = BenchConfig();
  auto lm = model::TransformerLM::Create(c).value();
  lm->InitParameters(1);
  const std::vector<model::Parameter*> params = lm->parameters();
  {
    std::ofstream cfg(dir + "/config.txt");
    cfg << "vocab_size " << c.vocab_size << "\ndim " << c.dim << "\nnum_layers " << c.num_layers
        << "\nnum_heads " << c.num_heads << "\nffn_dim " << c.ffn_dim << "\ncontext "
        << c.context << "\nnorm_epsilon " << c.norm_epsilon << "\nrope_base " << c.rope_base
        << "\nbatch " << kBatch << "\nlen " << c.context << "\nsteps " << steps << "\nlr "
        << kLearningRate << "\n";
    std::ofstream names(dir + "/params.txt");
    std::ofstream w(dir + "/weights.f32", std::ios::binary);
    for (const model::Parameter* p : params) {
      names << p->name;
      for (int d : p->shape) names << ' ' << d;
      names << '\n';
      w.write(reinterpret_cast<const char*>(p->value.data()),
              static_cast<std::streamsize>(p->value.size() * sizeof(float)));
    }
    if (!cfg || !names || !w) {
      std::fprintf(stderr, "lm_train_bench: cannot write into %s\n", dir.c_str());
      return 1;
    }
  }
  const data::TokenWindows windows = BenchWindows(c);
  base::Rng rng(2);
  auto adam = model::Adam::Create({kLearningRate}).value();
  std::vector<int32_t> tokens(kBatch * c.context), targets(tokens.size());
  std::ofstream batches(dir + "/batches.i32", std::ios::binary);
  std::ofstream losses(dir + "/fedge_losses.txt");
  for (int s = 0; s < steps; ++s) {
    windows.Sample(rng, kBatch, tokens.data(), targets.data());
    batches.write(reinterpret_cast<const char*>(tokens.data()),
                  static_cast<std::streamsize>(tokens.size() * sizeof(int32_t)));
    batches.write(reinterpret_cast<const char*>(targets.data()),
                  static_cast<std::streamsize>(targets.size() * sizeof(int32_t)));
    lm->ZeroGrad();
    const float loss = lm->Loss(tokens.data(), targets.data(), kBatch, c.context, true);
    adam->Step(params);
    char line[32];
    std::snprintf(line, sizeof line, "%.9g\n", loss);
    losses << line;
  }
  if (!batches || !losses) {
    std::fprintf(stderr, "lm_train_bench: cannot write into %s\n", dir.c_str());
    return 1;
  }
  std::printf("lm_train_bench: wrote %d steps to %s\n", steps, dir.c_str());
  return 0;
}

}  // namespace
}  // namespace fedge

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--dump") == 0) {
    return fedge::Dump(argv[2], argc >= 4 ? std::atoi(argv[3]) : 100);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
