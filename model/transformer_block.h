// TransformerLM's block (model/transformer.h): its parameters and projections, and the
// activations a training forward keeps for the backward pass. Internal to model/: shared by
// transformer.cc (training) and transformer_decoder.cc (generation).
#ifndef FEDGE_MODEL_TRANSFORMER_BLOCK_H_
#define FEDGE_MODEL_TRANSFORMER_BLOCK_H_

#include <string>
#include <vector>

#include "model/layer.h"
#include "model/projection.h"
#include "model/transformer.h"

namespace fedge::model {

// A block's activations from its forward, for its backward (rows = batch·len).
// The normed inputs (h1 = norm(x_in), h2 = norm(x_mid)) and the SwiGLU product
// (m = silu(f1) ⊙ f3) are not kept: the model's shared h_ and m_ hold them while a block
// runs, and the backward pass recomputes them from what is kept.
struct TransformerLM::BlockActivations {
  std::vector<float> inv1, q, k, v, p, att, x_mid, inv2, f1, f3;
  void Grow(size_t rows, size_t d, size_t f, size_t probabilities) {
    for (auto* x : {&q, &k, &v, &att, &x_mid}) GrowTo(*x, rows * d);
    GrowTo(inv1, rows);
    GrowTo(inv2, rows);
    for (auto* x : {&f1, &f3}) GrowTo(*x, rows * f);
    GrowTo(p, probabilities);
  }
  void Free() { *this = BlockActivations(); }
  static void GrowTo(std::vector<float>& x, size_t n) {
    if (x.size() < n) x.resize(n);
  }
};

struct TransformerLM::Block {
  Block(const std::string& p, int d, int f)
      : attn_norm(MakeParameter(p + "attn_norm.weight", {d})),
        ffn_norm(MakeParameter(p + "ffn_norm.weight", {d})),
        wq(p + "attn.wq", d, d),
        wk(p + "attn.wk", d, d),
        wv(p + "attn.wv", d, d),
        wo(p + "attn.wo", d, d),
        w1(p + "ffn.w1", d, f),
        w2(p + "ffn.w2", f, d),
        w3(p + "ffn.w3", d, f) {}
  std::vector<Projection*> projections() { return {&wq, &wk, &wv, &wo, &w1, &w2, &w3}; }

  Parameter attn_norm, ffn_norm;
  Projection wq, wk, wv, wo, w1, w2, w3;
  // The last Forward's input of the block (rows = batch·len), and its activations (empty
  // when checkpointing: the model's shared set holds one block's at a time).
  std::vector<float> x_in;
  BlockActivations own;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_TRANSFORMER_BLOCK_H_
