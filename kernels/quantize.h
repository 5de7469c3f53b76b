// int8 quantization: weights symmetric per output channel, activations per tensor
// (dynamic range), and the packed weight layout the int8 GEMMs read.
//
// Conventions (docs/architecture.md, Algorithms): q = clamp(round_half_even(x / s), -127, 127) with
// s = max|x| / 127 (s = 1 when the row or tensor is all zero, so q = 0). Dequantize: x ≈ q·s.
#ifndef FEDGE_KERNELS_QUANTIZE_H_
#define FEDGE_KERNELS_QUANTIZE_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "kernels/cpu.h"

namespace fedge::kernels {

// A std::allocator that returns 64-byte-aligned memory (one cache line: a vector's 64-byte
// SIMD loads then never straddle two lines).
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  friend bool operator==(const CacheLineAllocator&, const CacheLineAllocator&) { return true; }
  friend bool operator!=(const CacheLineAllocator&, const CacheLineAllocator&) { return false; }
};

// K is padded to a multiple of this in every quantized operand (zeros in the padding), so
// that every variant can run whole 64-byte steps along K.
inline constexpr int kQuantKAlign = 64;
inline int PadK(int k) { return (k + kQuantKAlign - 1) / kQuantKAlign * kQuantKAlign; }

// Activations: m rows of k values, one scale for the whole tensor.
struct QuantizedActivations {
  int m = 0;
  int k = 0;
  int k_padded = 0;           // PadK(k)
  float scale = 1.0f;         // x ≈ q · scale
  std::vector<int8_t> data;   // m × k_padded, row-major, zero padded
  const int8_t* row(int i) const { return data.data() + static_cast<size_t>(i) * k_padded; }
};

// Per-tensor dynamic-range quantization of x (m × k, row stride ldx ≥ k). Resizes `out`
// only when it must, so a reused `out` allocates nothing in steady state.
void QuantizeActivations(const float* x, int m, int k, int ldx, QuantizedActivations* out,
                         Isa isa = BestIsa());

// out[i·ldy + j] = q[i][j] · scale, for the m × k logical part.
void DequantizeActivations(const QuantizedActivations& q, float* out, int ldy);

// Weights W (n output channels × k inputs, row-major, as a Dense layer stores them),
// quantized per output channel and packed for the GEMMs:
//   panels of kPanel = 16 output channels (n padded with zero channels to a multiple of 16);
//   inside a panel, for each group of 4 consecutive k (k4 = 0 .. k_padded/4 - 1), the 16
//   channels' 4 bytes: byte offset = panel·(k_padded·16) + k4·64 + channel_in_panel·4 + (k%4).
// This is the layout AVX-512 VNNI's vpdpbusd consumes directly (one 64-byte load per k4).
struct PackedWeightsS8 {
  static constexpr int kPanel = 16;
  int n = 0;
  int k = 0;
  int k_padded = 0;              // PadK(k)
  int n_padded = 0;              // n rounded up to kPanel
  // n_padded × k_padded bytes in the layout above, 64-byte aligned
  std::vector<int8_t, CacheLineAllocator<int8_t>> packed;
  std::vector<float> scales;     // n_padded; W[j][·] ≈ q[j][·] · scales[j] (1 in padding)
  std::vector<int32_t> row_sums; // n_padded; Σ_k q[j][k] (for the u8 = s8 + 128 correction)

  int8_t at(int j, int kk) const {  // q[j][kk], for references and tests
    return packed[static_cast<size_t>(j / kPanel) * k_padded * kPanel +
                  static_cast<size_t>(kk / 4) * (kPanel * 4) + (j % kPanel) * 4 + kk % 4];
  }
};

// Quantizes and packs w (n × k, row stride ldw ≥ k). Reuses out's storage when it can.
// When `dequantized` is not null it also receives q · scale (n × k, row stride ldd): the
// fake-quantized weights of quantization-aware training, without a second pass.
void QuantizeWeightsS8(const float* w, int n, int k, int ldw, PackedWeightsS8* out,
                       float* dequantized = nullptr, int ldd = 0);

// The int8 operand of a weight gradient dW = dyᵀ · a: a's transpose packed as weights of
// a.k channels over a.m inputs (out->at(i, b) == a.row(b)[i], zeros in the padding), every
// channel with scale `scale`, row_sums a's column sums. QGemmS8(quantized dyᵀ, out) then
// gives dyᵀ · a with both operands in int8. Reuses out's storage when it can.
void PackTransposedActivationsS8(const QuantizedActivations& a, float scale,
                                 PackedWeightsS8* out);

// out[j·ldo + kk] = q[j][kk] · scales[j] (the fake-quantized weights of QAT).
void DequantizeWeightsS8(const PackedWeightsS8& w, float* out, int ldo);

}  // namespace fedge::kernels

#endif  // FEDGE_KERNELS_QUANTIZE_H_
