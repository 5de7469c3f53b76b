// A small language model for tests of language-model jobs: a byte-level BPE tokenizer trained
// on a repeated sentence and an untrained one-block transformer (d 32, 2 heads, SwiGLU 64,
// context 16), written as a base model file, plus held-out text as a text shard.
#ifndef FEDGE_TESTS_TINY_LANGUAGE_MODEL_H_
#define FEDGE_TESTS_TINY_LANGUAGE_MODEL_H_

#include <string>
#include <string_view>

#include "data/bpe.h"
#include "data/shard.h"
#include "gtest/gtest.h"
#include "model/language_model.h"
#include "model/serialize.h"
#include "model/transformer.h"
#include "tests/status_matchers.h"

namespace fedge::testing {

inline constexpr char kTinyLanguageModelSentence[] =
    "the cat sat on the mat and the dog sat on the log while the bird sang in the tree. ";

// `repeats` copies of kTinyLanguageModelSentence.
inline std::string TinyLanguageModelText(int repeats) {
  std::string text;
  for (int i = 0; i < repeats; ++i) text += kTinyLanguageModelSentence;
  return text;
}

// Writes DIR/base.pb (the tokenizer with `vocab` tokens and the model, initialized from
// `seed`) and DIR/eval.txtshard (one document of TinyLanguageModelText(20)). Use under
// ASSERT_NO_FATAL_FAILURE.
inline void WriteTinyLanguageModel(const std::string& dir, int vocab = 270, uint64_t seed = 1) {
  const std::string corpus = TinyLanguageModelText(40);
  auto tok = data::BpeTokenizer::Train({std::string_view(corpus)}, vocab);
  ASSERT_THAT(tok.status(), IsOk());
  model::TransformerConfig c;
  c.vocab_size = tok->vocab_size();
  c.dim = 32;
  c.num_layers = 1;
  c.num_heads = 2;
  c.ffn_dim = 64;
  c.context = 16;
  auto lm = model::TransformerLM::Create(c);
  ASSERT_THAT(lm.status(), IsOk());
  (*lm)->InitParameters(seed);
  ASSERT_THAT(model::SaveModel(dir + "/base.pb", model::LanguageModelToProto(**lm, *tok)), IsOk());
  ASSERT_THAT(data::WriteTextShard(dir + "/eval.txtshard", {{"held-out", TinyLanguageModelText(20)}}),
              IsOk());
}

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_TINY_LANGUAGE_MODEL_H_
