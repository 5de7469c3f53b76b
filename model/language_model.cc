#include "model/language_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/rng.h"
#include "base/status_macros.h"

namespace fedge::model {

absl::StatusOr<LanguageModel> LanguageModelFromProto(const v1::ModelProto& proto) {
  if (!proto.spec().has_transformer()) {
    return absl::InvalidArgumentError("language model: the file holds no language model");
  }
  if (proto.tokenizer().empty()) {
    return absl::InvalidArgumentError("language model: the file holds no tokenizer");
  }
  FEDGE_ASSIGN_OR_RETURN(data::BpeTokenizer tokenizer,
                         data::BpeTokenizer::Parse(proto.tokenizer()));
  if (tokenizer.vocab_size() != proto.spec().transformer().vocab_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("language model: the tokenizer has ", tokenizer.vocab_size(),
                     " tokens, the model's vocabulary ", proto.spec().transformer().vocab_size()));
  }
  FEDGE_ASSIGN_OR_RETURN(auto model, TransformerLM::FromProto(proto));
  return LanguageModel{std::move(model), std::move(tokenizer)};
}

v1::ModelProto LanguageModelToProto(TransformerLM& model, const data::BpeTokenizer& tokenizer) {
  v1::ModelProto proto = model.ToProto();
  proto.set_tokenizer(tokenizer.Serialize());
  return proto;
}

absl::StatusOr<std::vector<int32_t>> SampleTokens(const TransformerLM& model,
                                                  std::vector<int32_t> prompt,
                                                  const SampleOptions& options,
                                                  const std::function<void(int32_t)>& on_token) {
  if (options.max_tokens < 0 || options.top_k < 0 || !(options.temperature >= 0.0f)) {
    return absl::InvalidArgumentError(
        "sampling: max_tokens, top_k and temperature must not be negative");
  }
  const TransformerConfig& c = model.config();
  for (int32_t t : prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("sampling: prompt token ", t,
                                                     " is outside the vocabulary"));
    }
  }
  if (prompt.empty()) prompt.push_back('\n');  // byte tokens are their own ids
  const size_t keep = std::max(1, c.context / 2);
  if (prompt.size() > keep) prompt.erase(prompt.begin(), prompt.end() - keep);

  TransformerDecoder decoder(model);
  const float* logits = nullptr;
  for (int32_t t : prompt) logits = decoder.Step(t);
  base::Rng rng(options.seed);
  std::vector<int32_t> out;
  std::vector<int32_t> order(c.vocab_size);
  std::vector<double> p;
  while (static_cast<int>(out.size()) < options.max_tokens) {
    int32_t next;
    if (options.temperature == 0.0f) {
      next = static_cast<int32_t>(std::max_element(logits, logits + c.vocab_size) - logits);
    } else {
      std::iota(order.begin(), order.end(), 0);
      const int k = options.top_k > 0 ? std::min(options.top_k, c.vocab_size) : c.vocab_size;
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
      p.resize(k);
      const double mx = logits[order[0]];
      double sum = 0.0;
      for (int i = 0; i < k; ++i) {
        p[i] = std::exp((logits[order[i]] - mx) / options.temperature);
        sum += p[i];
      }
      double u = rng.Uniform() * sum;
      int i = 0;
      while (i + 1 < k && u >= p[i]) u -= p[i++];
      next = order[i];
    }
    out.push_back(next);
    if (on_token) on_token(next);
    if (decoder.position() == c.context) break;
    logits = decoder.Step(next);
  }
  return out;
}

absl::StatusOr<std::string> SampleText(const LanguageModel& lm, std::string_view prompt,
                                       const SampleOptions& options,
                                       const std::function<void(std::string_view)>& on_text) {
  std::function<void(int32_t)> on_token;
  if (on_text) {
    on_token = [&](int32_t t) { on_text(lm.tokenizer.token(t)); };
  }
  FEDGE_ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                         SampleTokens(*lm.model, lm.tokenizer.Encode(prompt), options, on_token));
  return lm.tokenizer.Decode(tokens);
}

}  // namespace fedge::model
