// A byte-level byte-pair-encoding tokenizer (Sennrich et al. 2016, on bytes as GPT-2 does):
// tokens 0–255 are the bytes, token 256 + i is merge i (the concatenation of an earlier
// pair). Any byte string encodes, and Decode(Encode(s)) == s for every s.
//
//   FEDGE_ASSIGN_OR_RETURN(BpeTokenizer tok, BpeTokenizer::Train(texts, 4096));
//   std::vector<int32_t> ids = tok.Encode("The jury said");
//   std::string back = tok.Decode(ids);                      // "The jury said"
//   std::string file = tok.Serialize();                      // stored with the model
//
// Training splits text into chunks that merges never cross: a run of letters or digits, or
// of other non-space bytes, each with the one space before it, and every other space or
// newline on its own. It then repeats: count adjacent token pairs over the chunks (weighted
// by how often each chunk occurs), merge the most frequent pair (ties: the smaller pair of
// ids), until the vocabulary has `vocab_size` tokens or no pair occurs twice. Encoding
// splits the same way and applies, within each chunk, the earliest-learned merge present
// until none applies: the merges' order, not counts, decides.
//
// Serialized form (text): the line "fedge-bpe 1", then one merge per line, "a b" (the ids
// of the pair, each below the merge's own id).
#ifndef FEDGE_DATA_BPE_H_
#define FEDGE_DATA_BPE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace fedge::data {

class BpeTokenizer {
 public:
  // REQUIRES nothing of the texts (any bytes). INVALID_ARGUMENT when vocab_size < 256 or
  // above 1 << 20. `progress` (may be empty) is called every 256 merges with the count.
  static absl::StatusOr<BpeTokenizer> Train(const std::vector<std::string_view>& texts,
                                            int vocab_size,
                                            const std::function<void(int)>& progress = {});
  // From Serialize()'s form; INVALID_ARGUMENT naming the line when it is not one.
  static absl::StatusOr<BpeTokenizer> Parse(std::string_view serialized);

  std::vector<int32_t> Encode(std::string_view text) const;
  // The bytes of the tokens, concatenated. REQUIRES every id < vocab_size().
  std::string Decode(const std::vector<int32_t>& ids) const;
  std::string Serialize() const;

  int vocab_size() const { return static_cast<int>(bytes_.size()); }
  int merges() const { return static_cast<int>(merges_.size()); }
  const std::string& token(int32_t id) const { return bytes_[id]; }

  // The chunks Train and Encode work on, in order (their concatenation is `text`).
  static std::vector<std::string_view> Chunks(std::string_view text);

 private:
  BpeTokenizer();
  void AddMerge(int32_t a, int32_t b);
  void EncodeChunk(std::string_view chunk, std::vector<int32_t>& out) const;

  std::vector<std::pair<int32_t, int32_t>> merges_;  // merge i makes token 256 + i
  absl::flat_hash_map<uint64_t, int32_t> rank_;      // pair → merge index
  std::vector<std::string> bytes_;                   // token → its bytes
};

}  // namespace fedge::data

#endif  // FEDGE_DATA_BPE_H_
