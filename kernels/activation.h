// Elementwise activations and their backward passes over n contiguous floats:
//   Relu:      y = x < 0 ? 0 : x            backward from y:  dx = y > 0 ? dy : 0
//   LeakyRelu: y = x > 0 ? x : slope·x      backward from x:  dx = x > 0 ? dy : slope·dy
//   Sigmoid:   y = 1 / (1 + e^−x)           backward from y:  dx = dy·y·(1 − y)
// (Relu keeps −0 and NaN of x as they are, like std::max(x, 0).)
//
// Exactness: every variant computes each element with the same operations in the same
// order (no fma, no reassociation) and is bit-exact with the *_ref functions.
//
// Variants: `*_ref` (scalar, always built), `*_portable` (plain C++ for the auto-vectorizer,
// any CPU), `*_avx2` and `*_avx512` (the portable source compiled with that ISA's flags,
// x86-64 only). The unsuffixed functions pick one at run time (cpu.h).
// REQUIRES (all): the output does not overlap an input.
#ifndef FEDGE_KERNELS_ACTIVATION_H_
#define FEDGE_KERNELS_ACTIVATION_H_

#include <cstdint>

#include "kernels/cpu.h"

namespace fedge::kernels {

void Relu(const float* x, int64_t n, float* y, Isa isa = BestIsa());
void ReluBackward(const float* y, const float* dy, int64_t n, float* dx, Isa isa = BestIsa());
void LeakyRelu(const float* x, int64_t n, float slope, float* y, Isa isa = BestIsa());
void LeakyReluBackward(const float* x, const float* dy, int64_t n, float slope, float* dx,
                       Isa isa = BestIsa());
void Sigmoid(const float* x, int64_t n, float* y, Isa isa = BestIsa());
void SigmoidBackward(const float* y, const float* dy, int64_t n, float* dx,
                     Isa isa = BestIsa());

// The variants, for tests and benchmarks. Call only those the CPU supports.
void Relu_ref(const float* x, int64_t n, float* y);
void ReluBackward_ref(const float* y, const float* dy, int64_t n, float* dx);
void LeakyRelu_ref(const float* x, int64_t n, float slope, float* y);
void LeakyReluBackward_ref(const float* x, const float* dy, int64_t n, float slope, float* dx);
void Sigmoid_ref(const float* x, int64_t n, float* y);
void SigmoidBackward_ref(const float* y, const float* dy, int64_t n, float* dx);

void Relu_portable(const float* x, int64_t n, float* y);
void ReluBackward_portable(const float* y, const float* dy, int64_t n, float* dx);
void LeakyRelu_portable(const float* x, int64_t n, float slope, float* y);
void LeakyReluBackward_portable(const float* x, const float* dy, int64_t n, float slope,
                                float* dx);
void Sigmoid_portable(const float* x, int64_t n, float* y);
void SigmoidBackward_portable(const float* y, const float* dy, int64_t n, float* dx);

void Relu_avx2(const float* x, int64_t n, float* y);
void ReluBackward_avx2(const float* y, const float* dy, int64_t n, float* dx);
void LeakyRelu_avx2(const float* x, int64_t n, float slope, float* y);
void LeakyReluBackward_avx2(const float* x, const float* dy, int64_t n, float slope,
                            float* dx);
void Sigmoid_avx2(const float* x, int64_t n, float* y);
void SigmoidBackward_avx2(const float* y, const float* dy, int64_t n, float* dx);

void Relu_avx512(const float* x, int64_t n, float* y);
void ReluBackward_avx512(const float* y, const float* dy, int64_t n, float* dx);
void LeakyRelu_avx512(const float* x, int64_t n, float slope, float* y);
void LeakyReluBackward_avx512(const float* x, const float* dy, int64_t n, float slope,
                              float* dx);
void Sigmoid_avx512(const float* x, int64_t n, float* y);
void SigmoidBackward_avx512(const float* y, const float* dy, int64_t n, float* dx);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_ACTIVATION_H_
