#include "model/transformer_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/exp.h"
#include "kernels/sgemm.h"

namespace fedge::model::transformer_ops {

using kernels::Sgemm;
using kernels::Trans;

// y [rows × out] = x [rows × in] · Wᵀ (+ beta·y), W [out × in].
void ProjectForward(const float* x, int rows, int in, const Parameter& w, int out, float* y,
                    float beta) {
  Sgemm(Trans::kNo, Trans::kYes, rows, out, in, 1.0f, x, in, w.value.data(), in, beta, y,
        out);
}

// dx [rows × in] (+)= dy [rows × out] · W; with `weight_grad`, dW += dyᵀ · x.
void ProjectBackward(const float* x, const float* dy, int rows, int in, Parameter& w, int out,
                     float* dx, float beta, bool weight_grad) {
  if (weight_grad) {
    Sgemm(Trans::kYes, Trans::kNo, out, in, rows, 1.0f, dy, out, x, in, 1.0f, w.grad.data(),
          in);
  }
  if (dx != nullptr) {
    Sgemm(Trans::kNo, Trans::kNo, rows, in, out, 1.0f, dy, out, w.value.data(), in, beta, dx,
          in);
  }
}

// y = x·g/√(mean(x²) + ε) per row; inv[r] = 1/√(mean(x²) + ε).
void RmsNormForward(const float* x, int rows, int d, const float* g, float eps, float* y,
                    float* inv) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * d;
    float* yr = y + static_cast<size_t>(r) * d;
    float ss = 0.0f;
    for (int j = 0; j < d; ++j) ss += xr[j] * xr[j];
    const float s = 1.0f / std::sqrt(ss / d + eps);
    if (inv != nullptr) inv[r] = s;
    for (int j = 0; j < d; ++j) yr[j] = xr[j] * s * g[j];
  }
}

// With x̂ = x·inv and u = g ⊙ dy: dx += inv·(u − x̂·mean(u ⊙ x̂)); dg += Σ_rows dy ⊙ x̂ (when
// dg is not null).
void RmsNormBackward(const float* x, const float* inv, int rows, int d, const float* g,
                     const float* dy, float* dx, float* dg) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * d;
    const float* dyr = dy + static_cast<size_t>(r) * d;
    float* dxr = dx + static_cast<size_t>(r) * d;
    const float s = inv[r];
    float dot = 0.0f;
    for (int j = 0; j < d; ++j) {
      dot += g[j] * dyr[j] * xr[j] * s;
    }
    const float c = dot / d;
    for (int j = 0; j < d; ++j) dxr[j] += s * (g[j] * dyr[j] - xr[j] * s * c);
    if (dg == nullptr) continue;
    for (int j = 0; j < d; ++j) dg[j] += dyr[j] * xr[j] * s;
  }
}

// Rotates each head's pairs (i, i + dₕ/2) of rows [rows × d] by t·θᵢ (or by −t·θᵢ with
// `inverse`, the transpose, for gradients); row r is at position pos0 + r mod len.
void ApplyRope(float* x, int rows, int len, int pos0, int d, int head_dim, const float* cos_t,
               const float* sin_t, bool inverse) {
  const int half = head_dim / 2;
  for (int r = 0; r < rows; ++r) {
    const int t = pos0 + r % len;
    const float* c = cos_t + static_cast<size_t>(t) * half;
    const float* s = sin_t + static_cast<size_t>(t) * half;
    float* xr = x + static_cast<size_t>(r) * d;
    for (int h0 = 0; h0 < d; h0 += head_dim) {
      float* a = xr + h0;
      float* b = a + half;
      for (int i = 0; i < half; ++i) {
        const float sn = inverse ? -s[i] : s[i];
        const float x1 = a[i], x2 = b[i];
        a[i] = x1 * c[i] - x2 * sn;
        b[i] = x1 * sn + x2 * c[i];
      }
    }
  }
}

// Softmax of row p[0..n) in place over its first `valid` entries; the rest become 0.
// `scratch` holds at least `valid` floats.
void CausalSoftmaxRow(float* p, int n, int valid, float* scratch) {
  const float mx = *std::max_element(p, p + valid);
  const float sum = kernels::ExpShiftSum(p, valid, mx, scratch);
  std::copy(scratch, scratch + valid, p);
  const float inv = 1.0f / sum;
  for (int j = 0; j < valid; ++j) p[j] *= inv;
  std::fill(p + valid, p + n, 0.0f);
}

// Σ over rows of −log softmax(logits)[target] (accumulated in double); with `grad`, also
// grad = (softmax − onehot(target))·scale, which may overwrite the logits in place. In float
// with one vectorized exp per logit (kernels/exp.h): the vocabulary's rows are the largest
// elementwise work of a step.
double CrossEntropyRows(const float* logits, const int32_t* targets, int rows, int classes,
                        float scale, float* grad) {
  double total = 0.0;
  std::vector<float> e(classes);
  for (int r = 0; r < rows; ++r) {
    const float* x = logits + static_cast<size_t>(r) * classes;
    const float mx = *std::max_element(x, x + classes);
    const float target_logit = x[targets[r]];
    const float sum = kernels::ExpShiftSum(x, classes, mx, e.data());
    total += std::log(static_cast<double>(sum)) + mx - target_logit;
    if (grad != nullptr) {
      float* g = grad + static_cast<size_t>(r) * classes;
      const float k = scale / sum;
      for (int j = 0; j < classes; ++j) g[j] = e[j] * k;
      g[targets[r]] -= scale;
    }
  }
  return total;
}

}  // namespace fedge::model::transformer_ops
