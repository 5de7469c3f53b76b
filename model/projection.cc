#include "model/projection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/sgemm.h"

namespace fedge::model {

using kernels::Sgemm;
using kernels::Trans;

absl::string_view BaseFormatName(BaseFormat format) {
  return format == BaseFormat::kInt4 ? "int4" : "fp32";
}

LoraAdapter::LoraAdapter(const std::string& name, int in, int out, int rank, float alpha,
                         base::Rng& rng, bool train_a)
    : in_(in),
      out_(out),
      rank_(rank),
      scale_(alpha / static_cast<float>(rank)),
      a_(MakeParameter(name + ".lora_a", {rank, in})),
      b_(MakeParameter(name + ".lora_b", {out, rank})) {
  FEDGE_CHECK(rank > 0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  for (float& v : a_.value) v = static_cast<float>((2.0 * rng.Uniform() - 1.0) * bound);
  if (!train_a) {
    a_.trainable = false;
    std::vector<float>().swap(a_.grad);
  }
}

void LoraAdapter::Forward(const float* x, int rows, float* y, ProjectionScratch& s) const {
  s.xa.resize(static_cast<size_t>(rows) * rank_);
  Sgemm(Trans::kNo, Trans::kYes, rows, rank_, in_, 1.0f, x, in_, a_.value.data(), in_, 0.0f,
        s.xa.data(), rank_);
  Sgemm(Trans::kNo, Trans::kYes, rows, out_, rank_, scale_, s.xa.data(), rank_, b_.value.data(),
        rank_, 1.0f, y, out_);
}

void LoraAdapter::Backward(const float* x, const float* dy, int rows, float* dx,
                           ProjectionScratch& s) {
  // xa = x·Aᵀ (recomputed: r columns); dB += s·dyᵀ·xa; dxa = s·dy·B; dA += dxaᵀ·x;
  // dx += dxa·A.
  s.xa.resize(static_cast<size_t>(rows) * rank_);
  Sgemm(Trans::kNo, Trans::kYes, rows, rank_, in_, 1.0f, x, in_, a_.value.data(), in_, 0.0f,
        s.xa.data(), rank_);
  Sgemm(Trans::kYes, Trans::kNo, out_, rank_, rows, scale_, dy, out_, s.xa.data(), rank_, 1.0f,
        b_.grad.data(), rank_);
  s.dxa.resize(static_cast<size_t>(rows) * rank_);
  Sgemm(Trans::kNo, Trans::kNo, rows, rank_, out_, scale_, dy, out_, b_.value.data(), rank_,
        0.0f, s.dxa.data(), rank_);
  if (a_.trainable) {
    Sgemm(Trans::kYes, Trans::kNo, rank_, in_, rows, 1.0f, s.dxa.data(), rank_, x, in_, 1.0f,
          a_.grad.data(), in_);
  }
  if (dx != nullptr) {
    Sgemm(Trans::kNo, Trans::kNo, rows, in_, rank_, 1.0f, s.dxa.data(), rank_, a_.value.data(),
          in_, 1.0f, dx, in_);
  }
}

Projection::Projection(const std::string& name, int in, int out)
    : name_(name), in_(in), out_(out), weight_(MakeParameter(name + ".weight", {out, in})) {}

void Projection::Freeze() {
  frozen_ = true;
  weight_.trainable = false;
  std::vector<float>().swap(weight_.grad);
}

void Projection::AddLora(int rank, float alpha, base::Rng& rng, bool train_a) {
  FEDGE_CHECK(rank > 0 && !lora_.enabled());
  Freeze();
  lora_ = LoraAdapter(name_, in_, out_, rank, alpha, rng, train_a);
}

void Projection::SetBaseFormat(BaseFormat format) {
  FEDGE_CHECK(format == BaseFormat::kFp32 || frozen_);
  format_ = format;
  if (format == BaseFormat::kInt4) {
    kernels::QuantizeWeightsQ4(weight_.value.data(), out_, in_, in_, &w4_);
  } else {
    w4_ = kernels::PackedWeightsQ4();
  }
}

void Projection::ReleaseFp32Weight() {
  FEDGE_CHECK(format_ == BaseFormat::kInt4);
  std::vector<float>().swap(weight_.value);
}

void Projection::LoadInt4Weight(const float* w) {
  FEDGE_CHECK(frozen_);
  format_ = BaseFormat::kInt4;
  kernels::QuantizeWeightsQ4(w, out_, in_, in_, &w4_);
  std::vector<float>().swap(weight_.value);
}

absl::Status Projection::LoadInt4Blocks(absl::string_view bytes) {
  FEDGE_CHECK(frozen_);
  const int wire = (in_ + kernels::kQ4Block - 1) / kernels::kQ4Block;  // blocks a row sent
  const size_t expected = static_cast<size_t>(out_) * wire * sizeof(kernels::BlockQ4);
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("Model: ", name_, ".weight has ",
                                                   bytes.size(), " bytes of int4 blocks, its [",
                                                   out_, " × ", in_, "] takes ", expected));
  }
  kernels::PackedWeightsQ4 w;
  w.n = out_;
  w.k = in_;
  w.k_padded = kernels::PadK(in_);
  const int stored = w.blocks_per_row();
  // The padding past the wire's blocks is what quantizing zeros gives: scale 0, q = 8.
  kernels::BlockQ4 zero;
  zero.d = 0;
  std::memset(zero.qs, 0x88, sizeof(zero.qs));
  w.blocks.assign(static_cast<size_t>(out_) * stored, zero);
  for (int j = 0; j < out_; ++j) {
    kernels::BlockQ4* row = w.blocks.data() + static_cast<size_t>(j) * stored;
    std::memcpy(row, bytes.data() + static_cast<size_t>(j) * wire * sizeof(kernels::BlockQ4),
                static_cast<size_t>(wire) * sizeof(kernels::BlockQ4));
    for (int b = 0; b < wire; ++b) {
      if (!std::isfinite(kernels::HalfToFloat(row[b].d))) {
        return absl::InvalidArgumentError(
            absl::StrCat("Model: ", name_, ".weight has an int4 block with a non-finite scale"));
      }
    }
  }
  kernels::PackQ4(&w);
  format_ = BaseFormat::kInt4;
  w4_ = std::move(w);
  std::vector<float>().swap(weight_.value);
  return absl::OkStatus();
}

void Projection::CopyBaseFormFrom(const Projection& other) {
  FEDGE_CHECK(in_ == other.in_ && out_ == other.out_ && frozen_);
  format_ = other.format_;
  w4_ = other.w4_;
}

void Projection::Int4Product(const float* x, int rows, int k, const kernels::PackedWeightsQ4& w,
                             float* y, bool accumulate, ProjectionScratch& s) {
  const int n = w.n;
  s.scaled.resize(static_cast<size_t>(rows) * k);
  s.row_scale.resize(rows);
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * k;
    float mx = 0.0f;
    for (int j = 0; j < k; ++j) mx = std::max(mx, std::fabs(xr[j]));
    const float c = mx > 0.0f ? 1.0f / mx : 1.0f;
    s.row_scale[r] = mx > 0.0f ? mx : 1.0f;
    float* sr = s.scaled.data() + static_cast<size_t>(r) * k;
    for (int j = 0; j < k; ++j) sr[j] = xr[j] * c;
  }
  kernels::QuantizeActivations(s.scaled.data(), rows, k, k, &s.q);
  s.product.resize(static_cast<size_t>(rows) * n);
  kernels::QGemmQ4(s.q, w, kernels::Epilogue{}, s.product.data(), n);
  for (int r = 0; r < rows; ++r) {
    const float m = s.row_scale[r];
    const float* pr = s.product.data() + static_cast<size_t>(r) * n;
    float* yr = y + static_cast<size_t>(r) * n;
    if (accumulate) {
      for (int j = 0; j < n; ++j) yr[j] += pr[j] * m;
    } else {
      for (int j = 0; j < n; ++j) yr[j] = pr[j] * m;
    }
  }
}

void Projection::Forward(const float* x, int rows, float* y, bool accumulate,
                         ProjectionScratch& s) const {
  if (format_ == BaseFormat::kInt4) {
    Int4Product(x, rows, in_, w4_, y, accumulate, s);
  } else {
    Sgemm(Trans::kNo, Trans::kYes, rows, out_, in_, 1.0f, x, in_, weight_.value.data(), in_,
          accumulate ? 1.0f : 0.0f, y, out_);
  }
  if (lora_.enabled()) lora_.Forward(x, rows, y, s);
}

void Projection::Backward(const float* x, const float* dy, int rows, float* dx,
                          bool accumulate_dx, ProjectionScratch& s) {
  if (!frozen_) {
    Sgemm(Trans::kYes, Trans::kNo, out_, in_, rows, 1.0f, dy, out_, x, in_, 1.0f,
          weight_.grad.data(), in_);
  }
  if (dx != nullptr) {
    if (format_ == BaseFormat::kInt4) {
      // dx = dy·Ŵ over panels of Ŵ's rows (the output channels).
      constexpr int kPanel = 64;
      const int kp = w4_.k_padded, bpr = w4_.blocks_per_row();
      s.panel.resize(static_cast<size_t>(kPanel) * kp);
      for (int o0 = 0; o0 < out_; o0 += kPanel) {
        const int n = std::min(kPanel, out_ - o0);
        for (int o = 0; o < n; ++o) {
          kernels::DequantizeRowQ4(w4_.blocks.data() + static_cast<size_t>(o0 + o) * bpr, kp,
                                   s.panel.data() + static_cast<size_t>(o) * kp);
        }
        Sgemm(Trans::kNo, Trans::kNo, rows, in_, n, 1.0f, dy + o0, out_, s.panel.data(), kp,
              o0 == 0 && !accumulate_dx ? 0.0f : 1.0f, dx, in_);
      }
    } else {
      Sgemm(Trans::kNo, Trans::kNo, rows, in_, out_, 1.0f, dy, out_, weight_.value.data(), in_,
            accumulate_dx ? 1.0f : 0.0f, dx, in_);
    }
  }
  if (lora_.enabled()) lora_.Backward(x, dy, rows, dx, s);
}

}  // namespace fedge::model
