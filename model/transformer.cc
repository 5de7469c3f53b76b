#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "kernels/exp.h"
#include "kernels/q4.h"
#include "kernels/sgemm.h"
#include "model/serialize.h"

namespace fedge::model {
namespace {

using kernels::Sgemm;
using kernels::Trans;

// y [rows × out] = x [rows × in] · Wᵀ (+ beta·y), W [out × in].
void ProjectForward(const float* x, int rows, int in, const Parameter& w, int out, float* y,
                    float beta = 0.0f) {
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

void FillNormal(base::Rng& rng, float stddev, Parameter& p) {
  for (float& v : p.value) v = static_cast<float>(rng.Normal() * stddev);
  ++p.version;
}

void Grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

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

TransformerLM::TransformerLM(const TransformerConfig& c)
    : config_(c),
      tok_emb_(MakeParameter("tok_emb.weight", {c.vocab_size, c.dim})),
      norm_(MakeParameter("norm.weight", {c.dim})) {
  const int d = c.dim, f = c.ffn_dim;
  // Gradients are allocated when training needs them (EnsureGradients): a device's frozen
  // base never holds them, not even while the model is built.
  auto no_gradient = [](Parameter& p) { std::vector<float>().swap(p.grad); };
  no_gradient(tok_emb_);
  no_gradient(norm_);
  for (int l = 0; l < c.num_layers; ++l) {
    blocks_.push_back(std::make_unique<Block>(absl::StrCat("layers.", l, "."), d, f));
    Block& b = *blocks_.back();
    no_gradient(b.attn_norm);
    no_gradient(b.ffn_norm);
    for (Projection* p : b.projections()) no_gradient(p->weight());
  }
  const int half = d / c.num_heads / 2;
  cos_.resize(static_cast<size_t>(c.context) * half);
  sin_.resize(cos_.size());
  for (int t = 0; t < c.context; ++t) {
    for (int i = 0; i < half; ++i) {
      const double theta = std::pow(static_cast<double>(c.rope_base), -2.0 * i / (2 * half));
      cos_[static_cast<size_t>(t) * half + i] = static_cast<float>(std::cos(t * theta));
      sin_[static_cast<size_t>(t) * half + i] = static_cast<float>(std::sin(t * theta));
    }
  }
}

TransformerLM::~TransformerLM() = default;

absl::StatusOr<std::unique_ptr<TransformerLM>> TransformerLM::Create(
    const TransformerConfig& config) {
  FEDGE_RETURN_IF_ERROR(ValidateTransformerConfig(config));
  return std::unique_ptr<TransformerLM>(new TransformerLM(config));
}

absl::StatusOr<std::unique_ptr<TransformerLM>> TransformerLM::FromProto(
    const v1::ModelProto& proto) {
  if (!proto.spec().has_transformer()) {
    return absl::InvalidArgumentError("TransformerLM: the model is not a language model");
  }
  FEDGE_ASSIGN_OR_RETURN(auto model,
                         Create(TransformerConfigFromSpec(proto.spec().transformer())));
  FEDGE_RETURN_IF_ERROR(model->SetParameters(proto));
  return model;
}

absl::Status TransformerLM::SetParameters(const v1::ModelProto& proto) {
  if (fp32_released_) {
    return absl::FailedPreconditionError("the base's fp32 weights were released");
  }
  return CopyParametersFromProto(proto, parameters());
}

v1::ModelProto TransformerLM::ToProto() {
  FEDGE_CHECK(!fp32_released_);
  v1::ModelProto proto;
  proto.mutable_spec()->set_name("transformer");
  *proto.mutable_spec()->mutable_transformer() = TransformerSpecFromConfig(config_);
  AppendParametersToProto(parameters(), proto);
  return proto;
}

void TransformerLM::InitParameters(uint64_t seed) {
  base::Rng rng(seed);
  const float std = 0.02f;
  const float resid_std = std / std::sqrt(2.0f * config_.num_layers);
  FillNormal(rng, std, tok_emb_);
  for (auto& b : blocks_) {
    std::fill(b->attn_norm.value.begin(), b->attn_norm.value.end(), 1.0f);
    std::fill(b->ffn_norm.value.begin(), b->ffn_norm.value.end(), 1.0f);
    ++b->attn_norm.version;
    ++b->ffn_norm.version;
    FillNormal(rng, std, b->wq.weight());
    FillNormal(rng, std, b->wk.weight());
    FillNormal(rng, std, b->wv.weight());
    FillNormal(rng, resid_std, b->wo.weight());
    FillNormal(rng, std, b->w1.weight());
    FillNormal(rng, resid_std, b->w2.weight());
    FillNormal(rng, std, b->w3.weight());
  }
  std::fill(norm_.value.begin(), norm_.value.end(), 1.0f);
  ++norm_.version;
}

std::vector<Parameter*> TransformerLM::parameters() {
  std::vector<Parameter*> out = {&tok_emb_};
  for (auto& b : blocks_) {
    out.push_back(&b->attn_norm);
    for (Projection* p : {&b->wq, &b->wk, &b->wv, &b->wo}) out.push_back(&p->weight());
    out.push_back(&b->ffn_norm);
    for (Projection* p : {&b->w1, &b->w2, &b->w3}) out.push_back(&p->weight());
  }
  out.push_back(&norm_);
  return out;
}

std::vector<Parameter*> TransformerLM::AllAdapters() {
  std::vector<Parameter*> out;
  for (auto& b : blocks_) {
    for (Projection* p : b->projections()) {
      if (p->has_lora()) {
        out.push_back(&p->lora_a());
        out.push_back(&p->lora_b());
      }
    }
  }
  if (head_lora_.enabled()) {
    out.push_back(&head_lora_.a());
    out.push_back(&head_lora_.b());
  }
  return out;
}

std::vector<Parameter*> TransformerLM::adapter_parameters() {
  std::vector<Parameter*> out;
  for (Parameter* p : AllAdapters()) {
    if (p->trainable) out.push_back(p);
  }
  return out;
}

std::vector<Parameter*> TransformerLM::trainable_parameters() {
  return has_lora_ ? adapter_parameters() : parameters();
}

int64_t TransformerLM::num_adapter_parameters() {
  int64_t n = 0;
  for (Parameter* p : adapter_parameters()) n += p->size();
  return n;
}

absl::Status TransformerLM::AddLora(const LoraConfig& lora, uint64_t seed) {
  if (has_lora_) return absl::FailedPreconditionError("LoRA: the model has adapters already");
  if (lora.rank < 1 || lora.rank > std::min(config_.dim, config_.ffn_dim)) {
    return absl::InvalidArgumentError(absl::StrCat("LoRA: rank ", lora.rank, " is outside [1, ",
                                                   std::min(config_.dim, config_.ffn_dim), "]"));
  }
  if (!(lora.alpha > 0.0f) || !std::isfinite(lora.alpha)) {
    return absl::InvalidArgumentError("LoRA: alpha must be positive and finite");
  }
  if (!lora.attention && !lora.mlp && !lora.output) {
    return absl::InvalidArgumentError("LoRA: no target (attention, mlp, output)");
  }
  base::Rng rng(seed);
  auto freeze = [](Parameter& p) {
    p.trainable = false;
    std::vector<float>().swap(p.grad);
  };
  freeze(tok_emb_);
  freeze(norm_);
  for (auto& b : blocks_) {
    freeze(b->attn_norm);
    freeze(b->ffn_norm);
    for (Projection* p : {&b->wq, &b->wk, &b->wv, &b->wo}) {
      if (lora.attention) {
        p->AddLora(lora.rank, lora.alpha, rng, !lora.freeze_a);
      } else {
        p->Freeze();
      }
    }
    for (Projection* p : {&b->w1, &b->w2, &b->w3}) {
      if (lora.mlp) {
        p->AddLora(lora.rank, lora.alpha, rng, !lora.freeze_a);
      } else {
        p->Freeze();
      }
    }
  }
  if (lora.output) {
    head_lora_ = LoraAdapter("output", config_.dim, config_.vocab_size, lora.rank, lora.alpha,
                             rng, !lora.freeze_a);
  }
  has_lora_ = true;
  lora_ = lora;
  return absl::OkStatus();
}

absl::Status TransformerLM::SetBaseFormat(BaseFormat format) {
  if (fp32_released_) {
    return absl::FailedPreconditionError("the base's fp32 weights were released");
  }
  if (format == BaseFormat::kInt4 && !has_lora_) {
    return absl::FailedPreconditionError(
        "an int4 base is frozen: add LoRA adapters before SetBaseFormat(int4)");
  }
  for (auto& b : blocks_) {
    for (Projection* p : b->projections()) p->SetBaseFormat(format);
  }
  base_format_ = format;
  return absl::OkStatus();
}

absl::Status TransformerLM::ReleaseFp32Base() {
  if (base_format_ != BaseFormat::kInt4) {
    return absl::FailedPreconditionError("only an int4 base can release its fp32 weights");
  }
  for (auto& b : blocks_) {
    for (Projection* p : b->projections()) p->ReleaseFp32Weight();
  }
  fp32_released_ = true;
  return absl::OkStatus();
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
        t.values_size() != t.shape(0) * t.shape(1) || !t.q4_blocks().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Int4DeviceForm: ", t.name(), " is not [out × in] fp32 values"));
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

absl::Status TransformerLM::LoadInt4Base(v1::ModelProto file) {
  if (!has_lora_) {
    return absl::FailedPreconditionError(
        "an int4 base is frozen: add LoRA adapters before LoadInt4Base");
  }
  // An int4 device form's projections carry blocks instead of values: their names and
  // shapes are checked here, their blocks when taken (byte count, finite scales).
  for (const v1::TensorProto& t : file.parameters()) {
    if (t.q4_blocks().empty()) continue;
    if (!IsBlockProjectionWeight(t.name()) || t.values_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Model: parameter '", t.name(), "' cannot be int4 blocks (not a block projection, "
          "or values too)"));
    }
  }
  FEDGE_RETURN_IF_ERROR(ValidateParametersProto(
      file, parameters(), [](const v1::TensorProto& t) { return !t.q4_blocks().empty(); }));
  absl::flat_hash_map<std::string, v1::TensorProto*> by_name;
  for (v1::TensorProto& t : *file.mutable_parameters()) by_name.emplace(t.name(), &t);
  auto take = [&](Parameter& p) -> v1::TensorProto& { return *by_name.at(p.name); };
  auto drop = [](v1::TensorProto& t) {
    google::protobuf::RepeatedField<float>().Swap(t.mutable_values());
  };
  auto copy = [&](Parameter& p) {
    v1::TensorProto& t = take(p);
    std::copy(t.values().begin(), t.values().end(), p.value.begin());
    ++p.version;
    drop(t);
  };
  copy(tok_emb_);
  copy(norm_);
  for (auto& b : blocks_) {
    copy(b->attn_norm);
    copy(b->ffn_norm);
    for (Projection* p : b->projections()) {
      v1::TensorProto& t = take(p->weight());
      if (t.q4_blocks().empty()) {
        p->LoadInt4Weight(t.values().data());
      } else {
        FEDGE_RETURN_IF_ERROR(p->LoadInt4Blocks(t.q4_blocks()));
        t.clear_q4_blocks();
      }
      ++p->weight().version;
      drop(t);
    }
  }
  base_format_ = BaseFormat::kInt4;
  fp32_released_ = true;
  return absl::OkStatus();
}

std::unique_ptr<TransformerLM> TransformerLM::Clone() {
  auto copy = std::unique_ptr<TransformerLM>(new TransformerLM(config_));
  const std::vector<Parameter*> from = parameters(), to = copy->parameters();
  for (size_t i = 0; i < from.size(); ++i) {
    to[i]->value = from[i]->value;
    ++to[i]->version;
  }
  if (has_lora_) {
    FEDGE_CHECK(copy->AddLora(lora_, 0).ok());
    const std::vector<Parameter*> af = AllAdapters(), at = copy->AllAdapters();
    for (size_t i = 0; i < af.size(); ++i) at[i]->value = af[i]->value;
  }
  if (fp32_released_) {
    for (size_t l = 0; l < blocks_.size(); ++l) {
      const std::vector<Projection*> pf = blocks_[l]->projections();
      const std::vector<Projection*> pt = copy->blocks_[l]->projections();
      for (size_t i = 0; i < pf.size(); ++i) pt[i]->CopyBaseFormFrom(*pf[i]);
    }
    copy->base_format_ = base_format_;
    copy->fp32_released_ = true;
  } else {
    FEDGE_CHECK(copy->SetBaseFormat(base_format_).ok());
  }
  return copy;
}

v1::ModelProto TransformerLM::AdaptersToProto() {
  v1::ModelProto proto;
  proto.mutable_spec()->set_name("lora");
  *proto.mutable_spec()->mutable_transformer() = TransformerSpecFromConfig(config_);
  AppendParametersToProto(adapter_parameters(), proto);
  return proto;
}

absl::Status TransformerLM::SetAdapters(const v1::ModelProto& proto) {
  if (!has_lora_) return absl::FailedPreconditionError("LoRA: the model has no adapters");
  return CopyParametersFromProto(proto, adapter_parameters());
}

Parameter* TransformerLM::FindParameter(const std::string& name) {
  for (Parameter* p : parameters()) {
    if (p->name == name) return p;
  }
  return nullptr;
}

int64_t TransformerLM::num_parameters() const { return TransformerParameterCount(config_); }

void TransformerLM::EnsureGradients() {
  for (Parameter* p : trainable_parameters()) {
    if (p->grad.size() != p->value.size()) p->grad.assign(p->value.size(), 0.0f);
  }
}

void TransformerLM::ZeroGrad() {
  EnsureGradients();
  for (Parameter* p : trainable_parameters()) std::fill(p->grad.begin(), p->grad.end(), 0.0f);
}

void TransformerLM::EnsureBuffers(int batch, int len) {
  const size_t rows = static_cast<size_t>(batch) * len;
  const size_t d = config_.dim, f = config_.ffn_dim;
  const size_t heads = config_.num_heads;
  const size_t probabilities = static_cast<size_t>(batch) * heads * len * len;
  for (auto& b : blocks_) {
    Grow(b->x_in, rows * d);
    if (!checkpoint_) b->own.Grow(rows, d, f, probabilities);
  }
  if (checkpoint_) shared_->Grow(rows, d, f, probabilities);
  Grow(h_, rows * d);
  Grow(m_, rows * f);
  Grow(x_final_, rows * d);
  Grow(h_final_, rows * d);
  Grow(inv_final_, rows);
}

const float* TransformerLM::Forward(const int32_t* tokens, int batch, int len, bool training) {
  ForwardHidden(tokens, batch, len, training);
  const int rows = batch * len;
  Grow(logits_, static_cast<size_t>(rows) * config_.vocab_size);
  HeadForward(0, rows, logits_.data());
  return logits_.data();
}

void TransformerLM::HeadForward(int row0, int rows, float* logits) {
  const float* h = h_final_.data() + static_cast<size_t>(row0) * config_.dim;
  ProjectForward(h, rows, config_.dim, tok_emb_, config_.vocab_size, logits);
  if (head_lora_.enabled()) head_lora_.Forward(h, rows, logits, scratch_);
}

void TransformerLM::HeadBackward(int row0, int rows, const float* dlogits) {
  const size_t off = static_cast<size_t>(row0) * config_.dim;
  ProjectBackward(h_final_.data() + off, dlogits, rows, config_.dim, tok_emb_,
                  config_.vocab_size, dh_.data() + off, 0.0f, !has_lora_);
  if (head_lora_.enabled()) {
    head_lora_.Backward(h_final_.data() + off, dlogits, rows, dh_.data() + off, scratch_);
  }
}

void TransformerLM::BlockForward(Block& b, BlockActivations& a, float* x_out) {
  const TransformerConfig& c = config_;
  const int batch = batch_, len = len_, rows = batch * len, d = c.dim, f = c.ffn_dim;
  const int heads = c.num_heads, hd = d / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> softmax_scratch(len);
  // Attention.
  RmsNormForward(b.x_in.data(), rows, d, b.attn_norm.value.data(), c.norm_epsilon,
                 h_.data(), a.inv1.data());
  b.wq.Forward(h_.data(), rows, a.q.data(), false, scratch_);
  b.wk.Forward(h_.data(), rows, a.k.data(), false, scratch_);
  b.wv.Forward(h_.data(), rows, a.v.data(), false, scratch_);
  ApplyRope(a.q.data(), rows, len, 0, d, hd, cos_.data(), sin_.data(), false);
  ApplyRope(a.k.data(), rows, len, 0, d, hd, cos_.data(), sin_.data(), false);
  for (int s = 0; s < batch; ++s) {
    const size_t row0 = static_cast<size_t>(s) * len * d;
    for (int h = 0; h < heads; ++h) {
      float* p = a.p.data() + (static_cast<size_t>(s) * heads + h) * len * len;
      const size_t off = row0 + static_cast<size_t>(h) * hd;
      Sgemm(Trans::kNo, Trans::kYes, len, len, hd, scale, a.q.data() + off, d,
            a.k.data() + off, d, 0.0f, p, len);
      for (int i = 0; i < len; ++i) {
        CausalSoftmaxRow(p + static_cast<size_t>(i) * len, len, i + 1, softmax_scratch.data());
      }
      Sgemm(Trans::kNo, Trans::kNo, len, hd, len, 1.0f, p, len, a.v.data() + off, d, 0.0f,
            a.att.data() + off, d);
    }
  }
  std::memcpy(a.x_mid.data(), b.x_in.data(), sizeof(float) * rows * d);
  b.wo.Forward(a.att.data(), rows, a.x_mid.data(), true, scratch_);
  // MLP.
  RmsNormForward(a.x_mid.data(), rows, d, b.ffn_norm.value.data(), c.norm_epsilon,
                 h_.data(), a.inv2.data());
  b.w1.Forward(h_.data(), rows, a.f1.data(), false, scratch_);
  b.w3.Forward(h_.data(), rows, a.f3.data(), false, scratch_);
  if (x_out == nullptr) return;  // a recomputation: the next block kept its output
  const size_t n = static_cast<size_t>(rows) * f;
  kernels::SiluMul(a.f1.data(), a.f3.data(), static_cast<int64_t>(n), m_.data());
  std::memcpy(x_out, a.x_mid.data(), sizeof(float) * rows * d);
  b.w2.Forward(m_.data(), rows, x_out, true, scratch_);
}

TransformerLM::BlockActivations& TransformerLM::ActivationsOf(Block& b) {
  return checkpoint_ ? *shared_ : b.own;
}

void TransformerLM::SetActivationCheckpointing(bool on) {
  if (on == checkpoint_) return;
  checkpoint_ = on;
  if (on) {
    shared_ = std::make_unique<BlockActivations>();
    for (auto& b : blocks_) b->own.Free();
  } else {
    shared_.reset();
  }
  training_ = false;  // the last Forward's activations are gone: Backward needs a new one
}

void TransformerLM::ForwardHidden(const int32_t* tokens, int batch, int len, bool training) {
  const TransformerConfig& c = config_;
  FEDGE_CHECK(batch > 0 && len > 0 && len <= c.context);
  EnsureBuffers(batch, len);
  const int rows = batch * len, d = c.dim;
  batch_ = batch;
  len_ = len;
  training_ = training;
  if (training) EnsureGradients();
  tokens_.assign(tokens, tokens + rows);

  float* x0 = blocks_.empty() ? x_final_.data() : blocks_[0]->x_in.data();
  for (int r = 0; r < rows; ++r) {
    FEDGE_CHECK(tokens[r] >= 0 && tokens[r] < c.vocab_size);
    std::memcpy(x0 + static_cast<size_t>(r) * d,
                tok_emb_.value.data() + static_cast<size_t>(tokens[r]) * d, sizeof(float) * d);
  }
  for (size_t l = 0; l < blocks_.size(); ++l) {
    float* x_out = l + 1 < blocks_.size() ? blocks_[l + 1]->x_in.data() : x_final_.data();
    BlockForward(*blocks_[l], ActivationsOf(*blocks_[l]), x_out);
  }
  RmsNormForward(x_final_.data(), rows, d, norm_.value.data(), c.norm_epsilon,
                 h_final_.data(), inv_final_.data());
}

void TransformerLM::Backward(const float* dlogits) {
  FEDGE_CHECK(training_);
  Grow(dh_, static_cast<size_t>(batch_) * len_ * config_.dim);
  HeadBackward(0, batch_ * len_, dlogits);
  BackwardHidden();
}

void TransformerLM::BackwardHidden() {
  const TransformerConfig& c = config_;
  const int batch = batch_, len = len_, rows = batch * len, d = c.dim, f = c.ffn_dim;
  const int heads = c.num_heads, hd = d / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t rd = static_cast<size_t>(rows) * d, rf = static_cast<size_t>(rows) * f;
  Grow(dx_, rd);
  Grow(dh_, rd);
  Grow(datt_, rd);
  Grow(dq_, rd);
  Grow(dk_, rd);
  Grow(dv_, rd);
  Grow(df1_, rf);
  Grow(dm_, rf);
  Grow(dp_, static_cast<size_t>(len) * len);

  // dh_ holds dL/dh_final (HeadBackward); the final norm.
  const bool base_trains = !has_lora_;
  std::fill(dx_.begin(), dx_.begin() + rd, 0.0f);
  RmsNormBackward(x_final_.data(), inv_final_.data(), rows, d, norm_.value.data(), dh_.data(),
                  dx_.data(), base_trains ? norm_.grad.data() : nullptr);

  for (size_t l = blocks_.size(); l-- > 0;) {
    Block& b = *blocks_[l];
    BlockActivations& a = ActivationsOf(b);
    // Checkpointing: the block's activations again, from its input (the last block's are
    // still those of the forward pass).
    if (checkpoint_ && l + 1 < blocks_.size()) BlockForward(b, a, nullptr);
    // MLP: x_out = x_mid + m·W₂ᵀ, m = silu(f1) ⊙ f3.
    kernels::SiluMul(a.f1.data(), a.f3.data(), static_cast<int64_t>(rf), m_.data());
    b.w2.Backward(m_.data(), dx_.data(), rows, dm_.data(), false, scratch_);
    // m_ is free again: it takes df3.
    float* df3 = m_.data();
    kernels::SiluMulBackward(a.f1.data(), a.f3.data(), dm_.data(), static_cast<int64_t>(rf),
                             df1_.data(), df3);
    RmsNormForward(a.x_mid.data(), rows, d, b.ffn_norm.value.data(), c.norm_epsilon, h_.data(),
                   a.inv2.data());
    b.w1.Backward(h_.data(), df1_.data(), rows, dh_.data(), false, scratch_);
    b.w3.Backward(h_.data(), df3, rows, dh_.data(), true, scratch_);
    RmsNormBackward(a.x_mid.data(), a.inv2.data(), rows, d, b.ffn_norm.value.data(),
                    dh_.data(), dx_.data(), base_trains ? b.ffn_norm.grad.data() : nullptr);
    // Attention: x_mid = x_in + att·Woᵀ.
    b.wo.Backward(a.att.data(), dx_.data(), rows, datt_.data(), false, scratch_);
    for (int s = 0; s < batch; ++s) {
      const size_t row0 = static_cast<size_t>(s) * len * d;
      for (int h = 0; h < heads; ++h) {
        const float* p = a.p.data() + (static_cast<size_t>(s) * heads + h) * len * len;
        const size_t off = row0 + static_cast<size_t>(h) * hd;
        // dP = datt_h · v_hᵀ; dv_h = Pᵀ · datt_h.
        Sgemm(Trans::kNo, Trans::kYes, len, len, hd, 1.0f, datt_.data() + off, d,
              a.v.data() + off, d, 0.0f, dp_.data(), len);
        Sgemm(Trans::kYes, Trans::kNo, len, hd, len, 1.0f, p, len, datt_.data() + off, d, 0.0f,
              dv_.data() + off, d);
        // dS = P ⊙ (dP − Σⱼ dP⊙P) · scale, over the causal entries.
        for (int i = 0; i < len; ++i) {
          const float* pr = p + static_cast<size_t>(i) * len;
          float* dr = dp_.data() + static_cast<size_t>(i) * len;
          float dot = 0.0f;
          for (int j = 0; j <= i; ++j) dot += pr[j] * dr[j];
          for (int j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - dot) * scale;
          std::fill(dr + i + 1, dr + len, 0.0f);
        }
        // dq_h = dS · k_h; dk_h = dSᵀ · q_h.
        Sgemm(Trans::kNo, Trans::kNo, len, hd, len, 1.0f, dp_.data(), len, a.k.data() + off, d,
              0.0f, dq_.data() + off, d);
        Sgemm(Trans::kYes, Trans::kNo, len, hd, len, 1.0f, dp_.data(), len, a.q.data() + off, d,
              0.0f, dk_.data() + off, d);
      }
    }
    ApplyRope(dq_.data(), rows, len, 0, d, hd, cos_.data(), sin_.data(), true);
    ApplyRope(dk_.data(), rows, len, 0, d, hd, cos_.data(), sin_.data(), true);
    // The first block's input gradient feeds only the embedding's.
    float* dh = l == 0 && !base_trains ? nullptr : dh_.data();
    RmsNormForward(b.x_in.data(), rows, d, b.attn_norm.value.data(), c.norm_epsilon, h_.data(),
                   a.inv1.data());
    b.wq.Backward(h_.data(), dq_.data(), rows, dh, false, scratch_);
    b.wk.Backward(h_.data(), dk_.data(), rows, dh, true, scratch_);
    b.wv.Backward(h_.data(), dv_.data(), rows, dh, true, scratch_);
    if (dh == nullptr) break;
    RmsNormBackward(b.x_in.data(), a.inv1.data(), rows, d, b.attn_norm.value.data(),
                    dh_.data(), dx_.data(), base_trains ? b.attn_norm.grad.data() : nullptr);
  }
  if (!base_trains) return;
  // Embedding: dE[token] += dx₀.
  for (int r = 0; r < rows; ++r) {
    float* g = tok_emb_.grad.data() + static_cast<size_t>(tokens_[r]) * d;
    const float* dr = dx_.data() + static_cast<size_t>(r) * d;
    for (int j = 0; j < d; ++j) g[j] += dr[j];
  }
}

float TransformerLM::Loss(const int32_t* tokens, const int32_t* targets, int batch, int len,
                          bool training) {
  const int rows = batch * len;
  for (int r = 0; r < rows; ++r) FEDGE_CHECK(targets[r] >= 0 && targets[r] < config_.vocab_size);
  ForwardHidden(tokens, batch, len, training);
  // The head, the loss and the head's backward a chunk of rows at a time: the vocabulary's
  // logits never exist for the whole batch at once.
  const int chunk = std::min(rows, kHeadChunkRows);
  Grow(dlogits_, static_cast<size_t>(chunk) * config_.vocab_size);
  if (training) Grow(dh_, static_cast<size_t>(rows) * config_.dim);
  double total = 0.0;
  for (int r0 = 0; r0 < rows; r0 += chunk) {
    const int n = std::min(chunk, rows - r0);
    HeadForward(r0, n, dlogits_.data());
    // CrossEntropyRows writes the gradient over the logits it reads, row by row.
    total += CrossEntropyRows(dlogits_.data(), targets + r0, n, config_.vocab_size,
                              1.0f / rows, training ? dlogits_.data() : nullptr);
    if (training) HeadBackward(r0, n, dlogits_.data());
  }
  if (training) BackwardHidden();
  return static_cast<float>(total / rows);
}

// ---------------------------------------------------------------------------------------
// TransformerDecoder

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
