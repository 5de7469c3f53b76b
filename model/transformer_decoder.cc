// TransformerDecoder (model/transformer.h): one position at a time through a
// TransformerLM's blocks, with each block's keys and values cached.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/status_macros.h"
#include "kernels/exp.h"
#include "kernels/sgemm.h"
#include "model/transformer.h"
#include "model/transformer_block.h"
#include "model/transformer_ops.h"

namespace fedge::model {

using transformer_ops::ApplyRope;
using transformer_ops::CausalSoftmaxRow;
using transformer_ops::ProjectForward;
using transformer_ops::RmsNormForward;

TransformerDecoder::TransformerDecoder(const TransformerLM& model) : model_(model) {
  const TransformerConfig& c = model.config_;
  k_cache_.assign(model.blocks_.size(), std::vector<float>(static_cast<size_t>(c.context) * c.dim));
  v_cache_ = k_cache_;
  for (auto* v : {&x_, &h_, &q_, &att_}) v->resize(c.dim);
  f1_.resize(c.ffn_dim);
  f3_.resize(c.ffn_dim);
  scores_.resize(c.context);
  softmax_scratch_.resize(c.context);
  gate_.resize(c.ffn_dim);
  logits_.resize(c.vocab_size);
}

void TransformerDecoder::Reset() { pos_ = 0; }

const float* TransformerDecoder::Step(int32_t token) {
  const TransformerConfig& c = model_.config_;
  FEDGE_CHECK(pos_ < c.context && token >= 0 && token < c.vocab_size);
  const int d = c.dim, f = c.ffn_dim, heads = c.num_heads, hd = d / heads, t = pos_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::memcpy(x_.data(), model_.tok_emb_.value.data() + static_cast<size_t>(token) * d,
              sizeof(float) * d);
  for (size_t l = 0; l < model_.blocks_.size(); ++l) {
    const TransformerLM::Block& b = *model_.blocks_[l];
    float* kc = k_cache_[l].data();
    float* vc = v_cache_[l].data();
    float* k_row = kc + static_cast<size_t>(t) * d;
    float* v_row = vc + static_cast<size_t>(t) * d;
    RmsNormForward(x_.data(), 1, d, b.attn_norm.value.data(), c.norm_epsilon, h_.data(),
                   nullptr);
    b.wq.Forward(h_.data(), 1, q_.data(), false, scratch_);
    b.wk.Forward(h_.data(), 1, k_row, false, scratch_);
    b.wv.Forward(h_.data(), 1, v_row, false, scratch_);
    ApplyRope(q_.data(), 1, 1, t, d, hd, model_.cos_.data(), model_.sin_.data(), false);
    ApplyRope(k_row, 1, 1, t, d, hd, model_.cos_.data(), model_.sin_.data(), false);
    for (int h = 0; h < heads; ++h) {
      const int off = h * hd;
      for (int j = 0; j <= t; ++j) {
        const float* kj = kc + static_cast<size_t>(j) * d + off;
        float s = 0.0f;
        for (int i = 0; i < hd; ++i) s += q_[off + i] * kj[i];
        scores_[j] = s * scale;
      }
      CausalSoftmaxRow(scores_.data(), t + 1, t + 1, softmax_scratch_.data());
      float* out = att_.data() + off;
      std::fill(out, out + hd, 0.0f);
      for (int j = 0; j <= t; ++j) {
        const float* vj = vc + static_cast<size_t>(j) * d + off;
        for (int i = 0; i < hd; ++i) out[i] += scores_[j] * vj[i];
      }
    }
    b.wo.Forward(att_.data(), 1, x_.data(), true, scratch_);
    RmsNormForward(x_.data(), 1, d, b.ffn_norm.value.data(), c.norm_epsilon, h_.data(),
                   nullptr);
    b.w1.Forward(h_.data(), 1, f1_.data(), false, scratch_);
    b.w3.Forward(h_.data(), 1, f3_.data(), false, scratch_);
    kernels::SiluMul(f1_.data(), f3_.data(), f, gate_.data());
    b.w2.Forward(gate_.data(), 1, x_.data(), true, scratch_);
  }
  RmsNormForward(x_.data(), 1, d, model_.norm_.value.data(), c.norm_epsilon, h_.data(),
                 nullptr);
  ProjectForward(h_.data(), 1, d, model_.tok_emb_, c.vocab_size, logits_.data());
  if (model_.head_lora_.enabled()) {
    model_.head_lora_.Forward(h_.data(), 1, logits_.data(), scratch_);
  }
  ++pos_;
  return logits_.data();
}

}  // namespace fedge::model
