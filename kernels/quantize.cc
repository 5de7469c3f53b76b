#include "kernels/quantize.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/qkernels_isa.h"

#define FEDGE_QPACK_VARIANT(name) name##_portable
#include "kernels/quantize_pack.inc"
#undef FEDGE_QPACK_VARIANT

namespace fedge::kernels {
namespace qdetail {

Scratch::~Scratch() { std::free(p_); }

void* Scratch::Get(size_t bytes) {
  if (bytes > cap_) {
    std::free(p_);
    cap_ = (bytes + 4095) / 4096 * 4096;
    p_ = std::aligned_alloc(64, cap_);
    if (p_ == nullptr) std::abort();
  }
  return p_;
}

}  // namespace qdetail

namespace {

using qdetail::ClampQ8;

float MaxAbsScalar(const float* x, int m, int k, int ldx) {
  float mx = 0.0f;
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    for (int j = 0; j < k; ++j) {
      const float a = std::fabs(r[j]);
      mx = a > mx ? a : mx;
    }
  }
  return mx;
}

void QuantizeRowsScalar(const float* x, int m, int k, int ldx, float scale, int8_t* q, int ldq,
                        int kpad) {
  for (int i = 0; i < m; ++i) {
    const float* r = x + static_cast<size_t>(i) * ldx;
    int8_t* o = q + static_cast<size_t>(i) * ldq;
    for (int j = 0; j < k; ++j) {
      o[j] = static_cast<int8_t>(std::nearbyint(ClampQ8(r[j] / scale)));
    }
    if (kpad > k) std::memset(o + k, 0, kpad - k);
  }
}

float MaxAbs(const float* x, int m, int k, int ldx, Isa isa) {
  switch (UsableIsa(isa)) {
#if FEDGE_KERNELS_X86
    case Isa::kAvx512Vnni:
      return qdetail::MaxAbs_avx512vnni(x, m, k, ldx);
    case Isa::kAvx2:
      return qdetail::MaxAbs_avx2(x, m, k, ldx);
#endif
    default:
      return MaxAbsScalar(x, m, k, ldx);
  }
}

void QuantizeRows(const float* x, int m, int k, int ldx, float scale, int8_t* q, int ldq,
                  int kpad, Isa isa) {
  switch (UsableIsa(isa)) {
#if FEDGE_KERNELS_X86
    case Isa::kAvx512Vnni:
      return qdetail::QuantizeRows_avx512vnni(x, m, k, ldx, scale, q, ldq, kpad);
    case Isa::kAvx2:
      return qdetail::QuantizeRows_avx2(x, m, k, ldx, scale, q, ldq, kpad);
#endif
    default:
      return QuantizeRowsScalar(x, m, k, ldx, scale, q, ldq, kpad);
  }
}

float ScaleFor(float max_abs) { return max_abs > 0.0f ? max_abs / 127.0f : 1.0f; }

int32_t PackRowS8(const int8_t* q, int k, int kp, float scale, int8_t* dst, float* deq,
                  Isa isa) {
  switch (UsableIsa(isa)) {
#if FEDGE_KERNELS_X86
    case Isa::kAvx512Vnni:
      return qdetail::PackRowS8_avx512vnni(q, k, kp, scale, dst, deq);
    case Isa::kAvx2:
      return qdetail::PackRowS8_avx2(q, k, kp, scale, dst, deq);
#endif
    default:
      return qdetail::PackRowS8_portable(q, k, kp, scale, dst, deq);
  }
}

void DequantizeRow(const int8_t* q, int k, float scale, float* out, Isa isa) {
  switch (UsableIsa(isa)) {
#if FEDGE_KERNELS_X86
    case Isa::kAvx512Vnni:
      return qdetail::DequantizeRow_avx512vnni(q, k, scale, out);
    case Isa::kAvx2:
      return qdetail::DequantizeRow_avx2(q, k, scale, out);
#endif
    default:
      return qdetail::DequantizeRow_portable(q, k, scale, out);
  }
}

}  // namespace

void QuantizeActivations(const float* x, int m, int k, int ldx, QuantizedActivations* out,
                         Isa isa) {
  assert(m >= 0 && k >= 0 && (m == 0 || ldx >= k));
  out->m = m;
  out->k = k;
  out->k_padded = PadK(k);
  const size_t size = static_cast<size_t>(m) * out->k_padded;
  if (out->data.size() != size) out->data.resize(size);
  out->scale = ScaleFor(MaxAbs(x, m, k, ldx, isa));
  QuantizeRows(x, m, k, ldx, out->scale, out->data.data(), out->k_padded, out->k_padded, isa);
}

void DequantizeActivations(const QuantizedActivations& q, float* out, int ldy) {
  const Isa isa = BestIsa();
  for (int i = 0; i < q.m; ++i) {
    DequantizeRow(q.row(i), q.k, q.scale, out + static_cast<size_t>(i) * ldy, isa);
  }
}

void QuantizeWeightsS8(const float* w, int n, int k, int ldw, PackedWeightsS8* out,
                       float* dequantized, int ldd) {
  assert(n >= 0 && k >= 0 && (n == 0 || ldw >= k));
  constexpr int kPanel = PackedWeightsS8::kPanel;
  out->n = n;
  out->k = k;
  out->k_padded = PadK(k);
  out->n_padded = (n + kPanel - 1) / kPanel * kPanel;
  const int kp = out->k_padded;
  const size_t bytes = static_cast<size_t>(out->n_padded) * kp;
  // Every byte of the real channels is written below; only the padding channels of the
  // last panel need zeros (no full clear: this runs every training step in QAT).
  out->packed.resize(bytes);
  if (out->n_padded > n) {
    std::memset(out->packed.data() + static_cast<size_t>(n / kPanel) * kp * kPanel, 0,
                static_cast<size_t>(kp) * kPanel);
  }
  out->scales.assign(out->n_padded, 1.0f);
  out->row_sums.assign(out->n_padded, 0);
  const Isa isa = BestIsa();
  static thread_local qdetail::Scratch scratch;
  int8_t* row = static_cast<int8_t*>(scratch.Get(static_cast<size_t>(kp)));
  for (int j = 0; j < n; ++j) {
    const float* src = w + static_cast<size_t>(j) * ldw;
    const float scale = ScaleFor(MaxAbs(src, 1, k, k, isa));
    QuantizeRows(src, 1, k, k, scale, row, kp, kp, isa);
    out->scales[j] = scale;
    int8_t* dst = out->packed.data() + static_cast<size_t>(j / kPanel) * kp * kPanel +
                  (j % kPanel) * 4;
    out->row_sums[j] =
        PackRowS8(row, k, kp, scale, dst,
                  dequantized != nullptr ? dequantized + static_cast<size_t>(j) * ldd : nullptr,
                  isa);
  }
}

void PackTransposedActivationsS8(const QuantizedActivations& a, float scale,
                                 PackedWeightsS8* out) {
  constexpr int kPanel = PackedWeightsS8::kPanel;
  out->n = a.k;
  out->k = a.m;
  out->k_padded = PadK(a.m);
  out->n_padded = (a.k + kPanel - 1) / kPanel * kPanel;
  const int kp = out->k_padded;
  out->packed.resize(static_cast<size_t>(out->n_padded) * kp);
  out->scales.assign(out->n_padded, scale);
  out->row_sums.assign(out->n_padded, 0);
  int32_t* sums = out->row_sums.data();
  // One 64-byte line per (panel of 16 channels, group of 4 rows): channel c's 4 bytes are
  // rows 4·g .. 4·g + 3 of a's column 16·panel + c.
  for (int p = 0; p < out->n_padded / kPanel; ++p) {
    int8_t* panel = out->packed.data() + static_cast<size_t>(p) * kp * kPanel;
    const int c_end = std::min(kPanel, a.k - p * kPanel);
    for (int g = 0; g < kp / 4; ++g) {
      int8_t* line = panel + static_cast<size_t>(g) * kPanel * 4;
      for (int t = 0; t < 4; ++t) {
        const int b = 4 * g + t;
        if (b >= a.m) {
          for (int c = 0; c < kPanel; ++c) line[c * 4 + t] = 0;
          continue;
        }
        const int8_t* r = a.row(b) + p * kPanel;
        for (int c = 0; c < kPanel; ++c) line[c * 4 + t] = c < c_end ? r[c] : 0;
      }
    }
  }
  for (int b = 0; b < a.m; ++b) {
    const int8_t* r = a.row(b);
    for (int i = 0; i < a.k; ++i) sums[i] += r[i];
  }
}

void DequantizeWeightsS8(const PackedWeightsS8& w, float* out, int ldo) {
  constexpr int kPanel = PackedWeightsS8::kPanel;
  for (int j = 0; j < w.n; ++j) {
    float* __restrict o = out + static_cast<size_t>(j) * ldo;
    const float s = w.scales[j];
    // Walk the row's 4-byte groups in the packed layout (64 bytes apart).
    const int8_t* src = w.packed.data() + static_cast<size_t>(j / kPanel) * w.k_padded * kPanel +
                        (j % kPanel) * 4;
    const int full = w.k / 4;
    for (int k4 = 0; k4 < full; ++k4) {
      const int8_t* g = src + static_cast<size_t>(k4) * kPanel * 4;
      for (int b = 0; b < 4; ++b) o[4 * k4 + b] = static_cast<float>(g[b]) * s;
    }
    for (int kk = 4 * full; kk < w.k; ++kk) o[kk] = static_cast<float>(w.at(j, kk)) * s;
  }
}

}  // namespace fedge::kernels
