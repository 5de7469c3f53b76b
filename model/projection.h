// A linear projection y = x·Wᵀ of the language model (model/transformer.h), W [out × in],
// with what fine-tuning on a device adds to it:
//
//   LoRA (Hu et al. 2021): y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with A [r × in], B [out × r], s = α/r.
//     W is frozen (no gradient, its gradient buffer is freed); A starts at U(−1/√in, 1/√in)
//     (PEFT's kaiming_uniform(a = √5) bound) and B at zero, so the adapter starts as a no-op.
//   An int4 base: the frozen W held as Q4_0 blocks (kernels/q4.h). The forward product runs
//     as int4 weights × int8 activations (QGemmQ4); the activations are quantized per row
//     (each row scaled to a common range before the per-tensor quantizer and the product
//     unscaled after: per-token int8). The input gradient dx = dy·Ŵ multiplies fp32 dy by
//     the same int4 weights Ŵ, dequantized a panel of rows at a time into a small buffer: the
//     gradient of the function the forward computes (a second int4 copy of Wᵀ, blocked along
//     the other axis, would be a different Ŵ: measured, it turned the adapters' gradients
//     up to 50° away), in no more memory than the blocks. The adapter's products stay fp32.
//
// Not thread-safe; the scratch is shared by the projections of one model.
#ifndef FEDGE_MODEL_PROJECTION_H_
#define FEDGE_MODEL_PROJECTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "base/rng.h"
#include "kernels/q4.h"
#include "kernels/quantize.h"
#include "model/layer.h"

namespace fedge::model {

enum class BaseFormat { kFp32, kInt4 };
absl::string_view BaseFormatName(BaseFormat format);  // "fp32", "int4"

struct ProjectionScratch {
  kernels::QuantizedActivations q;
  std::vector<float> scaled, row_scale, product, xa, dxa, panel;
};

// The low-rank term s·(x·Aᵀ)·Bᵀ, A [r × in], B [out × r], s = α/r, added to a frozen
// product (a Projection's, or the tied output head's).
class LoraAdapter {
 public:
  LoraAdapter() = default;
  // Parameters "<name>.lora_a" and "<name>.lora_b"; A ~ U(±1/√in) from `rng`, B = 0; with
  // train_a false, A stays frozen (FFA-LoRA).
  LoraAdapter(const std::string& name, int in, int out, int rank, float alpha, base::Rng& rng,
              bool train_a);
  bool enabled() const { return rank_ > 0; }
  // y [rows × out] += s·(x·Aᵀ)·Bᵀ.
  void Forward(const float* x, int rows, float* y, ProjectionScratch& s) const;
  // dB += s·dyᵀ·(x·Aᵀ); dA += (s·dy·B)ᵀ·x when A trains; dx += (s·dy·B)·A (dx may be null).
  void Backward(const float* x, const float* dy, int rows, float* dx, ProjectionScratch& s);
  Parameter& a() { return a_; }
  Parameter& b() { return b_; }
  int rank() const { return rank_; }

 private:
  int in_ = 0, out_ = 0, rank_ = 0;
  float scale_ = 0.0f;
  Parameter a_, b_;
};

class Projection {
 public:
  // `name` is the prefix of its parameters: "<name>.weight", "<name>.lora_a", "<name>.lora_b".
  Projection(const std::string& name, int in, int out);

  // Freezes W and adds a rank-`rank` adapter with scale alpha/rank; with train_a false, A
  // stays at its random start too (FFA-LoRA: only B trains). REQUIRES: rank > 0, no adapter
  // yet.
  void AddLora(int rank, float alpha, base::Rng& rng, bool train_a = true);
  // Freezes W (no gradient) without an adapter.
  void Freeze();
  // The products' form of W: kInt4 quantizes the current W (fp32 value kept, for files).
  // REQUIRES: frozen for kInt4.
  void SetBaseFormat(BaseFormat format);
  // Frees W's fp32 values, keeping only the int4 form the products use (a device's memory).
  // REQUIRES: the int4 format.
  void ReleaseFp32Weight();
  // The int4 form of W from `w` ([out × in] values, e.g. a model file's), W's fp32 values
  // not kept: what SetBaseFormat(kInt4) then ReleaseFp32Weight give for W = w. REQUIRES:
  // frozen.
  void LoadInt4Weight(const float* w);
  // The int4 form of W from its blocks as an int4 device form carries them
  // (TensorProto.q4_blocks: ⌈in/32⌉ BlockQ4 a row, little-endian), W's fp32 values not
  // kept: bit-identical to LoadInt4Weight of the values they were quantized from.
  // INVALID_ARGUMENT for a byte count that is not the shape's, or a scale that is not
  // finite. REQUIRES: frozen.
  absl::Status LoadInt4Blocks(absl::string_view bytes);
  // The products' form of `other`'s W (its format and int4 blocks), not W's fp32 values.
  void CopyBaseFormFrom(const Projection& other);

  // y [rows × out] = (accumulate ? y : 0) + x·Wᵀ (+ the adapter's term).
  void Forward(const float* x, int rows, float* y, bool accumulate, ProjectionScratch& s) const;
  // Given the forward's input x, adds dW (unless frozen) and the adapter's dA, dB (its x·Aᵀ
  // is recomputed: r columns); dx [rows × in] = (accumulate_dx ? dx : 0) + dy·W (+ the
  // adapter's term); dx may be null.
  void Backward(const float* x, const float* dy, int rows, float* dx, bool accumulate_dx,
                ProjectionScratch& s);

  Parameter& weight() { return weight_; }
  const Parameter& weight() const { return weight_; }
  Parameter& lora_a() { return lora_.a(); }
  Parameter& lora_b() { return lora_.b(); }
  bool has_lora() const { return lora_.enabled(); }
  bool frozen() const { return frozen_; }
  BaseFormat base_format() const { return format_; }
  int in() const { return in_; }
  int out() const { return out_; }
  int rank() const { return lora_.rank(); }

 private:
  // y (accumulate ? += : =) x [rows × k] · w (n outputs) in int4 × per-row int8.
  static void Int4Product(const float* x, int rows, int k, const kernels::PackedWeightsQ4& w,
                          float* y, bool accumulate, ProjectionScratch& s);

  std::string name_;
  int in_, out_;
  Parameter weight_;
  bool frozen_ = false;
  BaseFormat format_ = BaseFormat::kFp32;
  kernels::PackedWeightsQ4 w4_;  // int4: W
  LoraAdapter lora_;
};

}  // namespace fedge::model

#endif  // FEDGE_MODEL_PROJECTION_H_
