#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"
#include "kernels/exp.h"
#include "kernels/sgemm.h"
#include "model/serialize.h"
#include "model/transformer_block.h"
#include "model/transformer_ops.h"

namespace fedge::model {
namespace {

using kernels::Sgemm;
using kernels::Trans;
using transformer_ops::ApplyRope;
using transformer_ops::CausalSoftmaxRow;
using transformer_ops::CrossEntropyRows;
using transformer_ops::ProjectBackward;
using transformer_ops::ProjectForward;
using transformer_ops::RmsNormBackward;
using transformer_ops::RmsNormForward;

void FillNormal(base::Rng& rng, float stddev, Parameter& p) {
  for (float& v : p.value) v = static_cast<float>(rng.Normal() * stddev);
  ++p.version;
}

void Grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

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

}  // namespace fedge::model
