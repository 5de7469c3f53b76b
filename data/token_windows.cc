#include "data/token_windows.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedge::data {

absl::StatusOr<TokenWindows> TokenWindows::Create(std::vector<int32_t> tokens, int len) {
  if (len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("TokenWindows: window length ", len));
  }
  if (static_cast<int64_t>(tokens.size()) <= len) {
    return absl::InvalidArgumentError(absl::StrCat("TokenWindows: ", tokens.size(),
                                                   " tokens, a window needs ", len + 1));
  }
  return TokenWindows(std::move(tokens), len);
}

void TokenWindows::Sample(base::Rng& rng, int batch, int32_t* tokens, int32_t* targets) const {
  const uint64_t starts = tokens_.size() - len_;
  for (int b = 0; b < batch; ++b) {
    const size_t s = static_cast<size_t>(rng.UniformInt(starts));
    std::copy_n(tokens_.begin() + s, len_, tokens + static_cast<size_t>(b) * len_);
    std::copy_n(tokens_.begin() + s + 1, len_, targets + static_cast<size_t>(b) * len_);
  }
}

int64_t TokenWindows::num_windows() const { return (size() - 1) / len_; }

void TokenWindows::Window(int64_t i, int32_t* tokens, int32_t* targets) const {
  const size_t s = static_cast<size_t>(i) * len_;
  std::copy_n(tokens_.begin() + s, len_, tokens);
  std::copy_n(tokens_.begin() + s + 1, len_, targets);
}

std::string ConcatenateDocuments(const std::vector<std::string>& texts) {
  return absl::StrJoin(texts, "\n\n");
}

}  // namespace fedge::data
