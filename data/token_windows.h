// Next-token examples from a token stream: a window of len + 1 consecutive tokens gives the
// inputs (its first len) and the targets (its last len, each the token after its input).
//
//   FEDGE_ASSIGN_OR_RETURN(TokenWindows w, TokenWindows::Create(std::move(ids), 128));
//   w.Sample(rng, 8, tokens, targets);          // 8 windows at uniform random starts
//   for (int64_t i = 0; i < w.num_windows(); ++i) w.Window(i, tokens, targets);  // evaluation
//
// Documents are joined into one stream by the caller (ConcatenateDocuments), so a window may
// span a document boundary, as in GPT-2's training.
#ifndef FEDGE_DATA_TOKEN_WINDOWS_H_
#define FEDGE_DATA_TOKEN_WINDOWS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/rng.h"

namespace fedge::data {

class TokenWindows {
 public:
  // INVALID_ARGUMENT when len < 1 or the stream has no more than len tokens.
  static absl::StatusOr<TokenWindows> Create(std::vector<int32_t> tokens, int len);

  // `batch` windows starting at uniform random positions, into tokens and targets
  // [batch × len].
  void Sample(base::Rng& rng, int batch, int32_t* tokens, int32_t* targets) const;
  // The non-overlapping windows that tile the stream from its start (the tail shorter than
  // a window is left out): num_windows() of them, window i starting at i·len.
  int64_t num_windows() const;
  void Window(int64_t i, int32_t* tokens, int32_t* targets) const;

  int len() const { return len_; }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  TokenWindows(std::vector<int32_t> tokens, int len) : tokens_(std::move(tokens)), len_(len) {}
  std::vector<int32_t> tokens_;
  int len_;
};

// The documents' texts joined by a blank line ("\n\n"), the separator the model learns as a
// document break.
std::string ConcatenateDocuments(const std::vector<std::string>& texts);

// The token stream of `docs` (any documents with a `text` member: TextDocument,
// BrownDocument) joined as ConcatenateDocuments joins them, encoded by `tokenizer` (a
// BpeTokenizer).
template <typename Tokenizer, typename Documents>
std::vector<int32_t> EncodeDocuments(const Tokenizer& tokenizer, const Documents& docs) {
  std::vector<std::string> texts;
  texts.reserve(docs.size());
  for (const auto& d : docs) texts.push_back(d.text);
  return tokenizer.Encode(ConcatenateDocuments(texts));
}

}  // namespace fedge::data

#endif  // FEDGE_DATA_TOKEN_WINDOWS_H_
