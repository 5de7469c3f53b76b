// Internal to kernels/: the per-ISA variants of the quantized kernels behind the dispatchers
// in quantize.cc, qgemm.cc and q4.cc. The *_avx2 functions live in files built with
// FEDGE_AVX2_FLAGS, the *_avx512vnni ones in files built with FEDGE_AVX512_FLAGS (x86-64
// builds), the *_neondot ones in qgemm_neondot.cc and the *_neoni8mm ones in
// qgemm_neoni8mm.cc, each built with its own flags (aarch64 builds); call a variant only when CpuSupports() says the CPU can run it (UsableIsa does
// that).
#ifndef FEDGE_KERNELS_QKERNELS_ISA_H_
#define FEDGE_KERNELS_QKERNELS_ISA_H_

#include <cstddef>
#include <cstdint>

#include "kernels/cpu.h"
#include "kernels/q4.h"
#include "kernels/qgemm.h"
#include "kernels/quantize.h"

namespace fedge::kernels::qdetail {

// A grow-only, 64-byte-aligned buffer; each kernel keeps one per thread (thread_local), so
// steady-state calls allocate nothing.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();
  void* Get(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

// The scalar definition of one quantized value (quantize.h): t = v / scale clamped to
// [-127, 127] (written so that NaN maps to -127 exactly as vmaxps/vminps do), then rounded
// half to even. Every variant must reproduce this bit for bit.
inline float ClampQ8(float t) {
  t = t > -127.0f ? t : -127.0f;
  return t < 127.0f ? t : 127.0f;
}

// max |x| over an m × k matrix (row stride ldx), NaNs ignored.
float MaxAbs_avx2(const float* x, int m, int k, int ldx);
float MaxAbs_avx512vnni(const float* x, int m, int k, int ldx);
// q[i·ldq + j] = nearbyint(ClampQ8(x[i·ldx + j] / scale)) for j < k, 0 for k ≤ j < kpad.
void QuantizeRows_avx2(const float* x, int m, int k, int ldx, float scale, int8_t* q, int ldq,
                       int kpad);
void QuantizeRows_avx512vnni(const float* x, int m, int k, int ldx, float scale, int8_t* q,
                             int ldq, int kpad);

// Packs one quantized weight row q [kp] (zero past k) at dst, its 4-byte groups 64 bytes
// apart (PackedWeightsS8's layout), and returns Σ_{kk<k} q[kk]; writes deq[kk] =
// q[kk]·scale for kk < k when deq is not null (quantize_pack.inc).
int32_t PackRowS8_portable(const int8_t* q, int k, int kp, float scale, int8_t* dst,
                           float* deq);
int32_t PackRowS8_avx2(const int8_t* q, int k, int kp, float scale, int8_t* dst, float* deq);
int32_t PackRowS8_avx512vnni(const int8_t* q, int k, int kp, float scale, int8_t* dst,
                             float* deq);
// out[kk] = q[kk]·scale for kk < k.
void DequantizeRow_portable(const int8_t* q, int k, float scale, float* out);
void DequantizeRow_avx2(const int8_t* q, int k, float scale, float* out);
void DequantizeRow_avx512vnni(const int8_t* q, int k, float scale, float* out);

// int8 GEMM. Exactly one of y (float epilogue `*epi`) and acc (raw int32) is non-null; ld is
// its row stride.
void QGemmS8_portable(const QuantizedActivations& x, const PackedWeightsS8& w,
                      const Epilogue* epi, float* y, int32_t* acc, int ld);
void QGemmS8_avx2(const QuantizedActivations& x, const PackedWeightsS8& w, const Epilogue* epi,
                  float* y, int32_t* acc, int ld);
void QGemmS8_avx512vnni(const QuantizedActivations& x, const PackedWeightsS8& w,
                        const Epilogue* epi, float* y, int32_t* acc, int ld);
void QGemmS8_neondot(const QuantizedActivations& x, const PackedWeightsS8& w,
                     const Epilogue* epi, float* y, int32_t* acc, int ld);
void QGemmS8_neoni8mm(const QuantizedActivations& x, const PackedWeightsS8& w,
                      const Epilogue* epi, float* y, int32_t* acc, int ld);

// int4 GEMM helpers. The GEMM form of PackedWeightsQ4 (written by PackQ4):
//   packed: q - 8 as s8 in the PackedWeightsS8 order: panels of 16 output channels (n padded
//     to a multiple of 16 with zero channels), byte panel·Q4PanelBytes + k4·64 + c·4 + t
//     holds channel 16·panel + c at k = 4·k4 + t (k < k_padded; padding k holds 0).
//   scales: float(d) per (panel, block, channel): scales[(panel·blocks_per_row + b)·16 + c]
//     (0 for padding channels).
//   sums: -128 · Σ_{k in block b} (q - 8) per (panel, block, channel), in the order of
//     scales: the correction for the u8 = s8 + 128 activations of vpdpbusd.
inline constexpr int kQ4Panel = 16;
inline size_t Q4PanelBytes(int k_padded) { return static_cast<size_t>(k_padded) * kQ4Panel; }

// Transposes `panels` panels in the PackedWeightsS8 order (panel p at src + p·pstride, k4 < k4n)
// to s16 dst[(p·4·k4n + k)·16 + c], for the portable kernels.
void TransposePanelsS16(const int8_t* src, size_t pstride, int panels, int k4n, int16_t* dst);

void QGemmQ4_portable(const QuantizedActivations& x, const PackedWeightsQ4& w,
                      const Epilogue& epi, float* y, int ldy);
void QGemmQ4_avx2(const QuantizedActivations& x, const PackedWeightsQ4& w, const Epilogue& epi,
                  float* y, int ldy);
void QGemmQ4_avx512vnni(const QuantizedActivations& x, const PackedWeightsQ4& w,
                        const Epilogue& epi, float* y, int ldy);
void QGemmQ4_neondot(const QuantizedActivations& x, const PackedWeightsQ4& w,
                     const Epilogue& epi, float* y, int ldy);
void QGemmQ4_neoni8mm(const QuantizedActivations& x, const PackedWeightsQ4& w,
                      const Epilogue& epi, float* y, int ldy);

}  // namespace fedge::kernels::qdetail

#endif  // FEDGE_KERNELS_QKERNELS_ISA_H_
