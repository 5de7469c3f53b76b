#include "data/bpe.h"

#include <filesystem>
#include <string>
#include <vector>

#include "base/rng.h"
#include "data/brown.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(BpeTest, ChunksKeepTheSpaceBeforeARunAndConcatenateToTheText) {
  const std::string text = "The jury's  verdict:\n \"guilty\" 42x ";
  std::vector<std::string> chunks;
  std::string joined;
  for (std::string_view c : BpeTokenizer::Chunks(text)) {
    chunks.emplace_back(c);
    joined += c;
  }
  EXPECT_EQ(joined, text);
  EXPECT_THAT(chunks, ElementsAre("The", " jury", "'", "s", " ", " verdict", ":", "\n", " \"",
                                  "guilty", "\"", " 42x", " "));
}

TEST(BpeTest, LearnsTheMostFrequentPairsFirstAndStopsWhenNoPairRepeats) {
  // "low" ×5, "lower" ×2, "newest" ×6, "widest" ×3 (Sennrich et al.'s example, as chunks
  // with their leading spaces).
  std::string text;
  for (int i = 0; i < 5; ++i) text += " low";
  for (int i = 0; i < 2; ++i) text += " lower";
  for (int i = 0; i < 6; ++i) text += " newest";
  for (int i = 0; i < 3; ++i) text += " widest";
  auto tok = BpeTokenizer::Train({text}, 1000);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // " l", " n", " w" occur 7, 6, 3 times; "es" and "st" 9: the first merge is the most
  // frequent pair, ties to the smaller ids ('e' 's' < 's' 't').
  EXPECT_EQ(tok->token(256), "es");
  EXPECT_EQ(tok->token(257), "est");
  // Every chunk ends up one token, and then no pair repeats: training stops by itself.
  EXPECT_EQ(tok->Encode(" newest").size(), 1u);
  EXPECT_EQ(tok->Encode(" low").size(), 1u);
  EXPECT_EQ(tok->Encode(" lower").size(), 1u);
  EXPECT_LT(tok->vocab_size(), 1000);
  // An unseen word still encodes, through the learned pieces.
  EXPECT_EQ(tok->Decode(tok->Encode(" lowest")), " lowest");
  EXPECT_LT(tok->Encode(" lowest").size(), 7u);
}

TEST(BpeTest, RoundTripsAnyBytesExactly) {
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "the cat sat on the mat, and the dog sat too. ";
  auto tok = BpeTokenizer::Train({corpus, "naïve café — déjà vu\n"}, 270);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 270);
  base::Rng rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng.UniformInt(64), '\0');
    for (char& c : s) c = static_cast<char>(rng.UniformInt(256));  // any byte, 0 and invalid UTF-8
    ASSERT_EQ(tok->Decode(tok->Encode(s)), s) << trial;
  }
  for (const std::string s : {"", " ", "\n\n", "the cat", "naïve café — déjà vu", "  x  "}) {
    EXPECT_EQ(tok->Decode(tok->Encode(s)), s);
  }
  EXPECT_LT(tok->Encode(corpus).size(), corpus.size() / 2);  // it compresses what it saw
}

TEST(BpeTest, SerializesAndParsesBackAndRefusesMalformedFiles) {
  auto tok = BpeTokenizer::Train({"abab abab abab cdcd cdcd"}, 270);
  ASSERT_TRUE(tok.ok());
  const std::string file = tok->Serialize();
  auto back = BpeTokenizer::Parse(file);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->Serialize(), file);
  EXPECT_EQ(back->Encode("abab cdcd"), tok->Encode("abab cdcd"));
  EXPECT_THAT(std::string(BpeTokenizer::Parse("bpe\n1 2\n").status().message()),
              HasSubstr("first line"));
  EXPECT_THAT(std::string(BpeTokenizer::Parse("fedge-bpe 1\n97 98\n256 300\n").status().message()),
              HasSubstr("line 3"));
  EXPECT_THAT(std::string(BpeTokenizer::Parse("fedge-bpe 1\n97 x\n").status().message()),
              HasSubstr("line 2"));
  EXPECT_THAT(std::string(BpeTokenizer::Parse("fedge-bpe 1\n97 98\n97 98\n").status().message()),
              HasSubstr("repeats"));
  EXPECT_FALSE(BpeTokenizer::Train({"x"}, 255).ok());
}

// On the fetched Brown corpus (skipped where it was not fetched): a 4k vocabulary trained on
// the non-fiction pre-training text round-trips the fiction test text and compresses it.
TEST(BpeTest, BrownCorpusVocabularyRoundTripsHeldOutFiction) {
  const std::string dir = DefaultBrownDir();
  if (!std::filesystem::exists(dir + "/.complete")) {
    GTEST_SKIP() << dir << " not fetched (scripts/fetch-datasets.sh)";
  }
  auto docs = LoadBrownCorpus(dir);
  ASSERT_TRUE(docs.ok()) << docs.status();
  const BrownSplit split = SplitBrown(*docs);
  std::vector<std::string_view> texts;
  for (const BrownDocument& d : split.pretrain) texts.push_back(d.text);
  auto tok = BpeTokenizer::Train(texts, 4096);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 4096);
  int64_t bytes = 0, tokens = 0;
  for (const BrownDocument& d : split.finetune_test) {
    const std::vector<int32_t> ids = tok->Encode(d.text);
    ASSERT_EQ(tok->Decode(ids), d.text) << d.id;
    bytes += static_cast<int64_t>(d.text.size());
    tokens += static_cast<int64_t>(ids.size());
  }
  const double per_token = static_cast<double>(bytes) / static_cast<double>(tokens);
  std::printf("Brown: 4096-token BPE from %zu non-fiction documents: %.2f bytes per token on "
              "the fiction test text (%lld bytes)\n",
              split.pretrain.size(), per_token, static_cast<long long>(bytes));
  EXPECT_GT(per_token, 3.0);
}

}  // namespace
}  // namespace fedge::data
