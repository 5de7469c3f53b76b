// GEMM throughput: Eigen fp32 (kernels::Sgemm) against the int8 (QGemmS8) and int4-weight
// (QGemmQ4) kernels at BestIsa(), one thread, on 512³ and the zoo models' layer shapes at
// batch 64. Every product is C[M×N] = A[M×K] · B[N×K]ᵀ (the layout of a Dense forward pass);
// for a layer y = x·Wᵀ the backward products are dX = dY·W (M×K×N) and dW = dYᵀ·x (N×K×M),
// benchmarked here at those shapes in the same layout. Activation quantization is timed on
// its own ("quantize"), outside the GEMM loops. GOP/s counts 2·M·N·K per iteration. The
// cnn's convolutions also run by the direct kernels ("direct": forward and weight gradient,
// im2col included since they need none).
//
// After Google Benchmark finishes, a table of the ratios int8/fp32, int4/fp32 and int4/int8
// per shape is printed, from the numbers measured in this run: with repetitions, the best
// (highest) GOP/s of each benchmark's repetitions, which is the least disturbed by other load
// on the machine. For a kernel comparison on a busy machine, interleave the repetitions:
//
//   build/bin/gemm_bench --benchmark_filter='int[48]/(square512|mlp_fc1)$'
//       --benchmark_repetitions=9 --benchmark_enable_random_interleaving=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "base/rng.h"
#include "kernels/conv.h"
#include "kernels/conv_direct.h"
#include "kernels/cpu.h"
#include "kernels/q4.h"
#include "kernels/qgemm.h"
#include "kernels/quantize.h"
#include "kernels/sgemm.h"

namespace fedge::kernels {
namespace {

struct Shape {
  const char* name;
  int m, n, k;
};

// mlp: 784-200-200-10; cnn: conv1 5×5×1→6 over 24×24 (im2col 64·576 rows), conv2 5×5×6→16
// over 8×8 (64·64 rows), fc 256→120.
std::vector<Shape> Shapes() {
  // edge_free: mlp_fc1 rounded to whole 6-row, 32-channel tiles (isolates the edge tiles'
  // cost in the int4 kernel).
  std::vector<Shape> s = {{"square512", 512, 512, 512}, {"edge_free", 66, 192, 768}};
  const Shape layers[] = {{"mlp_fc1", 64, 200, 784},    {"mlp_fc2", 64, 200, 200},
                          {"mlp_fc3", 64, 10, 200},     {"cnn_conv1", 36864, 6, 25},
                          {"cnn_conv2", 4096, 16, 150}, {"cnn_fc1", 64, 120, 256}};
  for (const Shape& l : layers) s.push_back(l);
  static std::vector<std::string> names;  // keeps the c_str()s alive
  names.reserve(64);
  for (const Shape& l : layers) {
    names.push_back(std::string(l.name) + "_dX");
    s.push_back({names.back().c_str(), l.m, l.k, l.n});
    names.push_back(std::string(l.name) + "_dW");
    s.push_back({names.back().c_str(), l.n, l.k, l.m});
  }
  return s;
}

std::vector<float> Random(int rows, int cols, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(rows) * cols);
  for (float& x : v) x = static_cast<float>(rng.Normal());
  return v;
}

void SetOps(benchmark::State& state, const Shape& s) {
  state.counters["GOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k / 1e9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Fp32(benchmark::State& state, Shape s) {
  const std::vector<float> x = Random(s.m, s.k, 1), w = Random(s.n, s.k, 2);
  std::vector<float> y(static_cast<size_t>(s.m) * s.n);
  for (auto _ : state) {
    Sgemm(Trans::kNo, Trans::kYes, s.m, s.n, s.k, 1.0f, x.data(), s.k, w.data(), s.k, 0.0f,
          y.data(), s.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetOps(state, s);
}

void BM_Int8(benchmark::State& state, Shape s) {
  const std::vector<float> x = Random(s.m, s.k, 1), w = Random(s.n, s.k, 2);
  QuantizedActivations xq;
  PackedWeightsS8 wq;
  QuantizeActivations(x.data(), s.m, s.k, s.k, &xq);
  QuantizeWeightsS8(w.data(), s.n, s.k, s.k, &wq);
  std::vector<float> y(static_cast<size_t>(s.m) * s.n);
  const Epilogue epi;
  for (auto _ : state) {
    QGemmS8(xq, wq, epi, y.data(), s.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetOps(state, s);
}

void BM_Int4(benchmark::State& state, Shape s) {
  const std::vector<float> x = Random(s.m, s.k, 1), w = Random(s.n, s.k, 2);
  QuantizedActivations xq;
  PackedWeightsQ4 wq;
  QuantizeActivations(x.data(), s.m, s.k, s.k, &xq);
  QuantizeWeightsQ4(w.data(), s.n, s.k, s.k, &wq);
  std::vector<float> y(static_cast<size_t>(s.m) * s.n);
  const Epilogue epi;
  for (auto _ : state) {
    QGemmQ4(xq, wq, epi, y.data(), s.n);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  SetOps(state, s);
}

// Activation quantization of the M×K operand (what QAT pays per GEMM on top of the kernel).
void BM_Quantize(benchmark::State& state, Shape s) {
  const std::vector<float> x = Random(s.m, s.k, 1);
  QuantizedActivations xq;
  for (auto _ : state) {
    QuantizeActivations(x.data(), s.m, s.k, s.k, &xq);
    benchmark::DoNotOptimize(xq.data.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * s.m * s.k / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// The cnn's convolutions by the direct kernels (kernels/conv_direct.h), batch 64, at the
// shapes above: forward (cnn_convN: y = conv(x) + bias) and weight gradient (cnn_convN_dW),
// so that the table sets them beside the GEMM alone (which leaves out the im2col they save).
ConvGeometry CnnConv(int which) {
  ConvGeometry g;
  g.height = g.width = which == 1 ? 28 : 12;
  g.channels = which == 1 ? 1 : 6;
  g.kernel = 5;
  g.out_height = g.out_width = which == 1 ? 24 : 8;
  return g;
}

void BM_Direct(benchmark::State& state, Shape s, int which, bool weight_grad) {
  const ConvGeometry g = CnnConv(which);
  const int cout = which == 1 ? 6 : 16, batch = 64;
  const std::vector<float> x = Random(batch, static_cast<int>(g.input_size()), 1);
  const std::vector<float> w = Random(cout, g.k(), 2);
  const std::vector<float> dy = Random(batch, static_cast<int>(g.rows()) * cout, 3);
  std::vector<float> wp(static_cast<size_t>(g.k()) * DirectConvPadded(cout));
  std::vector<float> y(dy.size()), dw(w.size());
  std::vector<float> scratch(static_cast<size_t>(
      std::max(DirectConvScratch(g), DirectConvGradScratch(g, cout))));
  for (auto _ : state) {
    if (weight_grad) {
      ConvDirectWeightGrad(g, cout, x.data(), dy.data(), batch, dw.data(), nullptr,
                           scratch.data());
      benchmark::DoNotOptimize(dw.data());
    } else {
      PackConvWeights(g, cout, w.data(), wp.data());
      ConvDirect(g, cout, x.data(), batch, wp.data(), w.data(), y.data(), scratch.data());
      benchmark::DoNotOptimize(y.data());
    }
    benchmark::ClobberMemory();
  }
  SetOps(state, s);
}

// Forwards to the console and keeps each benchmark's best GOP/s over its repetitions.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      auto it = run.counters.find("GOP/s");
      if (it == run.counters.end()) continue;
      double& best = gops_[run.benchmark_name()];
      best = std::max(best, it->second.value);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  double Get(const std::string& name) const {
    auto it = gops_.find(name);
    return it == gops_.end() ? 0.0 : it->second;
  }

 private:
  std::map<std::string, double> gops_;
};

}  // namespace
}  // namespace fedge::kernels

int main(int argc, char** argv) {
  using namespace fedge::kernels;
  const std::vector<Shape> shapes = Shapes();
  for (const Shape& s : shapes) {
    const std::string n = s.name;
    benchmark::RegisterBenchmark(("fp32/" + n).c_str(), BM_Fp32, s);
    benchmark::RegisterBenchmark(("int8/" + n).c_str(), BM_Int8, s);
    benchmark::RegisterBenchmark(("int4/" + n).c_str(), BM_Int4, s);
    benchmark::RegisterBenchmark(("quantize/" + n).c_str(), BM_Quantize, s);
    for (int which : {1, 2}) {
      const std::string conv = "cnn_conv" + std::to_string(which);
      if (n == conv || n == conv + "_dW") {
        benchmark::RegisterBenchmark(("direct/" + n).c_str(), BM_Direct, s, which,
                                     n != conv);
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::printf("quantized kernels: %s (FEDGE_ISA caps it); fp32: Eigen; 1 thread\n",
              IsaName(BestIsa()));
  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\n%-18s %7s %7s %7s %8s %8s %8s %7s %8s  (GOP/s; M x N x K)\n", "shape",
              "fp32", "int8", "int4", "i8/fp32", "i4/fp32", "i4/i8", "direct", "dir/fp32");
  for (const Shape& s : shapes) {
    const double f = reporter.Get(std::string("fp32/") + s.name);
    const double i8 = reporter.Get(std::string("int8/") + s.name);
    const double i4 = reporter.Get(std::string("int4/") + s.name);
    if (f == 0 && i8 == 0 && i4 == 0) continue;  // filtered out
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    const double d = reporter.Get(std::string("direct/") + s.name);
    std::printf("%-18s %7.1f %7.1f %7.1f %8.2f %8.2f %8.2f %7.1f %8.2f  %dx%dx%d\n", s.name, f,
                i8, i4, ratio(i8, f), ratio(i4, f), ratio(i4, i8), d, ratio(d, f), s.m, s.n,
                s.k);
  }
  return 0;
}
