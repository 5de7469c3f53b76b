// A small decoder-only language model (Llama's layout): token embedding, pre-norm blocks of
// causal multi-head self-attention with rotary positions and a SwiGLU MLP, each added to the
// residual stream, a final RMSNorm and an output projection tied to the embedding.
//
//   x₀ = E[tokens]                                   E [vocab, d]
//   for each block:
//     h  = RMSNorm(x; g₁)                            RMSNorm(x)ᵢ = gᵢ·xᵢ / √(mean(x²) + ε)
//     q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ  (RoPE on q, k per head)
//     a  = concat over heads of softmax(q·kᵀ/√dₕ + causal mask)·v
//     x  = x + a·Woᵀ
//     h  = RMSNorm(x; g₂)
//     x  = x + (silu(h·W₁ᵀ) ⊙ h·W₃ᵀ)·W₂ᵀ
//   logits = RMSNorm(x; g_f)·Eᵀ
//
// Rotary positions (Su et al. 2021) use the "rotate half" pairing: in each head, dimension i
// and i + dₕ/2 (i < dₕ/2) rotate by the angle t·θᵢ at position t, θᵢ = base^(−2i/dₕ).
// No biases anywhere. Parameter names follow the layout above ("tok_emb.weight",
// "layers.<l>.attn.wq.weight", "layers.<l>.ffn.w1.weight", "norm.weight", …), so that a
// PyTorch module with the same attribute names loads the same state.
//
// Activations are rows of the residual stream: [batch, len, d], one row per token. Training
// keeps every block's activations (about len·(7d + 3·ffn) + heads·len² floats per sequence
// and block) for the backward pass. fp32 throughout, on kernels::Sgemm.
//
// Thread safety: none; one TransformerLM per training thread.
#ifndef FEDGE_MODEL_TRANSFORMER_H_
#define FEDGE_MODEL_TRANSFORMER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/layer.h"
#include "model/projection.h"
#include "proto/model.pb.h"

namespace fedge::model {

struct TransformerConfig {
  int vocab_size = 4096;
  int dim = 256;         // d, the residual stream's width
  int num_layers = 4;
  int num_heads = 4;     // dₕ = d / heads, even
  int ffn_dim = 768;     // the SwiGLU MLP's hidden width
  int context = 128;     // the longest sequence
  float norm_epsilon = 1e-5f;
  float rope_base = 10000.0f;
};

// Bounds on a config (configs may arrive over the network). Errors (kInvalidArgument) name
// the field: sizes ≤ 0, d not a multiple of heads, odd dₕ, more than kMaxTransformerParameters
// parameters, a context above 4096, ε ≤ 0, base ≤ 1.
inline constexpr int64_t kMaxTransformerParameters = int64_t{1} << 28;
absl::Status ValidateTransformerConfig(const TransformerConfig& config);
// The config a spec describes (zero ε and base take the defaults), and back.
TransformerConfig TransformerConfigFromSpec(const v1::TransformerSpec& spec);
v1::TransformerSpec TransformerSpecFromConfig(const TransformerConfig& config);
// Parameters of a model with `config`, saturating at INT64_MAX (nothing is allocated).
int64_t TransformerParameterCount(const TransformerConfig& config);

// Low-rank adapters for fine-tuning (model/projection.h): the base is frozen and each chosen
// projection gets A [r × in], B [out × r] with scale α/r.
struct LoraConfig {
  int rank = 8;
  float alpha = 16.0f;
  bool attention = true;  // wq, wk, wv, wo
  bool mlp = true;        // w1, w2, w3
  // An adapter on the output head (the tied embedding stays frozen as the input embedding):
  // "output.lora_a" [r × d], "output.lora_b" [vocab × r].
  bool output = false;
  // FFA-LoRA (Sun et al. 2024): A stays at its seeded random start and only B trains and
  // travels. The mean of the devices' B then gives exactly the mean of their products B·A,
  // which averaging A and B separately (FedIT) does not.
  bool freeze_a = false;

  friend bool operator==(const LoraConfig& a, const LoraConfig& b) {
    return a.rank == b.rank && a.alpha == b.alpha && a.attention == b.attention &&
           a.mlp == b.mlp && a.output == b.output && a.freeze_a == b.freeze_a;
  }
  friend bool operator!=(const LoraConfig& a, const LoraConfig& b) { return !(a == b); }
};

// The adapters a LoraSpec (proto/model.proto) describes: alpha 0 means 2·rank, no target
// means attention and mlp. The base format is the caller's (SetBaseFormat).
LoraConfig LoraConfigFromSpec(const v1::LoraSpec& spec);

// What AdaptersToProto gives for a model of `config` with `lora` (names, shapes, order),
// every value zero, without building the model: the tensors a device expects in a task.
// REQUIRES: a valid config.
v1::ModelProto LoraAdapterTemplate(const TransformerConfig& config, const LoraConfig& lora);

// The bytes a device's LoRA round holds at its peak: the frozen base (the block projections
// as int4 blocks plus their packed form when `format` is int4, the fp32 copy released; fp32
// otherwise), the adapters with their gradients, optimizer slots, the received copy and Δ,
// every block's activations for `batch` windows of `window` tokens (with `checkpoint`:
// every block's input and one block's activations), the backward pass's scratch and the
// output head's 64-row chunk. Not the runtime's fixed cost or the text.
int64_t EstimateLoraRoundMemoryBytes(const TransformerConfig& config, const LoraConfig& lora,
                                     BaseFormat format, int batch, int window, bool adam,
                                     bool checkpoint = false);

// What ToProto gives for a model of `config` (names, shapes, order), every value zero,
// without building the model: the tensors a full-parameter task carries.
v1::ModelProto TransformerParameterTemplate(const TransformerConfig& config);

// The bytes a device's full-parameter round holds at its peak: every parameter with its
// gradient, Adam's two moments when `adam`, the task's received copy and Δ, and the step's
// activations and scratch as EstimateLoraRoundMemoryBytes counts them.
int64_t EstimateFullRoundMemoryBytes(const TransformerConfig& config, int batch, int window,
                                     bool adam, bool checkpoint = false);

// True for the name of a block projection's weight ("layers.<l>.attn.w{q,k,v,o}.weight",
// "layers.<l>.ffn.w{1,2,3}.weight"): what an int4 base holds in int4.
bool IsBlockProjectionWeight(absl::string_view name);

// A language-model file's int4 device form: the same file (spec, tokenizer, embedding and
// norms in fp32) with every block projection's weights as int4 blocks (TensorProto.q4_blocks,
// what TransformerLM's int4 base quantizes them to) instead of fp32 values: what a device of
// an int4 job fetches, about a third of the file's bytes. Deterministic. INVALID_ARGUMENT for
// a file without spec.transformer or a projection tensor that is not [out × in] values.
absl::StatusOr<v1::ModelProto> Int4DeviceForm(const v1::ModelProto& file);

class TransformerLM {
 public:
  // Validates the config and allocates the parameters (zero: call InitParameters or set
  // them). Gradients are allocated by the first training Forward or ZeroGrad, for what
  // trains; activation buffers grow with the largest batch seen.
  static absl::StatusOr<std::unique_ptr<TransformerLM>> Create(const TransformerConfig& config);
  ~TransformerLM();

  // A model from its file form: spec.transformer validated, then every parameter present
  // once with its shape and finite values (errors as CopyParametersFromProto).
  static absl::StatusOr<std::unique_ptr<TransformerLM>> FromProto(const v1::ModelProto& proto);
  // spec.name = "transformer", spec.transformer and the parameters (no tokenizer).
  v1::ModelProto ToProto();
  absl::Status SetParameters(const v1::ModelProto& proto);

  // GPT-2's initialization: every matrix ~ N(0, 0.02²), the residual projections (wo, w₂)
  // ~ N(0, (0.02/√(2·layers))²), RMSNorm gains 1. Deterministic for a seed.
  void InitParameters(uint64_t seed);

  // Runs the model on tokens [batch × len] (ids in [0, vocab), len in [1, context]).
  // Returns the logits [batch × len × vocab], valid until the next Forward. With `training`,
  // keeps what Backward needs.
  const float* Forward(const int32_t* tokens, int batch, int len, bool training);
  // Adds dL/dθ to every parameter's grad given dL/dlogits of the last training Forward.
  void Backward(const float* dlogits);

  // Forward on tokens and the mean next-token cross-entropy against targets [batch × len];
  // with `training`, also the backward pass (gradients added: call ZeroGrad first). The
  // output head runs 64 rows at a time, so the logits of the whole batch are never held.
  float Loss(const int32_t* tokens, const int32_t* targets, int batch, int len, bool training);

  // Fine-tuning: freezes every base parameter (embedding, norms, projections: no gradients,
  // their gradient buffers freed) and adds adapters as `lora` says, A drawn from `seed`.
  // INVALID_ARGUMENT for rank < 1 or above min(d, ffn), α ≤ 0, no target, or adapters
  // already present.
  absl::Status AddLora(const LoraConfig& lora, uint64_t seed);
  // The block projections' products in fp32 or int4 (quantized from the current weights).
  // FAILED_PRECONDITION for int4 on a base that is not frozen (AddLora first).
  absl::Status SetBaseFormat(BaseFormat format);
  BaseFormat base_format() const { return base_format_; }
  // A device's int4 base: frees the block projections' fp32 weights (13.6 MB of the default
  // model), keeping their int4 blocks. The projections' parameters() then hold no values:
  // ToProto and SetParameters of the base are no longer available (FAILED_PRECONDITION /
  // abort); adapters, training, decoding and Clone are. REQUIRES: the int4 format.
  absl::Status ReleaseFp32Base();
  // A device's int4 base straight from its file: every base parameter from `file` (checked
  // as SetParameters checks), the block projections quantized to int4 from the file's values
  // without an fp32 copy, each of the file's tensors freed once taken. The same model as
  // SetParameters, SetBaseFormat(kInt4) and ReleaseFp32Base, without ever holding the fp32
  // projections beside the file. FAILED_PRECONDITION without adapters (AddLora first).
  // The file may be the base's int4 device form (Int4DeviceForm): its projections' blocks
  // are taken as they are. Names, shapes and values are checked before anything changes;
  // a block that does not fit is found as it is taken, and then the model is left partly
  // loaded: discard it.
  absl::Status LoadInt4Base(v1::ModelProto file);
  bool fp32_base_released() const { return fp32_released_; }
  bool has_lora() const { return has_lora_; }
  const LoraConfig& lora() const { return lora_; }
  // Activation checkpointing: a training Forward keeps only each block's input, and the
  // backward pass runs each block's forward again (one more forward of the blocks a step)
  // before its backward, in one set of buffers instead of one per block. The same
  // operations in the same order: loss and gradients are bit-identical either way. A
  // device's memory (EstimateLoraRoundMemoryBytes with `checkpoint`). Off by default.
  void SetActivationCheckpointing(bool on);
  bool activation_checkpointing() const { return checkpoint_; }
  // A model with the same config, base values, adapters and base format.
  std::unique_ptr<TransformerLM> Clone();

  void ZeroGrad();
  // The base parameters (what a model file holds), in a fixed order.
  std::vector<Parameter*> parameters();
  // The adapters that train and travel, in a fixed order: every A and B, or only the B's
  // with freeze_a (empty without LoRA). A frozen A is a function of AddLora's seed.
  std::vector<Parameter*> adapter_parameters();
  // What training updates: the adapters with LoRA, else the base parameters.
  std::vector<Parameter*> trainable_parameters();
  // The adapters alone as a ModelProto (spec.transformer set, parameters = A and B), and
  // back (errors as CopyParametersFromProto; FAILED_PRECONDITION without LoRA).
  v1::ModelProto AdaptersToProto();
  absl::Status SetAdapters(const v1::ModelProto& proto);
  // The number of values adapter_parameters() hold (0 without LoRA).
  int64_t num_adapter_parameters();
  Parameter* FindParameter(const std::string& name);
  int64_t num_parameters() const;
  const TransformerConfig& config() const { return config_; }

 private:
  friend class TransformerDecoder;
  struct Block;
  struct BlockActivations;

  explicit TransformerLM(const TransformerConfig& config);
  void EnsureBuffers(int batch, int len);
  // Zero gradients for every trainable parameter that has none yet (they are not allocated
  // with the model: a frozen base never needs them).
  void EnsureGradients();
  // Forward up to the final norm's output h_final_.
  void ForwardHidden(const int32_t* tokens, int batch, int len, bool training);
  // The output head on rows [row0, row0 + rows) of h_final_, and its backward (into dh_).
  void HeadForward(int row0, int rows, float* logits);
  void HeadBackward(int row0, int rows, const float* dlogits);
  // The backward pass from dh_ (dL/dh_final) down.
  void BackwardHidden();
  // Block b's forward from its x_in into `a`, and its output into x_out (skipped when null:
  // a checkpointed block's recomputation, whose output the next block keeps).
  void BlockForward(Block& b, BlockActivations& a, float* x_out);
  // Where block b's activations are: its own, or the shared set when checkpointing.
  BlockActivations& ActivationsOf(Block& b);
  static constexpr int kHeadChunkRows = 64;
  std::vector<Parameter*> AllAdapters();  // trained or not

  TransformerConfig config_;
  bool has_lora_ = false;
  LoraConfig lora_;
  BaseFormat base_format_ = BaseFormat::kFp32;
  bool fp32_released_ = false;
  bool checkpoint_ = false;
  std::unique_ptr<BlockActivations> shared_;  // checkpointing: the one block's activations
  ProjectionScratch scratch_;
  Parameter tok_emb_;  // [vocab, d], also the output projection
  std::vector<std::unique_ptr<Block>> blocks_;
  Parameter norm_;     // [d]
  LoraAdapter head_lora_;  // LoraConfig.output
  std::vector<float> cos_, sin_;  // [context, dₕ/2]
  // The last Forward.
  int batch_ = 0, len_ = 0;
  bool training_ = false;
  std::vector<int32_t> tokens_;
  std::vector<float> x_final_, inv_final_, h_final_, logits_;
  // A block's normed input and SwiGLU product while it runs (forward and backward).
  std::vector<float> h_, m_;
  std::vector<float> dlogits_;
  // Backward scratch.
  std::vector<float> dx_, dh_, datt_, dq_, dk_, dv_, df1_, dm_, dp_;
};

// Generates one token at a time with a key/value cache: each Step runs one position through
// the model, reusing the keys and values of the earlier ones. Step(t) gives the logits the
// full Forward gives at that position (up to rounding). Holds a reference to `model`, whose
// parameters must not change while decoding.
class TransformerDecoder {
 public:
  explicit TransformerDecoder(const TransformerLM& model);
  // Forgets the cache: the next Step is position 0.
  void Reset();
  // Feeds `token` at the next position; returns the logits [vocab] for the token after it,
  // valid until the next Step. REQUIRES: position() < context, token in [0, vocab).
  const float* Step(int32_t token);
  int position() const { return pos_; }

 private:
  const TransformerLM& model_;
  int pos_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per block: [context, d]
  ProjectionScratch scratch_;
  std::vector<float> x_, h_, q_, att_, f1_, f3_, gate_, scores_, softmax_scratch_, logits_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_TRANSFORMER_H_
