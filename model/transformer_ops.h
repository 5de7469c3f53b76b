// The decoder-only transformer's layer arithmetic (model/transformer.h), shared by the
// training model (transformer.cc) and the KV-cached decoder (transformer_decoder.cc):
// projections through a Parameter, RMSNorm, rotary positions, the causal softmax and the
// next-token cross-entropy. Row-major [rows × width] float buffers; no allocation except
// CrossEntropyRows' one row of scratch. Internal to model/.
#ifndef FEDGE_MODEL_TRANSFORMER_OPS_H_
#define FEDGE_MODEL_TRANSFORMER_OPS_H_

#include <cstdint>

#include "model/layer.h"

namespace fedge::model::transformer_ops {

// y [rows × out] = x [rows × in] · Wᵀ (+ beta·y), W [out × in].
void ProjectForward(const float* x, int rows, int in, const Parameter& w, int out, float* y,
                    float beta = 0.0f);

// dx [rows × in] (+)= dy [rows × out] · W; with `weight_grad`, dW += dyᵀ · x.
void ProjectBackward(const float* x, const float* dy, int rows, int in, Parameter& w, int out,
                     float* dx, float beta, bool weight_grad);

// y = x·g/√(mean(x²) + ε) per row; inv[r] = 1/√(mean(x²) + ε).
void RmsNormForward(const float* x, int rows, int d, const float* g, float eps, float* y,
                    float* inv);

// With x̂ = x·inv and u = g ⊙ dy: dx += inv·(u − x̂·mean(u ⊙ x̂)); dg += Σ_rows dy ⊙ x̂ (when
// dg is not null).
void RmsNormBackward(const float* x, const float* inv, int rows, int d, const float* g,
                     const float* dy, float* dx, float* dg);

// Rotates each head's pairs (i, i + dₕ/2) of rows [rows × d] by t·θᵢ (or by −t·θᵢ with
// `inverse`, the transpose, for gradients); row r is at position pos0 + r mod len.
void ApplyRope(float* x, int rows, int len, int pos0, int d, int head_dim, const float* cos_t,
               const float* sin_t, bool inverse);

// Softmax of row p[0..n) in place over its first `valid` entries; the rest become 0.
// `scratch` holds at least `valid` floats.
void CausalSoftmaxRow(float* p, int n, int valid, float* scratch);

// Σ over rows of −log softmax(logits)[target] (accumulated in double); with `grad`, also
// grad = (softmax − onehot(target))·scale, which may overwrite the logits in place. In float
// with one vectorized exp per logit (kernels/exp.h): the vocabulary's rows are the largest
// elementwise work of a step.
double CrossEntropyRows(const float* logits, const int32_t* targets, int rows, int classes,
                        float scale, float* grad);

}  // namespace fedge::model::transformer_ops

#endif  // FEDGE_MODEL_TRANSFORMER_OPS_H_
