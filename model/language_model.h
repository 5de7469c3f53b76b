// A language model as it travels and is used: the transformer (model/transformer.h) with
// its tokenizer (data/bpe.h) in one ModelProto, and text generation from it.
//
//   FEDGE_ASSIGN_OR_RETURN(v1::ModelProto file, LoadModel("lm_base.pb"));
//   FEDGE_ASSIGN_OR_RETURN(LanguageModel lm, LanguageModelFromProto(file));
//   FEDGE_ASSIGN_OR_RETURN(std::string text, SampleText(lm, "The jury", {}));
#ifndef FEDGE_MODEL_LANGUAGE_MODEL_H_
#define FEDGE_MODEL_LANGUAGE_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/bpe.h"
#include "model/transformer.h"
#include "proto/model.pb.h"

namespace fedge::model {

struct LanguageModel {
  std::unique_ptr<TransformerLM> model;
  data::BpeTokenizer tokenizer;
};

// The model and tokenizer of a file: INVALID_ARGUMENT when the file holds no language model,
// no tokenizer or a tokenizer whose vocabulary differs from the model's, or bad parameters.
absl::StatusOr<LanguageModel> LanguageModelFromProto(const v1::ModelProto& proto);
v1::ModelProto LanguageModelToProto(TransformerLM& model, const data::BpeTokenizer& tokenizer);

struct SampleOptions {
  int max_tokens = 100;
  float temperature = 0.8f;  // 0: greedy (the most likely token every time)
  int top_k = 40;            // sample among the k most likely tokens; 0: all
  uint64_t seed = 1;
};

// Feeds the prompt's tokens through a KV-cached decoder, then samples up to max_tokens
// tokens, stopping early when the context is full (a prompt longer than half the context
// keeps only its last context/2 tokens). An empty prompt starts from a paragraph break.
// Calls `on_token` (may be empty) with each generated token as it comes. Returns the
// generated tokens. INVALID_ARGUMENT for negative max_tokens, top_k or temperature.
absl::StatusOr<std::vector<int32_t>> SampleTokens(
    const TransformerLM& model, std::vector<int32_t> prompt, const SampleOptions& options,
    const std::function<void(int32_t)>& on_token = {});

// SampleTokens on the encoded prompt; returns the generated text (without the prompt).
absl::StatusOr<std::string> SampleText(const LanguageModel& lm, std::string_view prompt,
                                       const SampleOptions& options,
                                       const std::function<void(std::string_view)>& on_text = {});

}  // namespace fedge::model

#endif  // FEDGE_MODEL_LANGUAGE_MODEL_H_
