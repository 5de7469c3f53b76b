#include "model/transformer.h"

#include <malloc.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/q4.h"
#include "model/loss.h"
#include "model/optimizer.h"

namespace fedge::model {
namespace {

using ::testing::HasSubstr;

TransformerConfig TinyConfig() {
  TransformerConfig c;
  c.vocab_size = 37;
  c.dim = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.ffn_dim = 24;
  c.context = 8;
  return c;
}

// Larger weights than InitParameters gives, so that attention is far from uniform and every
// term of the gradient matters; RMSNorm gains away from 1.
void RandomizeParameters(TransformerLM& model, uint64_t seed) {
  base::Rng rng(seed);
  for (Parameter* p : model.parameters()) {
    const bool gain = p->shape.size() == 1;
    for (float& v : p->value) {
      v = gain ? static_cast<float>(1.0 + 0.3 * rng.Normal())
               : static_cast<float>(0.35 * rng.Normal());
    }
    ++p->version;
  }
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint64_t seed) {
  base::Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = static_cast<int32_t>(rng.UniformInt(vocab));
  return t;
}

TEST(TransformerConfigTest, RejectsBadConfigsNamingTheField) {
  TransformerConfig c = TinyConfig();
  EXPECT_TRUE(ValidateTransformerConfig(c).ok());
  c.num_heads = 3;
  EXPECT_THAT(std::string(ValidateTransformerConfig(c).message()), HasSubstr("num_heads"));
  c = TinyConfig();
  c.num_heads = 16;  // head width 1: odd
  EXPECT_THAT(std::string(ValidateTransformerConfig(c).message()), HasSubstr("odd"));
  c = TinyConfig();
  c.context = 0;
  EXPECT_THAT(std::string(ValidateTransformerConfig(c).message()), HasSubstr("context"));
  c = TinyConfig();
  c.vocab_size = 1 << 20;
  c.dim = 1 << 12;
  EXPECT_THAT(std::string(ValidateTransformerConfig(c).message()), HasSubstr("parameters"));
  c = TinyConfig();
  c.norm_epsilon = 0.0f;
  EXPECT_THAT(std::string(ValidateTransformerConfig(c).message()), HasSubstr("norm_epsilon"));
  EXPECT_FALSE(TransformerLM::Create(c).ok());
}

TEST(TransformerTest, CountsAndNamesItsParameters) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  int64_t total = 0;
  for (Parameter* p : model->parameters()) total += p->size();
  EXPECT_EQ(total, model->num_parameters());
  EXPECT_EQ(total, 37 * 16 + 2 * (2 * 16 + 4 * 16 * 16 + 3 * 16 * 24) + 16);
  ASSERT_NE(model->FindParameter("layers.1.attn.wq.weight"), nullptr);
  EXPECT_EQ(model->FindParameter("layers.1.ffn.w2.weight")->shape, (std::vector<int>{16, 24}));
  EXPECT_EQ(model->FindParameter("lm_head.weight"), nullptr);  // tied to tok_emb
}

TEST(TransformerTest, RoundTripsThroughItsProto) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 13);
  v1::ModelProto proto = model->ToProto();
  auto back = TransformerLM::FromProto(proto).value();
  const auto tokens = RandomTokens(8, 37, 14);
  const float* a = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> expected(a, a + 8 * 37);
  const float* b = back->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(b[i], expected[i]);

  proto.mutable_parameters(3)->set_values(0, std::nanf(""));
  EXPECT_THAT(std::string(TransformerLM::FromProto(proto).status().message()),
              HasSubstr("non-finite"));
  proto = model->ToProto();
  proto.mutable_spec()->mutable_transformer()->set_num_heads(5);
  EXPECT_THAT(std::string(TransformerLM::FromProto(proto).status().message()),
              HasSubstr("num_heads"));
  proto = model->ToProto();
  proto.mutable_spec()->clear_transformer();
  EXPECT_FALSE(TransformerLM::FromProto(proto).ok());
}

TEST(TransformerTest, InitialLossIsNearLogVocab) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  model->InitParameters(1);
  const auto tokens = RandomTokens(2 * 8, 37, 2);
  const auto targets = RandomTokens(2 * 8, 37, 3);
  EXPECT_NEAR(model->Loss(tokens.data(), targets.data(), 2, 8, false), std::log(37.0), 0.05);
}

TEST(TransformerTest, EarlierLogitsDoNotSeeLaterTokens) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 4);
  auto tokens = RandomTokens(8, 37, 5);
  const float* l = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> before(l, l + 8 * 37);
  tokens[5] = (tokens[5] + 1) % 37;
  l = model->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 5 * 37; ++i) ASSERT_EQ(l[i], before[i]) << i;
  float change = 0.0f;
  for (int i = 5 * 37; i < 8 * 37; ++i) change += std::fabs(l[i] - before[i]);
  EXPECT_GT(change, 1e-3f);
}

// Each parameter tensor's gradient, against a central difference of the loss along a random
// direction: (L(θ + εu) − L(θ − εu)) / 2ε = ⟨∇L, u⟩ + O(ε²).
TEST(TransformerTest, GradientsMatchFiniteDifferences) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 6);
  const int batch = 2, len = 7;
  const auto tokens = RandomTokens(batch * len, 37, 7);
  const auto targets = RandomTokens(batch * len, 37, 8);
  model->ZeroGrad();
  model->Loss(tokens.data(), targets.data(), batch, len, true);
  base::Rng rng(9);
  for (Parameter* p : model->parameters()) {
    std::vector<float> u(p->value.size());
    for (float& v : u) v = static_cast<float>(rng.Normal());
    double analytic = 0.0;
    for (size_t i = 0; i < u.size(); ++i) analytic += static_cast<double>(p->grad[i]) * u[i];
    const std::vector<float> saved = p->value;
    const float eps = 2e-3f;
    auto loss_at = [&](float sign) {
      for (size_t i = 0; i < u.size(); ++i) p->value[i] = saved[i] + sign * eps * u[i];
      ++p->version;
      return static_cast<double>(model->Loss(tokens.data(), targets.data(), batch, len, false));
    };
    const double numeric = (loss_at(1.0f) - loss_at(-1.0f)) / (2.0 * eps);
    p->value = saved;
    ++p->version;
    EXPECT_NEAR(analytic, numeric, 2e-3 + 1e-2 * std::fabs(numeric)) << p->name;
  }
}

// Loss runs the output head 64 rows at a time; Forward + Backward(dlogits) run it on every
// row at once. 80 rows: two chunks, the second partial.
TEST(TransformerTest, ChunkedLossMatchesTheWholeBatchPath) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 60);
  const int batch = 10, len = 8, rows = batch * len;
  const auto tokens = RandomTokens(rows, 37, 61);
  const auto targets = RandomTokens(rows, 37, 62);
  model->ZeroGrad();
  const float chunked = model->Loss(tokens.data(), targets.data(), batch, len, true);
  std::vector<std::vector<float>> grads;
  for (Parameter* p : model->parameters()) grads.push_back(p->grad);
  model->ZeroGrad();
  const float* logits = model->Forward(tokens.data(), batch, len, true);
  std::vector<float> dlogits(static_cast<size_t>(rows) * 37);
  const float whole = SoftmaxCrossEntropy(logits, targets.data(), rows, 37, dlogits.data());
  model->Backward(dlogits.data());
  EXPECT_NEAR(chunked, whole, 1e-5f * whole);
  const auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    for (size_t j = 0; j < grads[i].size(); ++j) {
      ASSERT_NEAR(grads[i][j], params[i]->grad[j], 1e-5f + 1e-4f * std::fabs(grads[i][j]))
          << params[i]->name << " " << j;
    }
  }
}

TEST(TransformerTest, DecoderMatchesTheFullForwardAtEveryPosition) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 10);
  const auto tokens = RandomTokens(8, 37, 11);
  const float* full = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> expected(full, full + 8 * 37);
  TransformerDecoder decoder(*model);
  for (int round = 0; round < 2; ++round) {  // and again after Reset
    decoder.Reset();
    for (int t = 0; t < 8; ++t) {
      const float* step = decoder.Step(tokens[t]);
      for (int v = 0; v < 37; ++v) {
        ASSERT_NEAR(step[v], expected[t * 37 + v], 1e-4f * (1.0f + std::fabs(expected[t * 37 + v])))
            << "position " << t << " token " << v;
      }
    }
    EXPECT_EQ(decoder.position(), 8);
  }
}

TEST(TransformerTest, LearnsToContinueARepeatedSequence) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  model->InitParameters(12);
  const std::vector<int32_t> seq = {3, 14, 15, 9, 26, 5, 35, 8, 9};
  std::vector<int32_t> tokens(seq.begin(), seq.end() - 1), targets(seq.begin() + 1, seq.end());
  auto adam = Adam::Create(AdamOptions{.learning_rate = 1e-2f}).value();
  const float first = model->Loss(tokens.data(), targets.data(), 1, 8, false);
  float loss = first;
  for (int step = 0; step < 150; ++step) {
    model->ZeroGrad();
    loss = model->Loss(tokens.data(), targets.data(), 1, 8, true);
    adam->Step(model->parameters());
  }
  EXPECT_GT(first, 3.0f);
  EXPECT_LT(loss, 0.1f);
  // Greedy decoding from the first token reproduces the sequence.
  TransformerDecoder decoder(*model);
  int32_t next = seq[0];
  for (size_t t = 1; t < seq.size(); ++t) {
    const float* logits = decoder.Step(next);
    next = static_cast<int32_t>(std::max_element(logits, logits + 37) - logits);
    EXPECT_EQ(next, seq[t]) << "position " << t;
  }
}

// Adapters with random (non-zero) B, so that every adapter gradient term is exercised.
void RandomizeAdapters(TransformerLM& model, uint64_t seed) {
  base::Rng rng(seed);
  for (Parameter* p : model.adapter_parameters()) {
    for (float& v : p->value) v = static_cast<float>(0.3 * rng.Normal());
    ++p->version;
  }
}

double DirectionalCheck(TransformerLM& model, Parameter* p, const std::vector<int32_t>& tokens,
                        const std::vector<int32_t>& targets, int batch, int len, uint64_t seed,
                        double* analytic) {
  base::Rng rng(seed);
  std::vector<float> u(p->value.size());
  for (float& v : u) v = static_cast<float>(rng.Normal());
  *analytic = 0.0;
  for (size_t i = 0; i < u.size(); ++i) *analytic += static_cast<double>(p->grad[i]) * u[i];
  const std::vector<float> saved = p->value;
  const float eps = 2e-3f;
  auto loss_at = [&](float sign) {
    for (size_t i = 0; i < u.size(); ++i) p->value[i] = saved[i] + sign * eps * u[i];
    return static_cast<double>(model.Loss(tokens.data(), targets.data(), batch, len, false));
  };
  const double numeric = (loss_at(1.0f) - loss_at(-1.0f)) / (2.0 * eps);
  p->value = saved;
  return numeric;
}

TEST(TransformerLoraTest, AdaptersStartAsANoOpAndFreezeTheBase) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 20);
  const auto tokens = RandomTokens(8, 37, 21);
  const float* l = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> before(l, l + 8 * 37);
  ASSERT_TRUE(model->AddLora(LoraConfig{}, 22).ok());
  l = model->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(l[i], before[i]);
  // 2 blocks × (4 attention projections of 16 → 16 + w1, w3 16 → 24 + w2 24 → 16), rank 8.
  const int64_t per_block = 4 * 8 * (16 + 16) + 2 * 8 * (16 + 24) + 8 * (24 + 16);
  EXPECT_EQ(model->num_adapter_parameters(), 2 * per_block);
  EXPECT_EQ(model->trainable_parameters().size(), 2u * 7 * 2);
  for (Parameter* p : model->parameters()) {
    EXPECT_FALSE(p->trainable) << p->name;
    EXPECT_TRUE(p->grad.empty()) << p->name;
  }
  EXPECT_FALSE(model->AddLora(LoraConfig{}, 1).ok());
  LoraConfig bad;
  bad.rank = 0;
  auto other = TransformerLM::Create(TinyConfig()).value();
  EXPECT_FALSE(other->AddLora(bad, 1).ok());
  EXPECT_FALSE(other->SetBaseFormat(BaseFormat::kInt4).ok());  // not frozen
}

TEST(TransformerLoraTest, AdapterGradientsMatchFiniteDifferences) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 23);
  LoraConfig lora;
  lora.rank = 3;
  lora.alpha = 6.0f;
  lora.output = true;
  ASSERT_TRUE(model->AddLora(lora, 24).ok());
  RandomizeAdapters(*model, 25);
  const int batch = 2, len = 7;
  const auto tokens = RandomTokens(batch * len, 37, 26);
  const auto targets = RandomTokens(batch * len, 37, 27);
  model->ZeroGrad();
  model->Loss(tokens.data(), targets.data(), batch, len, true);
  uint64_t seed = 28;
  for (Parameter* p : model->adapter_parameters()) {
    double analytic = 0;
    const double numeric =
        DirectionalCheck(*model, p, tokens, targets, batch, len, seed++, &analytic);
    EXPECT_NEAR(analytic, numeric, 2e-3 + 1e-2 * std::fabs(numeric)) << p->name;
  }
}

// The int4 base against the same model with W replaced by its dequantized int4 values in
// fp32: what differs is the activations' int8 rounding only.
// A device's int4 base loaded straight from the file is the model SetParameters,
// SetBaseFormat(int4) and ReleaseFp32Base give: the same logits and adapter gradients, bit
// for bit; a file that does not fit is refused before anything changes.
TEST(TransformerLoraTest, LoadInt4BaseIsTheQuantizedModelWithoutItsFp32Copy) {
  TransformerConfig c = TinyConfig();
  c.dim = 64;
  c.ffn_dim = 96;
  auto source = TransformerLM::Create(c).value();
  RandomizeParameters(*source, 40);
  const v1::ModelProto file = source->ToProto();
  LoraConfig lora;
  lora.rank = 2;
  lora.output = true;
  auto loaded = TransformerLM::Create(c).value();
  auto reference = TransformerLM::Create(c).value();
  ASSERT_TRUE(loaded->AddLora(lora, 41).ok());
  ASSERT_TRUE(reference->AddLora(lora, 41).ok());
  EXPECT_EQ(TransformerLM::Create(c).value()->LoadInt4Base(file).code(),
            absl::StatusCode::kFailedPrecondition);  // no adapters
  ASSERT_TRUE(reference->SetParameters(file).ok());
  ASSERT_TRUE(reference->SetBaseFormat(BaseFormat::kInt4).ok());
  ASSERT_TRUE(reference->ReleaseFp32Base().ok());
  // As the device does it: the fp32 projections released before the file is read.
  ASSERT_TRUE(loaded->SetBaseFormat(BaseFormat::kInt4).ok());
  ASSERT_TRUE(loaded->ReleaseFp32Base().ok());
  v1::ModelProto bad = file;
  bad.mutable_parameters(3)->set_values(5, std::nanf(""));
  EXPECT_EQ(loaded->LoadInt4Base(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = file;
  bad.mutable_parameters()->RemoveLast();
  EXPECT_EQ(loaded->LoadInt4Base(bad).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(loaded->LoadInt4Base(file).ok());
  EXPECT_TRUE(loaded->fp32_base_released());
  EXPECT_EQ(loaded->base_format(), BaseFormat::kInt4);
  RandomizeAdapters(*loaded, 42);
  RandomizeAdapters(*reference, 42);
  const int batch = 2, len = 8;
  const auto tokens = RandomTokens(batch * len, 37, 43);
  const float* a = loaded->Forward(tokens.data(), batch, len, false);
  const std::vector<float> la(a, a + batch * len * 37);
  const float* b = reference->Forward(tokens.data(), batch, len, false);
  EXPECT_EQ(la, std::vector<float>(b, b + batch * len * 37));
  loaded->ZeroGrad();
  reference->ZeroGrad();
  EXPECT_EQ(loaded->Loss(tokens.data(), tokens.data(), batch, len, true),
            reference->Loss(tokens.data(), tokens.data(), batch, len, true));
  const auto ga = loaded->adapter_parameters(), gb = reference->adapter_parameters();
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_EQ(ga[i]->grad, gb[i]->grad) << ga[i]->name;
}

// The int4 device form carries the projections as the blocks an int4 base quantizes them
// to: loading it gives the same model, bit for bit, from a third of the bytes; blocks that
// do not fit are refused.
TEST(TransformerLoraTest, TheInt4DeviceFormLoadsTheSameModelFromItsBlocks) {
  EXPECT_TRUE(IsBlockProjectionWeight("layers.0.attn.wq.weight"));
  EXPECT_TRUE(IsBlockProjectionWeight("layers.12.ffn.w2.weight"));
  for (const char* not_one : {"tok_emb.weight", "layers.0.attn_norm.weight", "layers..attn.wq.weight",
                              "layers.x.attn.wq.weight", "layers.0.attn.wq.lora_a",
                              "layers.0.attn.wq.weight.x", "norm.weight"}) {
    EXPECT_FALSE(IsBlockProjectionWeight(not_one)) << not_one;
  }
  TransformerConfig c = TinyConfig();
  c.dim = 48;  // rows of 48 values: one full block and one zero-padded
  c.ffn_dim = 80;
  auto source = TransformerLM::Create(c).value();
  RandomizeParameters(*source, 50);
  const v1::ModelProto file = source->ToProto();
  auto form = Int4DeviceForm(file);
  ASSERT_TRUE(form.ok()) << form.status();
  int blocks = 0;
  for (const v1::TensorProto& t : form->parameters()) {
    if (!t.q4_blocks().empty()) {
      ++blocks;
      EXPECT_EQ(t.values_size(), 0);
      EXPECT_TRUE(IsBlockProjectionWeight(t.name()));
    }
  }
  EXPECT_EQ(blocks, 7 * c.num_layers);
  EXPECT_LT(form->ByteSizeLong(), file.ByteSizeLong() / 2);
  // Deterministic: the same bytes (and digest) every time.
  EXPECT_EQ(Int4DeviceForm(file)->SerializeAsString(), form->SerializeAsString());
  v1::ModelProto nan_file = file;
  for (v1::TensorProto& t : *nan_file.mutable_parameters()) {
    if (IsBlockProjectionWeight(t.name())) {
      t.set_values(3, std::nanf(""));
      break;
    }
  }
  EXPECT_THAT(Int4DeviceForm(nan_file).status().message(), HasSubstr("non-finite"));
  LoraConfig lora;
  lora.rank = 2;
  auto from_form = TransformerLM::Create(c).value();
  auto from_file = TransformerLM::Create(c).value();
  ASSERT_TRUE(from_form->AddLora(lora, 51).ok());
  ASSERT_TRUE(from_file->AddLora(lora, 51).ok());
  ASSERT_TRUE(from_file->LoadInt4Base(file).ok());
  // Blocks that do not fit: a row short, a non-finite scale, blocks on the embedding.
  v1::ModelProto bad = *form;
  for (v1::TensorProto& t : *bad.mutable_parameters()) {
    if (!t.q4_blocks().empty()) {
      t.mutable_q4_blocks()->resize(t.q4_blocks().size() - 18);
      break;
    }
  }
  EXPECT_EQ(from_form->LoadInt4Base(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = *form;
  for (v1::TensorProto& t : *bad.mutable_parameters()) {
    if (!t.q4_blocks().empty()) {
      (*t.mutable_q4_blocks())[0] = '\x00';
      (*t.mutable_q4_blocks())[1] = '\x7e';  // fp16 NaN
      break;
    }
  }
  EXPECT_THAT(from_form->LoadInt4Base(bad).message(), HasSubstr("non-finite scale"));
  bad = *form;
  bad.mutable_parameters(0)->clear_values();  // tok_emb.weight
  bad.mutable_parameters(0)->set_q4_blocks(std::string(18, '\0'));
  EXPECT_THAT(from_form->LoadInt4Base(bad).message(), HasSubstr("cannot be int4 blocks"));
  auto fresh = TransformerLM::Create(c).value();
  ASSERT_TRUE(fresh->AddLora(lora, 51).ok());
  EXPECT_EQ(fresh->SetParameters(*form).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(fresh->LoadInt4Base(*form).ok());
  RandomizeAdapters(*fresh, 52);
  RandomizeAdapters(*from_file, 52);
  const int batch = 2, len = 8;
  const auto tokens = RandomTokens(batch * len, 37, 53);
  const float* a = fresh->Forward(tokens.data(), batch, len, false);
  const std::vector<float> la(a, a + batch * len * 37);
  const float* b = from_file->Forward(tokens.data(), batch, len, false);
  EXPECT_EQ(la, std::vector<float>(b, b + batch * len * 37));
  fresh->ZeroGrad();
  from_file->ZeroGrad();
  EXPECT_EQ(fresh->Loss(tokens.data(), tokens.data(), batch, len, true),
            from_file->Loss(tokens.data(), tokens.data(), batch, len, true));
  const auto ga = fresh->adapter_parameters(), gb = from_file->adapter_parameters();
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_EQ(ga[i]->grad, gb[i]->grad) << ga[i]->name;
}

TEST(TransformerLoraTest, AnInt4BaseComputesWithTheQuantizedWeights) {
  TransformerConfig c = TinyConfig();
  c.dim = 64;  // int4 blocks are 32 wide
  c.ffn_dim = 96;
  auto int4 = TransformerLM::Create(c).value();
  RandomizeParameters(*int4, 30);
  for (Parameter* p : int4->parameters()) {  // milder weights: attention far from saturated
    if (p->shape.size() == 2) {
      for (float& v : p->value) v *= 0.5f;
    }
  }
  auto reference = int4->Clone();
  ASSERT_TRUE(int4->AddLora(LoraConfig{}, 31).ok());
  ASSERT_TRUE(reference->AddLora(LoraConfig{}, 31).ok());
  RandomizeAdapters(*int4, 32);
  RandomizeAdapters(*reference, 32);
  ASSERT_TRUE(int4->SetBaseFormat(BaseFormat::kInt4).ok());
  for (Parameter* p : reference->parameters()) {
    if (p->shape.size() != 2 || p->name == "tok_emb.weight") continue;
    kernels::PackedWeightsQ4 q;
    kernels::QuantizeWeightsQ4(p->value.data(), p->shape[0], p->shape[1], p->shape[1], &q);
    kernels::DequantizeWeightsQ4(q, p->value.data(), p->shape[1]);
  }
  const int batch = 2, len = 8;
  const auto tokens = RandomTokens(batch * len, 37, 33);
  const auto targets = RandomTokens(batch * len, 37, 34);
  const float* a = int4->Forward(tokens.data(), batch, len, false);
  const std::vector<float> la(a, a + batch * len * 37);
  const float* b = reference->Forward(tokens.data(), batch, len, false);
  double err = 0, norm = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    err += (la[i] - b[i]) * (la[i] - b[i]);
    norm += b[i] * b[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 0.03);
  EXPECT_GT(std::sqrt(err / norm), 0.0);  // the int8 activations do round
  // The adapter gradients, through int4 × int8 input gradients, point the same way.
  int4->ZeroGrad();
  reference->ZeroGrad();
  int4->Loss(tokens.data(), targets.data(), batch, len, true);
  reference->Loss(tokens.data(), targets.data(), batch, len, true);
  const auto ga = int4->adapter_parameters(), gb = reference->adapter_parameters();
  for (size_t i = 0; i < ga.size(); ++i) {
    double dot = 0, na = 0, nb = 0;
    for (size_t j = 0; j < ga[i]->grad.size(); ++j) {
      dot += ga[i]->grad[j] * gb[i]->grad[j];
      na += ga[i]->grad[j] * ga[i]->grad[j];
      nb += gb[i]->grad[j] * gb[i]->grad[j];
    }
    EXPECT_GT(dot / std::sqrt(na * nb), 0.99) << ga[i]->name;
  }
  // Releasing the fp32 weights changes nothing the int4 products compute; clones follow.
  const float* kept = int4->Forward(tokens.data(), batch, len, false);
  const std::vector<float> before_release(kept, kept + batch * len * 37);
  ASSERT_TRUE(int4->ReleaseFp32Base().ok());
  EXPECT_TRUE(int4->FindParameter("layers.0.attn.wq.weight")->value.empty());
  auto clone = int4->Clone();
  for (TransformerLM* m : {int4.get(), clone.get()}) {
    const float* after = m->Forward(tokens.data(), batch, len, false);
    for (size_t i = 0; i < before_release.size(); ++i) ASSERT_EQ(after[i], before_release[i]);
  }
  EXPECT_FALSE(int4->SetBaseFormat(BaseFormat::kFp32).ok());
  // The decoder runs the same int4 products.
  TransformerDecoder decoder(*int4);
  const float* full = int4->Forward(tokens.data(), 1, len, false);
  const std::vector<float> expected(full, full + len * 37);
  for (int t = 0; t < len; ++t) {
    const float* step = decoder.Step(tokens[t]);
    for (int v = 0; v < 37; ++v) {
      ASSERT_NEAR(step[v], expected[t * 37 + v], 1e-3f * (1.0f + std::fabs(expected[t * 37 + v])));
    }
  }
}

TEST(TransformerLoraTest, FrozenAOnlyTrainsAndSendsB) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 50);
  LoraConfig lora;
  lora.freeze_a = true;
  ASSERT_TRUE(model->AddLora(lora, 51).ok());
  RandomizeAdapters(*model, 52);  // the B's
  const std::vector<Parameter*> adapters = model->adapter_parameters();
  ASSERT_EQ(adapters.size(), 2u * 7);
  for (Parameter* p : adapters) {
    EXPECT_TRUE(absl::EndsWith(p->name, ".lora_b")) << p->name;
  }
  EXPECT_EQ(model->AdaptersToProto().parameters_size(), 14);
  // The same seed gives the same A elsewhere (a coordinator and its devices).
  auto other = TransformerLM::FromProto(model->ToProto()).value();
  ASSERT_TRUE(other->AddLora(lora, 51).ok());
  auto copy = model->Clone();
  const int batch = 2, len = 7;
  const auto tokens = RandomTokens(batch * len, 37, 53);
  const auto targets = RandomTokens(batch * len, 37, 54);
  model->ZeroGrad();
  model->Loss(tokens.data(), targets.data(), batch, len, true);
  uint64_t seed = 55;
  for (Parameter* p : adapters) {
    double analytic = 0;
    const double numeric =
        DirectionalCheck(*model, p, tokens, targets, batch, len, seed++, &analytic);
    EXPECT_NEAR(analytic, numeric, 2e-3 + 1e-2 * std::fabs(numeric)) << p->name;
  }
  const float* a = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> expected(a, a + 8 * 37);
  const float* b = copy->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(b[i], expected[i]);
  ASSERT_TRUE(other->SetAdapters(model->AdaptersToProto()).ok());
  b = other->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(b[i], expected[i]);
}

TEST(TransformerLoraTest, TheAdapterTemplateNamesWhatAdaptersToProtoSends) {
  for (int variant = 0; variant < 4; ++variant) {
    LoraConfig lora;
    lora.rank = 3;
    lora.attention = variant != 1;
    lora.mlp = variant != 2;
    lora.output = variant >= 2;
    lora.freeze_a = variant == 3;
    auto model = TransformerLM::Create(TinyConfig()).value();
    ASSERT_TRUE(model->AddLora(lora, 1).ok());
    const v1::ModelProto sent = model->AdaptersToProto();
    const v1::ModelProto expected = LoraAdapterTemplate(TinyConfig(), lora);
    ASSERT_EQ(sent.parameters_size(), expected.parameters_size()) << variant;
    for (int i = 0; i < sent.parameters_size(); ++i) {
      EXPECT_EQ(sent.parameters(i).name(), expected.parameters(i).name());
      EXPECT_EQ(sent.parameters(i).values_size(), expected.parameters(i).values_size());
      EXPECT_EQ(std::vector<int64_t>(sent.parameters(i).shape().begin(), sent.parameters(i).shape().end()),
                std::vector<int64_t>(expected.parameters(i).shape().begin(),
                                     expected.parameters(i).shape().end()));
    }
  }
}

// The estimate against what the heap holds after a model is built, given adapters and an int4
// base, and has trained one step (glibc's mallinfo2: bytes in use).
// Checkpointing recomputes each block's forward in the backward pass with the same
// operations in the same order: the loss and every gradient are bit-identical, for full
// training and for adapters over an int4 base, over several steps and batch sizes.
TEST(TransformerTest, ActivationCheckpointingGivesBitIdenticalLossAndGradients) {
  for (const bool lora : {false, true}) {
    TransformerConfig c = TinyConfig();
    c.num_layers = 3;
    auto plain = TransformerLM::Create(c).value();
    RandomizeParameters(*plain, 70);
    if (lora) {
      LoraConfig l;
      l.rank = 2;
      l.output = true;
      ASSERT_TRUE(plain->AddLora(l, 5).ok());
      ASSERT_TRUE(plain->SetBaseFormat(BaseFormat::kInt4).ok());
      base::Rng rng(71);  // B away from zero, so that every adapter term is in play
      for (Parameter* p : plain->adapter_parameters()) {
        for (float& v : p->value) v = static_cast<float>(0.2 * rng.Normal());
      }
    }
    auto checkpointed = plain->Clone();
    checkpointed->SetActivationCheckpointing(true);
    EXPECT_TRUE(checkpointed->activation_checkpointing());
    for (const int batch : {3, 1, 4}) {
      const int len = 8, rows = batch * len;
      const auto tokens = RandomTokens(rows, 37, 72 + batch);
      const auto targets = RandomTokens(rows, 37, 73 + batch);
      plain->ZeroGrad();
      checkpointed->ZeroGrad();
      const float a = plain->Loss(tokens.data(), targets.data(), batch, len, true);
      const float b = checkpointed->Loss(tokens.data(), targets.data(), batch, len, true);
      EXPECT_EQ(a, b) << "lora " << lora << " batch " << batch;
      const auto pa = plain->trainable_parameters(), pb = checkpointed->trainable_parameters();
      ASSERT_EQ(pa.size(), pb.size());
      for (size_t i = 0; i < pa.size(); ++i) {
        ASSERT_EQ(pa[i]->grad, pb[i]->grad) << pa[i]->name << " lora " << lora;
      }
      // Evaluation (no backward) is unaffected too.
      EXPECT_EQ(plain->Loss(tokens.data(), targets.data(), batch, len, false),
                checkpointed->Loss(tokens.data(), targets.data(), batch, len, false));
    }
    // And back: switching it off mid-life keeps working.
    checkpointed->SetActivationCheckpointing(false);
    const auto tokens = RandomTokens(16, 37, 80);
    checkpointed->ZeroGrad();
    plain->ZeroGrad();
    EXPECT_EQ(plain->Loss(tokens.data(), tokens.data(), 2, 8, true),
              checkpointed->Loss(tokens.data(), tokens.data(), 2, 8, true));
  }
}

TEST(TransformerLoraTest, TheRoundMemoryEstimateMatchesTheHeap) {
  TransformerConfig c;  // the default model
  c.vocab_size = 4096;
  LoraConfig lora;
  lora.output = true;
  const int batch = 2, window = 128;
  const size_t before = mallinfo2().uordblks + mallinfo2().hblkhd;
  {
    auto model = TransformerLM::Create(c).value();
    ASSERT_TRUE(model->AddLora(lora, 1).ok());
    ASSERT_TRUE(model->SetBaseFormat(BaseFormat::kInt4).ok());
    ASSERT_TRUE(model->ReleaseFp32Base().ok());
    auto adam = Adam::Create(AdamOptions{}).value();
    const auto tokens = RandomTokens(batch * window, c.vocab_size, 1);
    model->ZeroGrad();
    model->Loss(tokens.data(), tokens.data(), batch, window, true);
    adam->Step(model->trainable_parameters());
    const v1::ModelProto received = model->AdaptersToProto();  // the task's copy
    const v1::ModelProto delta = model->AdaptersToProto();     // Δ
    const double held = static_cast<double>(mallinfo2().uordblks + mallinfo2().hblkhd - before);
    const double estimate =
        static_cast<double>(EstimateLoraRoundMemoryBytes(c, lora, BaseFormat::kInt4, batch,
                                                         window, /*adam=*/true));
    EXPECT_GT(estimate, 0.9 * held) << "held " << held << " estimate " << estimate;
    EXPECT_LT(estimate, 1.25 * held) << "held " << held << " estimate " << estimate;
  }
  {
    // Checkpointed: every block's input and one block's activations.
    const size_t start = mallinfo2().uordblks + mallinfo2().hblkhd;
    auto model = TransformerLM::Create(c).value();
    ASSERT_TRUE(model->AddLora(lora, 1).ok());
    ASSERT_TRUE(model->SetBaseFormat(BaseFormat::kInt4).ok());
    ASSERT_TRUE(model->ReleaseFp32Base().ok());
    model->SetActivationCheckpointing(true);
    auto adam = Adam::Create(AdamOptions{}).value();
    const auto tokens = RandomTokens(batch * window, c.vocab_size, 1);
    model->ZeroGrad();
    model->Loss(tokens.data(), tokens.data(), batch, window, true);
    adam->Step(model->trainable_parameters());
    const v1::ModelProto received = model->AdaptersToProto();
    const v1::ModelProto delta = model->AdaptersToProto();
    const double held = static_cast<double>(mallinfo2().uordblks + mallinfo2().hblkhd - start);
    const double estimate = static_cast<double>(EstimateLoraRoundMemoryBytes(
        c, lora, BaseFormat::kInt4, batch, window, /*adam=*/true, /*checkpoint=*/true));
    EXPECT_GT(estimate, 0.9 * held) << "held " << held << " estimate " << estimate;
    EXPECT_LT(estimate, 1.25 * held) << "held " << held << " estimate " << estimate;
    EXPECT_LT(estimate, 0.8 * static_cast<double>(EstimateLoraRoundMemoryBytes(
                                  c, lora, BaseFormat::kInt4, batch, window, true)));
  }
  EXPECT_LT(EstimateLoraRoundMemoryBytes(c, lora, BaseFormat::kInt4, 2, 128, true),
            EstimateLoraRoundMemoryBytes(c, lora, BaseFormat::kFp32, 2, 128, true));
  EXPECT_LT(EstimateLoraRoundMemoryBytes(c, lora, BaseFormat::kInt4, 2, 128, true),
            EstimateLoraRoundMemoryBytes(c, lora, BaseFormat::kInt4, 4, 128, true));
}

TEST(TransformerLoraTest, AdaptersTravelAloneAndClonesMatch) {
  auto model = TransformerLM::Create(TinyConfig()).value();
  RandomizeParameters(*model, 40);
  ASSERT_TRUE(model->AddLora(LoraConfig{}, 41).ok());
  RandomizeAdapters(*model, 42);
  const v1::ModelProto adapters = model->AdaptersToProto();
  EXPECT_EQ(adapters.parameters_size(), 2 * 7 * 2);
  auto copy = model->Clone();
  const auto tokens = RandomTokens(8, 37, 43);
  const float* a = model->Forward(tokens.data(), 1, 8, false);
  const std::vector<float> expected(a, a + 8 * 37);
  const float* b = copy->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(b[i], expected[i]);
  // Fresh adapters on the clone, then the originals back from the proto.
  RandomizeAdapters(*copy, 44);
  ASSERT_TRUE(copy->SetAdapters(adapters).ok());
  b = copy->Forward(tokens.data(), 1, 8, false);
  for (int i = 0; i < 8 * 37; ++i) ASSERT_EQ(b[i], expected[i]);
  v1::ModelProto bad = adapters;
  bad.mutable_parameters()->RemoveLast();
  EXPECT_FALSE(copy->SetAdapters(bad).ok());
}

// The full-parameter estimate against the heap after a step of every parameter.
TEST(TransformerLoraTest, TheFullRoundMemoryEstimateMatchesTheHeap) {
  TransformerConfig c;
  c.vocab_size = 4096;
  const int batch = 2, window = 128;
  const size_t before = mallinfo2().uordblks + mallinfo2().hblkhd;
  {
    auto model = TransformerLM::Create(c).value();
    auto adam = Adam::Create(AdamOptions{}).value();
    const auto tokens = RandomTokens(batch * window, c.vocab_size, 1);
    model->ZeroGrad();
    model->Loss(tokens.data(), tokens.data(), batch, window, true);
    adam->Step(model->trainable_parameters());
    const v1::ModelProto received = model->ToProto();  // the task's copy
    const v1::ModelProto delta = model->ToProto();     // Δ
    const double held = static_cast<double>(mallinfo2().uordblks + mallinfo2().hblkhd - before);
    const double estimate =
        static_cast<double>(EstimateFullRoundMemoryBytes(c, batch, window, /*adam=*/true));
    EXPECT_GT(estimate, 0.9 * held) << "held " << held << " estimate " << estimate;
    EXPECT_LT(estimate, 1.1 * held) << "held " << held << " estimate " << estimate;
  }
  EXPECT_GT(EstimateFullRoundMemoryBytes(c, 2, 128, true),
            EstimateFullRoundMemoryBytes(c, 2, 128, false));
}

}  // namespace
}  // namespace fedge::model
