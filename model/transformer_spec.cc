// TransformerLM's configuration side: parameter counts, validation, the spec's file form,
// LoRA's spec, the adapters' template, the round's memory estimate and the base's int4
// device form (transformer.h).
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kernels/q4.h"

namespace fedge::model {

int64_t TransformerParameterCount(const TransformerConfig& c) {
  if (c.vocab_size <= 0 || c.dim <= 0 || c.num_layers <= 0 || c.ffn_dim <= 0 ||
      c.vocab_size > (1 << 20) || c.dim > (1 << 16) || c.num_layers > 1024 ||
      c.ffn_dim > (1 << 18)) {
    return std::numeric_limits<int64_t>::max();
  }
  const int64_t d = c.dim, f = c.ffn_dim;
  const int64_t per_block = 2 * d + 4 * d * d + 3 * d * f;
  return int64_t{c.vocab_size} * d + c.num_layers * per_block + d;
}

absl::Status ValidateTransformerConfig(const TransformerConfig& c) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("transformer config: ", what));
  };
  if (c.vocab_size < 2 || c.vocab_size > (1 << 20)) {
    return bad(absl::StrCat("vocab_size ", c.vocab_size, " is outside [2, 1048576]"));
  }
  if (c.dim <= 0 || c.dim > (1 << 16)) {
    return bad(absl::StrCat("dim ", c.dim, " is outside [1, 65536]"));
  }
  if (c.num_layers <= 0 || c.num_layers > 1024) {
    return bad(absl::StrCat("num_layers ", c.num_layers, " is outside [1, 1024]"));
  }
  if (c.num_heads <= 0 || c.dim % c.num_heads != 0) {
    return bad(absl::StrCat("num_heads ", c.num_heads, " does not divide dim ", c.dim));
  }
  if ((c.dim / c.num_heads) % 2 != 0) {
    return bad(absl::StrCat("the head width dim/num_heads = ", c.dim / c.num_heads,
                            " is odd; rotary positions need pairs"));
  }
  if (c.ffn_dim <= 0 || c.ffn_dim > (1 << 18)) {
    return bad(absl::StrCat("ffn_dim ", c.ffn_dim, " is outside [1, 262144]"));
  }
  if (c.context <= 0 || c.context > 4096) {
    return bad(absl::StrCat("context ", c.context, " is outside [1, 4096]"));
  }
  if (!(c.norm_epsilon > 0.0f) || !std::isfinite(c.norm_epsilon)) {
    return bad("norm_epsilon must be positive and finite");
  }
  if (!(c.rope_base > 1.0f) || !std::isfinite(c.rope_base)) {
    return bad("rope_base must be finite and above 1");
  }
  const int64_t n = TransformerParameterCount(c);
  if (n > kMaxTransformerParameters) {
    return bad(absl::StrCat(n, " parameters, above the limit of ", kMaxTransformerParameters));
  }
  return absl::OkStatus();
}

TransformerConfig TransformerConfigFromSpec(const v1::TransformerSpec& spec) {
  TransformerConfig c;
  c.vocab_size = spec.vocab_size();
  c.dim = spec.dim();
  c.num_layers = spec.num_layers();
  c.num_heads = spec.num_heads();
  c.ffn_dim = spec.ffn_dim();
  c.context = spec.context();
  if (spec.norm_epsilon() != 0.0f) c.norm_epsilon = spec.norm_epsilon();
  if (spec.rope_base() != 0.0f) c.rope_base = spec.rope_base();
  return c;
}

v1::TransformerSpec TransformerSpecFromConfig(const TransformerConfig& c) {
  v1::TransformerSpec spec;
  spec.set_vocab_size(c.vocab_size);
  spec.set_dim(c.dim);
  spec.set_num_layers(c.num_layers);
  spec.set_num_heads(c.num_heads);
  spec.set_ffn_dim(c.ffn_dim);
  spec.set_context(c.context);
  spec.set_norm_epsilon(c.norm_epsilon);
  spec.set_rope_base(c.rope_base);
  return spec;
}

LoraConfig LoraConfigFromSpec(const v1::LoraSpec& spec) {
  LoraConfig c;
  c.rank = spec.rank();
  c.alpha = spec.alpha() != 0.0f ? spec.alpha() : 2.0f * static_cast<float>(spec.rank());
  c.attention = spec.attention();
  c.mlp = spec.mlp();
  c.output = spec.output();
  if (!c.attention && !c.mlp && !c.output) c.attention = c.mlp = true;
  c.freeze_a = spec.freeze_a();
  return c;
}

v1::ModelProto LoraAdapterTemplate(const TransformerConfig& c, const LoraConfig& lora) {
  v1::ModelProto proto;
  proto.mutable_spec()->set_name("lora");
  *proto.mutable_spec()->mutable_transformer() = TransformerSpecFromConfig(c);
  auto add = [&](const std::string& name, int in, int out) {
    if (!lora.freeze_a) {
      v1::TensorProto* a = proto.add_parameters();
      a->set_name(name + ".lora_a");
      a->add_shape(lora.rank);
      a->add_shape(in);
      a->mutable_values()->Resize(lora.rank * in, 0.0f);
    }
    v1::TensorProto* b = proto.add_parameters();
    b->set_name(name + ".lora_b");
    b->add_shape(out);
    b->add_shape(lora.rank);
    b->mutable_values()->Resize(out * lora.rank, 0.0f);
  };
  const int d = c.dim, f = c.ffn_dim;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    if (lora.attention) {
      for (const char* w : {"attn.wq", "attn.wk", "attn.wv", "attn.wo"}) add(p + w, d, d);
    }
    if (lora.mlp) {
      add(p + "ffn.w1", d, f);
      add(p + "ffn.w2", f, d);
      add(p + "ffn.w3", d, f);
    }
  }
  if (lora.output) add("output", d, c.vocab_size);
  return proto;
}

v1::ModelProto TransformerParameterTemplate(const TransformerConfig& c) {
  v1::ModelProto proto;
  proto.mutable_spec()->set_name("transformer");
  *proto.mutable_spec()->mutable_transformer() = TransformerSpecFromConfig(c);
  auto add = [&](const std::string& name, std::initializer_list<int> shape) {
    v1::TensorProto* t = proto.add_parameters();
    t->set_name(name);
    int64_t n = 1;
    for (int s : shape) {
      t->add_shape(s);
      n *= s;
    }
    t->mutable_values()->Resize(static_cast<int>(n), 0.0f);
  };
  const int d = c.dim, f = c.ffn_dim;
  // TransformerLM::parameters()'s order.
  add("tok_emb.weight", {c.vocab_size, d});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("layers.", l, ".");
    add(p + "attn_norm.weight", {d});
    for (const char* w : {"attn.wq", "attn.wk", "attn.wv", "attn.wo"}) {
      add(absl::StrCat(p, w, ".weight"), {d, d});
    }
    add(p + "ffn_norm.weight", {d});
    add(p + "ffn.w1.weight", {f, d});
    add(p + "ffn.w2.weight", {d, f});
    add(p + "ffn.w3.weight", {f, d});
  }
  add("norm.weight", {d});
  return proto;
}

namespace {

// A training step's activations and scratch (the backward pass's buffers, the head's chunk,
// the adapters' and the int4 products' scratch) for batch × window tokens; r = LoRA rank.
int64_t StepBytes(const TransformerConfig& c, int64_t r, int batch, int window,
                  bool checkpoint) {
  const int64_t d = c.dim, f = c.ffn_dim, v = c.vocab_size, layers = c.num_layers;
  const int64_t heads = c.num_heads;
  const int64_t rows = int64_t{batch} * window;
  // Per block: its input x_in (d), and its activations: q, k, v, att, x_mid (d each), f1,
  // f3 (f each), two norms' inverse RMS, the attention probabilities (every block's, or
  // one shared set when checkpointing); the final norm's input and output; the shared
  // normed input and SwiGLU product (h_, m_).
  const int64_t block = rows * (5 * d + 2 * f) + 2 * rows + int64_t{batch} * heads * window * window;
  const int64_t activations =
      4 * (layers * rows * d + (checkpoint ? 1 : layers) * block + 2 * rows * d + rows +
           rows * (d + f));
  const int64_t scratch = 4 * (rows * (6 * d + 2 * f) + window * window) + 4 * 65 * v +
                          rows * (4 * (2 * f + 2 * r) + (f + 64)) + 4 * 64 * (f + 64);
  return activations + scratch;
}

}  // namespace

int64_t EstimateFullRoundMemoryBytes(const TransformerConfig& c, int batch, int window,
                                     bool adam, bool checkpoint) {
  // Every parameter with its gradient, Adam's two moments, the task's received copy and Δ
  // (the same six copies EstimateLoraRoundMemoryBytes counts for adapters).
  const int64_t params = TransformerParameterCount(c);
  return 4 * params * (adam ? 6 : 4) + StepBytes(c, 0, batch, window, checkpoint);
}

int64_t EstimateLoraRoundMemoryBytes(const TransformerConfig& c, const LoraConfig& lora,
                                     BaseFormat format, int batch, int window, bool adam,
                                     bool checkpoint) {
  const int64_t d = c.dim, f = c.ffn_dim, v = c.vocab_size, layers = c.num_layers;
  const int64_t r = lora.rank;
  const int64_t projections = layers * (4 * d * d + 3 * d * f);
  const int64_t rest = v * d + (2 * layers + 1) * d;
  int64_t base = 4 * rest;
  base += format == BaseFormat::kInt4 ? projections + projections * 18 / 32 : 4 * projections;
  int64_t adapters = 0;
  const int64_t a_rows = lora.freeze_a ? 0 : 1;
  auto adapter = [&](int64_t in, int64_t out) { adapters += r * (in * a_rows + out); };
  for (int64_t l = 0; l < layers; ++l) {
    if (lora.attention) {
      for (int i = 0; i < 4; ++i) adapter(d, d);
    }
    if (lora.mlp) {
      adapter(d, f);
      adapter(f, d);
      adapter(d, f);
    }
  }
  if (lora.output) adapter(d, v);
  // Frozen A's values (not sent) are held too.
  const int64_t frozen_a = lora.freeze_a ? adapters : 0;
  const int64_t adapter_bytes = 4 * adapters * (adam ? 6 : 4) + 4 * frozen_a;
  return base + adapter_bytes + StepBytes(c, r, batch, window, checkpoint);
}

bool IsBlockProjectionWeight(absl::string_view name) {
  if (!absl::ConsumePrefix(&name, "layers.")) return false;
  const size_t dot = name.find('.');
  if (dot == 0 || dot == absl::string_view::npos ||
      !std::all_of(name.begin(), name.begin() + dot, [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  name.remove_prefix(dot + 1);
  for (absl::string_view p : {"attn.wq.weight", "attn.wk.weight", "attn.wv.weight",
                              "attn.wo.weight", "ffn.w1.weight", "ffn.w2.weight",
                              "ffn.w3.weight"}) {
    if (name == p) return true;
  }
  return false;
}

absl::StatusOr<v1::ModelProto> Int4DeviceForm(const v1::ModelProto& file) {
  if (!file.spec().has_transformer()) {
    return absl::InvalidArgumentError("Int4DeviceForm: the file holds no transformer");
  }
  v1::ModelProto out = file;
  for (v1::TensorProto& t : *out.mutable_parameters()) {
    if (!IsBlockProjectionWeight(t.name())) continue;
    if (t.shape_size() != 2 || t.shape(0) < 1 || t.shape(1) < 1 ||
        t.shape(0) > std::numeric_limits<int>::max() ||
        t.shape(1) > std::numeric_limits<int>::max() ||
        t.values_size() != t.shape(0) * t.shape(1) || !t.q4_blocks().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Int4DeviceForm: ", t.name(), " is not [out × in] fp32 values"));
    }
    for (float v : t.values()) {
      if (!std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("Int4DeviceForm: ", t.name(), " has a non-finite value"));
      }
    }
    const int n = static_cast<int>(t.shape(0)), k = static_cast<int>(t.shape(1));
    kernels::PackedWeightsQ4 q;
    kernels::QuantizeWeightsQ4(t.values().data(), n, k, k, &q);
    const int wire = (k + kernels::kQ4Block - 1) / kernels::kQ4Block;
    std::string blocks;
    blocks.reserve(static_cast<size_t>(n) * wire * sizeof(kernels::BlockQ4));
    for (int j = 0; j < n; ++j) {
      blocks.append(reinterpret_cast<const char*>(q.blocks.data() +
                                                  static_cast<size_t>(j) * q.blocks_per_row()),
                    static_cast<size_t>(wire) * sizeof(kernels::BlockQ4));
    }
    t.clear_values();
    t.set_q4_blocks(std::move(blocks));
  }
  return out;
}

}  // namespace fedge::model
