#include "model/language_model.h"

#include <string>
#include <string_view>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::model {
namespace {

using ::testing::HasSubstr;

data::BpeTokenizer SmallTokenizer() {
  const std::string text = "the cat sat on the mat and the cat ate the rat";
  return data::BpeTokenizer::Train({std::string_view(text)}, 262).value();
}

LanguageModel SmallModel(uint64_t seed) {
  data::BpeTokenizer tok = SmallTokenizer();
  TransformerConfig c;
  c.vocab_size = tok.vocab_size();
  c.dim = 16;
  c.num_layers = 1;
  c.num_heads = 2;
  c.ffn_dim = 16;
  c.context = 12;
  auto model = TransformerLM::Create(c).value();
  base::Rng rng(seed);
  for (Parameter* p : model->parameters()) {
    for (float& v : p->value) v = static_cast<float>(p->shape.size() == 1 ? 1.0 : rng.Normal());
  }
  return LanguageModel{std::move(model), std::move(tok)};
}

TEST(LanguageModelTest, RoundTripsWithItsTokenizer) {
  LanguageModel lm = SmallModel(1);
  const v1::ModelProto proto = LanguageModelToProto(*lm.model, lm.tokenizer);
  LanguageModel back = LanguageModelFromProto(proto).value();
  EXPECT_EQ(back.tokenizer.Serialize(), lm.tokenizer.Serialize());
  EXPECT_EQ(back.model->FindParameter("norm.weight")->value,
            lm.model->FindParameter("norm.weight")->value);

  v1::ModelProto bad = proto;
  bad.clear_tokenizer();
  EXPECT_THAT(std::string(LanguageModelFromProto(bad).status().message()),
              HasSubstr("no tokenizer"));
  bad = proto;
  bad.set_tokenizer("fedge-bpe 1\n");  // 256 tokens
  EXPECT_THAT(std::string(LanguageModelFromProto(bad).status().message()),
              HasSubstr("256 tokens"));
  bad = proto;
  bad.mutable_spec()->clear_transformer();
  EXPECT_FALSE(LanguageModelFromProto(bad).ok());
}

TEST(LanguageModelTest, SamplingIsSeededAndTopOneIsGreedy) {
  LanguageModel lm = SmallModel(2);
  SampleOptions o;
  o.max_tokens = 6;
  const auto a = SampleTokens(*lm.model, {1, 2, 3}, o).value();
  const auto b = SampleTokens(*lm.model, {1, 2, 3}, o).value();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 6u);
  o.temperature = 5.0f;
  o.top_k = 0;
  bool differs = false;
  for (uint64_t seed = 2; seed < 12 && !differs; ++seed) {
    o.seed = seed;
    differs = SampleTokens(*lm.model, {1, 2, 3}, o).value() != a;
  }
  EXPECT_TRUE(differs);

  SampleOptions greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 6;
  SampleOptions top1;
  top1.top_k = 1;
  top1.max_tokens = 6;
  top1.seed = 99;
  const auto g = SampleTokens(*lm.model, {4, 5}, greedy).value();
  EXPECT_EQ(SampleTokens(*lm.model, {4, 5}, top1).value(), g);
  // Greedy: each token is the arg-max of the full forward's last logits.
  std::vector<int32_t> seq = {4, 5};
  for (int32_t t : g) {
    const float* logits = lm.model->Forward(seq.data(), 1, static_cast<int>(seq.size()), false);
    const float* last = logits + (seq.size() - 1) * lm.model->config().vocab_size;
    EXPECT_EQ(t, std::max_element(last, last + lm.model->config().vocab_size) - last);
    seq.push_back(t);
  }
}

TEST(LanguageModelTest, StopsWhenTheContextIsFull) {
  LanguageModel lm = SmallModel(3);
  SampleOptions o;
  o.max_tokens = 100;
  int calls = 0;
  // A 10-token prompt keeps its last 6 (context 12 / 2); 12 − 6 + 1 tokens fit after it.
  const auto out =
      SampleTokens(*lm.model, std::vector<int32_t>(10, 7), o, [&](int32_t) { ++calls; }).value();
  EXPECT_EQ(out.size(), 7u);
  EXPECT_EQ(calls, 7);
  o.top_k = -1;
  EXPECT_FALSE(SampleTokens(*lm.model, {1}, o).ok());
  EXPECT_FALSE(SampleTokens(*lm.model, {100000}, SampleOptions{}).ok());
}

TEST(LanguageModelTest, SampleTextStreamsTheDecodedTokens) {
  LanguageModel lm = SmallModel(4);
  std::string streamed;
  SampleOptions o;
  o.max_tokens = 5;
  const std::string text =
      SampleText(lm, "the cat", o, [&](std::string_view s) { streamed += s; }).value();
  EXPECT_EQ(text, streamed);
  EXPECT_FALSE(text.empty());
}

}  // namespace
}  // namespace fedge::model
