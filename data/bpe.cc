#include "data/bpe.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fedge::data {
namespace {

constexpr int kMaxVocab = 1 << 20;
constexpr char kHeader[] = "fedge-bpe 1";

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

enum class Kind { kWord, kOther, kSpace };

Kind KindOf(unsigned char c) {
  if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return Kind::kSpace;
  // Bytes ≥ 0x80 (UTF-8 sequences) go with words, so that accented letters stay in them.
  if (absl::ascii_isalnum(c) || c >= 0x80) return Kind::kWord;
  return Kind::kOther;
}

}  // namespace

BpeTokenizer::BpeTokenizer() {
  bytes_.reserve(256);
  for (int b = 0; b < 256; ++b) bytes_.push_back(std::string(1, static_cast<char>(b)));
}

void BpeTokenizer::AddMerge(int32_t a, int32_t b) {
  rank_[PairKey(a, b)] = static_cast<int32_t>(merges_.size());
  merges_.emplace_back(a, b);
  bytes_.push_back(bytes_[a] + bytes_[b]);
}

std::vector<std::string_view> BpeTokenizer::Chunks(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t start = i;
    Kind kind = KindOf(c);
    if (c == ' ' && i + 1 < text.size() &&
        KindOf(static_cast<unsigned char>(text[i + 1])) != Kind::kSpace) {
      ++i;  // the space before a run goes with it
      kind = KindOf(static_cast<unsigned char>(text[i]));
    } else if (kind == Kind::kSpace) {
      out.push_back(text.substr(i, 1));
      ++i;
      continue;
    }
    while (i < text.size() && KindOf(static_cast<unsigned char>(text[i])) == kind) ++i;
    out.push_back(text.substr(start, i - start));
  }
  return out;
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::Train(const std::vector<std::string_view>& texts,
                                                 int vocab_size,
                                                 const std::function<void(int)>& progress) {
  if (vocab_size < 256 || vocab_size > kMaxVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BPE: vocab_size ", vocab_size, " must be in [256, ", kMaxVocab, "]"));
  }
  BpeTokenizer tok;
  // Distinct chunks with their counts, as token sequences.
  absl::flat_hash_map<std::string_view, int64_t> chunk_counts;
  for (std::string_view text : texts) {
    for (std::string_view chunk : Chunks(text)) ++chunk_counts[chunk];
  }
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  words.reserve(chunk_counts.size());
  for (const auto& [chunk, count] : chunk_counts) {
    if (chunk.size() < 2) continue;  // nothing to merge
    std::vector<int32_t> w(chunk.size());
    for (size_t i = 0; i < chunk.size(); ++i) w[i] = static_cast<unsigned char>(chunk[i]);
    words.push_back(std::move(w));
    counts.push_back(count);
  }
  // Pair counts, and which words hold each pair (a superset: entries go stale as words
  // change and are checked when used).
  absl::flat_hash_map<uint64_t, int64_t> pair_counts;
  absl::flat_hash_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w) {
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = PairKey(words[w][i], words[w][i + 1]);
      pair_counts[key] += counts[w];
      where[key].push_back(static_cast<int32_t>(w));
    }
  }
  absl::flat_hash_set<int32_t> seen;
  while (tok.vocab_size() < vocab_size) {
    uint64_t best = 0;
    int64_t best_count = 1;  // a pair must occur at least twice
    for (const auto& [key, count] : pair_counts) {
      if (count > best_count || (count == best_count && count > 1 && key < best)) {
        best = key;
        best_count = count;
      }
    }
    if (best_count < 2) break;
    const int32_t a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFFu);
    const int32_t merged = tok.vocab_size();
    tok.AddMerge(a, b);
    seen.clear();
    std::vector<int32_t> holders = std::move(where[best]);
    where.erase(best);
    for (int32_t w : holders) {
      if (!seen.insert(w).second) continue;
      std::vector<int32_t>& word = words[w];
      const int64_t c = counts[w];
      bool has = false;
      for (size_t i = 0; i + 1 < word.size(); ++i) has |= word[i] == a && word[i + 1] == b;
      if (!has) continue;  // a stale entry
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        auto it = pair_counts.find(PairKey(word[i], word[i + 1]));
        if ((it->second -= c) == 0) pair_counts.erase(it);
      }
      std::vector<int32_t> next;
      next.reserve(word.size());
      for (size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(word[i]);
        }
      }
      word = std::move(next);
      for (size_t i = 0; i + 1 < word.size(); ++i) {
        const uint64_t key = PairKey(word[i], word[i + 1]);
        pair_counts[key] += c;
        if (word[i] == merged || word[i + 1] == merged) where[key].push_back(w);
      }
    }
    if (progress && tok.merges() % 256 == 0) progress(tok.merges());
  }
  return tok;
}

absl::StatusOr<BpeTokenizer> BpeTokenizer::Parse(std::string_view serialized) {
  // absl::string_view is its own type in Debian's Abseil.
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(serialized.data(), serialized.size()), '\n');
  if (lines.empty() || lines[0] != kHeader) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE: the first line must be \"", kHeader, "\""));
  }
  BpeTokenizer tok;
  for (size_t n = 1; n < lines.size(); ++n) {
    if (lines[n].empty() && n + 1 == lines.size()) break;  // the final newline
    std::vector<absl::string_view> parts = absl::StrSplit(lines[n], ' ');
    int32_t a = -1, b = -1;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &a) || !absl::SimpleAtoi(parts[1], &b) ||
        a < 0 || b < 0 || a >= tok.vocab_size() || b >= tok.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BPE: line ", n + 1, " is not a merge of two earlier tokens: '",
          lines[n].substr(0, 40), "'"));
    }
    if (tok.vocab_size() >= kMaxVocab) {
      return absl::InvalidArgumentError(absl::StrCat("BPE: more than ", kMaxVocab, " tokens"));
    }
    if (tok.rank_.contains(PairKey(a, b))) {
      return absl::InvalidArgumentError(absl::StrCat("BPE: line ", n + 1, " repeats a merge"));
    }
    tok.AddMerge(a, b);
  }
  return tok;
}

std::string BpeTokenizer::Serialize() const {
  std::string out = absl::StrCat(kHeader, "\n");
  for (const auto& [a, b] : merges_) absl::StrAppend(&out, a, " ", b, "\n");
  return out;
}

void BpeTokenizer::EncodeChunk(std::string_view chunk, std::vector<int32_t>& out) const {
  std::vector<int32_t> s(chunk.size());
  for (size_t i = 0; i < chunk.size(); ++i) s[i] = static_cast<unsigned char>(chunk[i]);
  while (s.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max();
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = rank_.find(PairKey(s[i], s[i + 1]));
      if (it != rank_.end() && it->second < best_rank) best_rank = it->second;
    }
    if (best_rank == std::numeric_limits<int32_t>::max()) break;
    const auto [a, b] = merges_[best_rank];
    const int32_t merged = 256 + best_rank;
    size_t j = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
        s[j++] = merged;
        ++i;
      } else {
        s[j++] = s[i];
      }
    }
    s.resize(j);
  }
  out.insert(out.end(), s.begin(), s.end());
}

std::vector<int32_t> BpeTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  for (std::string_view chunk : Chunks(text)) EncodeChunk(chunk, out);
  return out;
}

std::string BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += bytes_[id];
  return out;
}

}  // namespace fedge::data
