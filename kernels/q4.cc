// int4 weights: half conversion, block quantization, the GEMM packing, the reference and
// portable GEMMs, and the dispatcher. AVX2 and AVX-512 VNNI variants are in
// qgemm_avx2.cc and qgemm_avx512vnni.cc.
#include "kernels/q4.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/qkernels_isa.h"

namespace fedge::kernels {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Rounds `v >> s` to nearest, ties to even (s ≥ 1).
uint32_t ShiftRoundEven(uint32_t v, int s) {
  const uint32_t h = v >> s, rem = v & ((1u << s) - 1), half = 1u << (s - 1);
  return h + ((rem > half || (rem == half && (h & 1))) ? 1 : 0);
}

}  // namespace

uint16_t FloatToHalf(float f) {
  const uint32_t x = Bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7FFFFFFF;
  if (ax > 0x7F800000) {  // NaN: quiet, keep the top payload bits (as F16C does)
    return static_cast<uint16_t>(sign | 0x7E00 | ((ax >> 13) & 0x3FF));
  }
  if (ax >= 0x477FF000) return sign | 0x7C00;  // ≥ 65520 rounds to infinity
  if (ax >= 0x38800000) {                     // normal half (≥ 2^-14)
    // Rebias the exponent (127 → 15) and round off 13 mantissa bits; a carry out of the
    // mantissa correctly bumps the exponent.
    return static_cast<uint16_t>(sign | ShiftRoundEven(ax - 0x38000000u, 13));
  }
  if (ax <= 0x33000000) return sign;  // ≤ 2^-25 rounds to zero (2^-25 is a tie, to even)
  // Subnormal half: units of 2^-24. |f| = mant · 2^(e - 150), so units = mant >> (126 - e).
  const int e = static_cast<int>(ax >> 23);
  const uint32_t mant = (ax & 0x7FFFFF) | 0x800000;
  return static_cast<uint16_t>(sign | ShiftRoundEven(mant, 126 - e));
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
  if (e == 0x1F) {  // inf, or NaN made quiet with its payload kept (as F16C does)
    return FromBits(sign | 0x7F800000 | (m << 13) | (m != 0 ? 0x400000 : 0));
  }
  if (e == 0) return FromBits(sign | Bits(static_cast<float>(m) * 0x1p-24f));  // exact
  return FromBits(sign | ((e + 112) << 23) | (m << 13));
}

void QuantizeRowQ4(const float* x, int count, BlockQ4* out) {
  assert(count % kQ4Block == 0);
  for (int b = 0; b < count / kQ4Block; ++b) {
    const float* v = x + b * kQ4Block;
    float amax = 0.0f, a = 0.0f;
    for (int t = 0; t < kQ4Block; ++t) {
      if (std::fabs(v[t]) > amax) {
        amax = std::fabs(v[t]);
        a = v[t];
      }
    }
    const float d = a / -8.0f;
    uint8_t q[kQ4Block];
    for (int t = 0; t < kQ4Block; ++t) {
      if (d == 0.0f) {
        q[t] = 8;
      } else {
        // NaN (a NaN value, or ±inf / ±inf) goes to 0, without converting NaN to an
        // integer (undefined behaviour); finite values as before.
        const float r = std::nearbyint(v[t] / d) + 8.0f;
        q[t] = static_cast<uint8_t>(r >= 0.0f ? (r > 15.0f ? 15.0f : r) : 0.0f);
      }
    }
    out[b].d = FloatToHalf(d);
    for (int t = 0; t < 16; ++t) out[b].qs[t] = static_cast<uint8_t>(q[t] | (q[t + 16] << 4));
  }
}

void DequantizeRowQ4(const BlockQ4* blocks, int count, float* out) {
  assert(count % kQ4Block == 0);
  for (int b = 0; b < count / kQ4Block; ++b) {
    const float d = HalfToFloat(blocks[b].d);
    for (int t = 0; t < 16; ++t) {
      out[b * kQ4Block + t] = static_cast<float>((blocks[b].qs[t] & 0x0F) - 8) * d;
      out[b * kQ4Block + t + 16] = static_cast<float>((blocks[b].qs[t] >> 4) - 8) * d;
    }
  }
}

namespace {

inline int Q4At(const BlockQ4& b, int t) {  // q for position t (0..31) of a block
  return t < 16 ? (b.qs[t] & 0x0F) : (b.qs[t - 16] >> 4);
}

}  // namespace

void PackQ4(PackedWeightsQ4* w) {
  const int nb = w->blocks_per_row();
  const int panels = (w->n + qdetail::kQ4Panel - 1) / qdetail::kQ4Panel;
  const size_t panel_bytes = qdetail::Q4PanelBytes(w->k_padded);
  w->packed.assign(panels * panel_bytes, 0);  // padding channels: q - 8 = 0
  w->scales.assign(static_cast<size_t>(panels) * nb * 16, 0.0f);
  w->sums.assign(static_cast<size_t>(panels) * nb * 16, 0);
  for (int j = 0; j < w->n; ++j) {
    const int panel = j / 16, c = j % 16;
    int8_t* dst = w->packed.data() + panel * panel_bytes + c * 4;
    const BlockQ4* row = w->blocks.data() + static_cast<size_t>(j) * nb;
    for (int b = 0; b < nb; ++b) {
      int32_t sum = 0;
      for (int t = 0; t < kQ4Block; ++t) {
        const int k = b * kQ4Block + t, v = Q4At(row[b], t) - 8;
        dst[(k / 4) * 64 + k % 4] = static_cast<int8_t>(v);
        sum += v;
      }
      const size_t o = (static_cast<size_t>(panel) * nb + b) * 16 + c;
      w->scales[o] = HalfToFloat(row[b].d);
      w->sums[o] = -128 * sum;
    }
  }
}

void QuantizeWeightsQ4(const float* w, int n, int k, int ldw, PackedWeightsQ4* out) {
  assert(n >= 0 && k >= 0 && (n == 0 || ldw >= k));
  out->n = n;
  out->k = k;
  out->k_padded = PadK(k);
  const int nb = out->blocks_per_row();
  out->blocks.resize(static_cast<size_t>(n) * nb);
  std::vector<float> row(out->k_padded, 0.0f);
  for (int j = 0; j < n; ++j) {
    std::copy(w + static_cast<size_t>(j) * ldw, w + static_cast<size_t>(j) * ldw + k, row.begin());
    QuantizeRowQ4(row.data(), out->k_padded, out->blocks.data() + static_cast<size_t>(j) * nb);
  }
  PackQ4(out);
}

void DequantizeWeightsQ4(const PackedWeightsQ4& w, float* out, int ldo) {
  const int nb = w.blocks_per_row();
  std::vector<float> row(w.k_padded);
  for (int j = 0; j < w.n; ++j) {
    DequantizeRowQ4(w.blocks.data() + static_cast<size_t>(j) * nb, w.k_padded, row.data());
    std::copy(row.begin(), row.begin() + w.k, out + static_cast<size_t>(j) * ldo);
  }
}

void QGemmQ4_ref(const QuantizedActivations& x, const PackedWeightsQ4& w, const Epilogue& epi,
                 float* y, int ldy) {
  assert(x.k == w.k && x.k_padded == w.k_padded);
  const int nb = w.blocks_per_row();
  for (int i = 0; i < x.m; ++i) {
    const int8_t* xr = x.row(i);
    for (int j = 0; j < w.n; ++j) {
      float acc = 0.0f;
      for (int b = 0; b < nb; ++b) {
        const BlockQ4& blk = w.blocks[static_cast<size_t>(j) * nb + b];
        int32_t isum = 0;
        for (int t = 0; t < kQ4Block; ++t) isum += xr[b * kQ4Block + t] * (Q4At(blk, t) - 8);
        acc = std::fma(static_cast<float>(isum), HalfToFloat(blk.d), acc);
      }
      float v = std::fma(acc, x.scale, epi.bias != nullptr ? epi.bias[j] : 0.0f);
      if (epi.relu) v = v > 0.0f ? v : 0.0f;
      y[static_cast<size_t>(i) * ldy + j] = v;
    }
  }
}

namespace qdetail {

// Portable: the s8 weights transposed to s16 (see QGemmS8_portable), one row × one panel, per
// block an int32 sum per channel, then the block's fma, in the order of q4.h.
void QGemmQ4_portable(const QuantizedActivations& x, const PackedWeightsQ4& w,
                      const Epilogue& epi, float* y, int ldy) {
  const int m = x.m, n = w.n, k4n = (x.k + 3) / 4, kk = 4 * k4n, nb = w.blocks_per_row();
  const int panels = (n + kQ4Panel - 1) / kQ4Panel;
  static thread_local Scratch scratch;
  int16_t* wt = static_cast<int16_t*>(
      scratch.Get(sizeof(int16_t) * static_cast<size_t>(panels) * kk * 16));
  TransposePanelsS16(w.packed.data(), Q4PanelBytes(w.k_padded), panels, k4n, wt);
  for (int p = 0; p < panels; ++p) {
    const int16_t* wp = wt + static_cast<size_t>(p) * kk * 16;
    const float* sp = w.scales.data() + static_cast<size_t>(p) * nb * 16;
    const int j0 = p * 16, nc = std::min(16, n - j0);
    for (int i = 0; i < m; ++i) {
      const int8_t* xr = x.row(i);
      float facc[16] = {};
      for (int k0 = 0; k0 < kk; k0 += kQ4Block) {
        int32_t a[16] = {};
        for (int k = k0; k < std::min(kk, k0 + kQ4Block); ++k) {
          const int32_t xv = xr[k];
          for (int c = 0; c < 16; ++c) a[c] += xv * wp[k * 16 + c];
        }
        const float* d = sp + (k0 / kQ4Block) * 16;
        for (int c = 0; c < 16; ++c) facc[c] = std::fma(static_cast<float>(a[c]), d[c], facc[c]);
      }
      float* yr = y + static_cast<size_t>(i) * ldy + j0;
      for (int c = 0; c < nc; ++c) {
        float v = std::fma(facc[c], x.scale, epi.bias != nullptr ? epi.bias[j0 + c] : 0.0f);
        if (epi.relu) v = v > 0.0f ? v : 0.0f;
        yr[c] = v;
      }
    }
  }
}

}  // namespace qdetail

void QGemmQ4(const QuantizedActivations& x, const PackedWeightsQ4& w, const Epilogue& epi,
             float* y, int ldy, Isa isa) {
  assert(x.k == w.k);
  switch (UsableIsa(isa)) {
    case Isa::kRef:
      return QGemmQ4_ref(x, w, epi, y, ldy);
#if FEDGE_KERNELS_X86
    case Isa::kAvx2:
      return qdetail::QGemmQ4_avx2(x, w, epi, y, ldy);
    case Isa::kAvx512Vnni:
      return qdetail::QGemmQ4_avx512vnni(x, w, epi, y, ldy);
#endif
#if FEDGE_KERNELS_AARCH64
    case Isa::kNeonDot:
      return qdetail::QGemmQ4_neondot(x, w, epi, y, ldy);
    case Isa::kNeonI8mm:
      return qdetail::QGemmQ4_neoni8mm(x, w, epi, y, ldy);
#endif
    default:  // kPortable
      return qdetail::QGemmQ4_portable(x, w, epi, y, ldy);
  }
}

}  // namespace fedge::kernels
