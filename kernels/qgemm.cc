// int8 GEMM: the scalar reference, the portable variant and the dispatcher. The AVX2 and
// AVX-512 VNNI variants are in qgemm_avx2.cc and qgemm_avx512vnni.cc, the aarch64 dotprod
// variants in qgemm_neondot.cc and qgemm_neoni8mm.cc.
#include "kernels/qgemm.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels {
namespace {

// The float epilogue every variant reproduces: one fma, then relu as (y > 0 ? y : 0), which is
// what vmaxps(y, 0) computes (it maps -0 and NaN to +0).
inline float EpilogueValue(int32_t acc, float scale, float bias, bool relu) {
  const float y = std::fma(static_cast<float>(acc), scale, bias);
  return relu ? (y > 0.0f ? y : 0.0f) : y;
}

}  // namespace

void QGemmS8Int32_ref(const QuantizedActivations& x, const PackedWeightsS8& w, int32_t* acc,
                      int ldacc) {
  assert(x.k == w.k);
  for (int i = 0; i < x.m; ++i) {
    const int8_t* xr = x.row(i);
    for (int j = 0; j < w.n; ++j) {
      int32_t s = 0;
      for (int kk = 0; kk < x.k; ++kk) s += static_cast<int32_t>(xr[kk]) * w.at(j, kk);
      acc[static_cast<size_t>(i) * ldacc + j] = s;
    }
  }
}

void QGemmS8_ref(const QuantizedActivations& x, const PackedWeightsS8& w, const Epilogue& epi,
                 float* y, int ldy) {
  assert(x.k == w.k);
  for (int i = 0; i < x.m; ++i) {
    const int8_t* xr = x.row(i);
    for (int j = 0; j < w.n; ++j) {
      int32_t s = 0;
      for (int kk = 0; kk < x.k; ++kk) s += static_cast<int32_t>(xr[kk]) * w.at(j, kk);
      y[static_cast<size_t>(i) * ldy + j] = EpilogueValue(
          s, x.scale * w.scales[j], epi.bias != nullptr ? epi.bias[j] : 0.0f, epi.relu);
    }
  }
}

namespace qdetail {

void TransposePanelsS16(const int8_t* src, size_t pstride, int panels, int k4n, int16_t* dst) {
  for (int p = 0; p < panels; ++p) {
    const int8_t* s = src + p * pstride;
    int16_t* d = dst + static_cast<size_t>(p) * k4n * 64;
    for (int k4 = 0; k4 < k4n; ++k4) {
      for (int c = 0; c < 16; ++c) {
        for (int t = 0; t < 4; ++t) d[(4 * k4 + t) * 16 + c] = s[k4 * 64 + c * 4 + t];
      }
    }
  }
}

// Portable: the weights are first transposed to s16 [panel][k][16 channels] (one O(N·K) pass
// per call) so that the inner loop is a broadcast-multiply-add over 16 contiguous channels,
// which compilers vectorize for any SIMD width; 2 rows × one panel of int32 accumulators.
void QGemmS8_portable(const QuantizedActivations& x, const PackedWeightsS8& w,
                      const Epilogue* epi, float* y, int32_t* acc, int ld) {
  constexpr int kMr = 2, kP = PackedWeightsS8::kPanel;
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4, kk = 4 * k4n;
  const int panels = w.n_padded / kP;
  static thread_local Scratch scratch;
  int16_t* wt = static_cast<int16_t*>(
      scratch.Get(sizeof(int16_t) * static_cast<size_t>(panels) * kk * kP + 64));
  TransposePanelsS16(w.packed.data(), static_cast<size_t>(w.k_padded) * kP, panels, k4n, wt);
  for (int i0 = 0; i0 < m; i0 += kMr) {
    const int mr = std::min(kMr, m - i0);
    const int8_t* x0 = x.row(i0);
    const int8_t* x1 = x.row(i0 + mr - 1);  // row i0 again when mr == 1
    for (int p = 0; p < panels; ++p) {
      const int16_t* wp = wt + static_cast<size_t>(p) * kk * kP;
      int32_t a[kMr][kP] = {};
      for (int k = 0; k < kk; ++k) {
        const int16_t* wk = wp + k * kP;
        const int32_t xa = x0[k], xb = x1[k];
        for (int c = 0; c < kP; ++c) {
          a[0][c] += xa * wk[c];
          a[1][c] += xb * wk[c];
        }
      }
      const int j0 = p * kP, nc = std::min(kP, n - j0);
      for (int r = 0; r < mr; ++r) {
        const size_t o = static_cast<size_t>(i0 + r) * ld + j0;
        if (acc != nullptr) {
          std::memcpy(acc + o, a[r], sizeof(int32_t) * nc);
        } else {
          for (int c = 0; c < nc; ++c) {
            const int j = j0 + c;
            y[o + c] = EpilogueValue(a[r][c], x.scale * w.scales[j],
                                     epi->bias != nullptr ? epi->bias[j] : 0.0f, epi->relu);
          }
        }
      }
    }
  }
}

}  // namespace qdetail

void QGemmS8Int32(const QuantizedActivations& x, const PackedWeightsS8& w, int32_t* acc,
                  int ldacc, Isa isa) {
  assert(x.k == w.k);
  switch (UsableIsa(isa)) {
    case Isa::kRef:
      return QGemmS8Int32_ref(x, w, acc, ldacc);
#if FEDGE_KERNELS_X86
    case Isa::kAvx2:
      return qdetail::QGemmS8_avx2(x, w, nullptr, nullptr, acc, ldacc);
    case Isa::kAvx512Vnni:
      return qdetail::QGemmS8_avx512vnni(x, w, nullptr, nullptr, acc, ldacc);
#endif
#if FEDGE_KERNELS_AARCH64
    case Isa::kNeonDot:
      return qdetail::QGemmS8_neondot(x, w, nullptr, nullptr, acc, ldacc);
    case Isa::kNeonI8mm:
      return qdetail::QGemmS8_neoni8mm(x, w, nullptr, nullptr, acc, ldacc);
#endif
    default:  // kPortable (the only variant above it on a CPU without x86 variants)
      return qdetail::QGemmS8_portable(x, w, nullptr, nullptr, acc, ldacc);
  }
}

void QGemmS8(const QuantizedActivations& x, const PackedWeightsS8& w, const Epilogue& epi,
             float* y, int ldy, Isa isa) {
  assert(x.k == w.k);
  switch (UsableIsa(isa)) {
    case Isa::kRef:
      return QGemmS8_ref(x, w, epi, y, ldy);
#if FEDGE_KERNELS_X86
    case Isa::kAvx2:
      return qdetail::QGemmS8_avx2(x, w, &epi, y, nullptr, ldy);
    case Isa::kAvx512Vnni:
      return qdetail::QGemmS8_avx512vnni(x, w, &epi, y, nullptr, ldy);
#endif
#if FEDGE_KERNELS_AARCH64
    case Isa::kNeonDot:
      return qdetail::QGemmS8_neondot(x, w, &epi, y, nullptr, ldy);
    case Isa::kNeonI8mm:
      return qdetail::QGemmS8_neoni8mm(x, w, &epi, y, nullptr, ldy);
#endif
    default:  // kPortable
      return qdetail::QGemmS8_portable(x, w, &epi, y, nullptr, ldy);
  }
}

}  // namespace fedge::kernels
