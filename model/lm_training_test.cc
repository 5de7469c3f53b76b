#include "model/lm_training.h"

#include <cmath>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::model {
namespace {

TransformerConfig SmallConfig() {
  TransformerConfig c;
  c.vocab_size = 29;
  c.dim = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.ffn_dim = 32;
  c.context = 16;
  return c;
}

// Each token is followed by one of two successors fixed per token.
data::TokenWindows BigramWindows(int len) {
  base::Rng rng(1);
  std::vector<int32_t> next(29 * 2);
  for (auto& v : next) v = static_cast<int32_t>(rng.UniformInt(29));
  std::vector<int32_t> s(5000);
  int32_t t = 0;
  for (auto& v : s) v = t = next[t * 2 + static_cast<int>(rng.UniformInt(2))];
  return data::TokenWindows::Create(s, len).value();
}

TEST(LmTrainingTest, LearnsABigramChain) {
  auto model = TransformerLM::Create(SmallConfig()).value();
  model->InitParameters(2);
  const data::TokenWindows windows = BigramWindows(16);
  const double before = EvaluateLanguageModel(*model, windows).loss;
  LmTrainOptions o;
  o.steps = 200;
  o.batch = 8;
  o.warmup_steps = 10;
  o.learning_rate = 1e-2f;
  std::vector<int64_t> reported;
  const float last = TrainLanguageModel(*model, windows, o, 50, [&](const LmTrainProgress& p) {
                       reported.push_back(p.step);
                       EXPECT_GT(p.tokens_per_second, 0.0);
                     }).value();
  EXPECT_EQ(reported, (std::vector<int64_t>{50, 100, 150, 200}));
  const LmEvaluation after = EvaluateLanguageModel(*model, windows);
  EXPECT_NEAR(before, std::log(29.0), 0.1);
  // Two equally likely successors: the best possible loss is log 2.
  EXPECT_LT(after.loss, std::log(2.0) + 0.15);
  EXPECT_NEAR(after.perplexity, std::exp(after.loss), 1e-9);
  EXPECT_EQ(after.tokens, windows.num_windows() * 16);
  EXPECT_LT(last, 1.0f);
}

TEST(LmTrainingTest, TwoThreadsTrainAsOne) {
  const data::TokenWindows windows = BigramWindows(16);
  LmTrainOptions o;
  o.steps = 20;
  o.batch = 5;  // an uneven split
  std::vector<std::vector<float>> finals;
  std::vector<float> losses;
  for (int threads : {1, 2}) {
    auto model = TransformerLM::Create(SmallConfig()).value();
    model->InitParameters(3);
    o.threads = threads;
    losses.push_back(TrainLanguageModel(*model, windows, o, 20).value());
    finals.push_back(model->FindParameter("layers.1.ffn.w2.weight")->value);
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-5f * losses[0]);
  for (size_t i = 0; i < finals[0].size(); ++i) {
    ASSERT_NEAR(finals[0][i], finals[1][i], 1e-4f) << i;
  }
}

TEST(LmTrainingTest, RejectsBadOptions) {
  auto model = TransformerLM::Create(SmallConfig()).value();
  LmTrainOptions o;
  o.threads = 9;  // more than the batch
  EXPECT_FALSE(TrainLanguageModel(*model, BigramWindows(16), o).ok());
  o = LmTrainOptions();
  EXPECT_THAT(std::string(TrainLanguageModel(*model, BigramWindows(17), o).status().message()),
              ::testing::HasSubstr("context"));
}

TEST(LmTrainingTest, ClipsTheGlobalGradientNorm) {
  Parameter a = MakeParameter("a", {2}), b = MakeParameter("b", {1});
  a.grad = {3.0f, 0.0f};
  b.grad = {4.0f};
  EXPECT_DOUBLE_EQ(ClipGradientNorm({&a, &b}, 10.0), 5.0);
  EXPECT_FLOAT_EQ(a.grad[0], 3.0f);  // under the bound: unchanged
  EXPECT_DOUBLE_EQ(ClipGradientNorm({&a, &b}, 1.0), 5.0);
  EXPECT_NEAR(a.grad[0], 0.6f, 1e-6f);
  EXPECT_NEAR(b.grad[0], 0.8f, 1e-6f);
}

}  // namespace
}  // namespace fedge::model
