#include "data/brown.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::data {
namespace {

using ::testing::HasSubstr;

class BrownTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "brown_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << text;
  }
  std::string dir_;
};

TEST_F(BrownTest, StripsTagsJoinsWordsAndKeepsParagraphs) {
  Write("ca01",
        "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\n"
        "\tIt/pps did/dod n't/* a/b/c ./.\n");
  Write("ck02", "\n\tScotty/np did/dod not/* go/vb back/rb ./.\n\tHe/pps left/vbd ./.\n");
  Write("README", "not a document");
  auto docs = LoadBrownCorpus(dir_);
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 2u);
  EXPECT_EQ((*docs)[0].id, "ca01");
  EXPECT_EQ((*docs)[0].genre, 'a');
  // Quote tokens become ", a word keeps everything before its last '/'.
  EXPECT_EQ((*docs)[0].text, "The Fulton jury said \" no evidence \" .\nIt did n't a/b .");
  EXPECT_EQ((*docs)[0].words, 14);
  // Lines of one paragraph join with spaces.
  EXPECT_EQ((*docs)[1].text, "Scotty did not go back . He left .");
  EXPECT_FALSE(IsFictionGenre('a'));
  EXPECT_FALSE(IsFictionGenre('j'));
  EXPECT_TRUE(IsFictionGenre('k'));
  EXPECT_TRUE(IsFictionGenre('r'));
}

TEST_F(BrownTest, ErrorsNameWhatIsWrong) {
  EXPECT_THAT(std::string(LoadBrownCorpus(dir_ + "/missing").status().message()),
              HasSubstr("is not a directory"));
  EXPECT_THAT(std::string(LoadBrownCorpus(dir_).status().message()),
              HasSubstr("no document files"));
  Write("cb07", "\tGood/jj line/nn ./.\n\tbad token here/nn\n");
  const absl::Status s = LoadBrownCorpus(dir_).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cb07 line 2"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("'bad'"));
  Write("cb07", "\n\n");
  EXPECT_THAT(std::string(LoadBrownCorpus(dir_).status().message()), HasSubstr("no words"));
}

TEST_F(BrownTest, SplitHoldsOutEachDocumentsEndAtABoundary) {
  std::vector<BrownDocument> docs(2);
  docs[0].id = "cj01";
  docs[0].genre = 'j';
  docs[0].text = "one two three four five six seven eight nine ten\neleven twelve";
  docs[1].id = "cp03";
  docs[1].genre = 'p';
  docs[1].text = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
  const BrownSplit split = SplitBrown(docs, 0.1);
  ASSERT_EQ(split.pretrain.size(), 1u);
  ASSERT_EQ(split.finetune.size(), 1u);
  // 90% of 62 bytes is byte 55, inside "eleven": the cut moves on to the next space.
  EXPECT_EQ(split.pretrain[0].text, "one two three four five six seven eight nine ten\neleven");
  EXPECT_EQ(split.pretrain_test[0].text, "twelve");
  EXPECT_EQ(split.finetune[0].text, "alpha beta gamma delta epsilon zeta eta theta iota");
  EXPECT_EQ(split.finetune_test[0].text, "kappa");
  EXPECT_EQ(split.finetune_test[0].id, "cp03");
}

// The real corpus, as scripts/setup.sh fetches it (skipped where it was not fetched).
TEST(BrownCorpusTest, TheFetchedCorpusHas500DocumentsIn15Genres) {
  const std::string dir = DefaultBrownDir();
  if (!std::filesystem::exists(dir + "/.complete")) {
    GTEST_SKIP() << dir << " not fetched (scripts/fetch-datasets.sh)";
  }
  auto docs = LoadBrownCorpus(dir);
  ASSERT_TRUE(docs.ok()) << docs.status();
  ASSERT_EQ(docs->size(), 500u);
  int64_t words = 0;
  std::map<char, int> genres;
  for (const BrownDocument& d : *docs) {
    words += d.words;
    ++genres[d.genre];
  }
  EXPECT_EQ(genres.size(), 15u);
  EXPECT_GT(words, 1'100'000);
  EXPECT_LT(words, 1'200'000);
  const BrownSplit split = SplitBrown(*docs);
  EXPECT_EQ(split.finetune.size(), 126u);  // ck, cl, cm, cn, cp, cr
  EXPECT_EQ(split.pretrain.size(), 374u);
  EXPECT_EQ(genres['k'] + genres['l'] + genres['m'] + genres['n'] + genres['p'] + genres['r'], 126);
  const auto by_document = PartitionBrown(split.finetune, BrownPartition::kByDocument);
  const auto by_genre = PartitionBrown(split.finetune, BrownPartition::kByGenre);
  EXPECT_EQ(by_document.size(), 126u);
  ASSERT_EQ(by_genre.size(), 6u);
  EXPECT_EQ(by_genre[0].size(), static_cast<size_t>(genres['k']));
  EXPECT_EQ(by_genre[5].front().id.substr(0, 2), "cr");
}

TEST(BrownPartitionTest, ByDocumentOrByGenreInIdOrder) {
  std::vector<BrownDocument> docs;
  for (const char* id : {"cl02", "ck01", "cr01", "cl01", "ck02"}) {
    BrownDocument d;
    d.id = id;
    d.genre = id[1];
    d.text = std::string("text of ") + id;
    docs.push_back(d);
  }
  const auto one = PartitionBrown(docs, BrownPartition::kByDocument);
  ASSERT_EQ(one.size(), 5u);
  EXPECT_EQ(one[0][0].id, "ck01");
  EXPECT_EQ(one[0][0].text, "text of ck01");
  EXPECT_EQ(one[4][0].id, "cr01");
  const auto genre = PartitionBrown(docs, BrownPartition::kByGenre);
  ASSERT_EQ(genre.size(), 3u);
  ASSERT_EQ(genre[1].size(), 2u);
  EXPECT_EQ(genre[1][0].id, "cl01");
  EXPECT_EQ(genre[1][1].id, "cl02");
  EXPECT_EQ(genre[2][0].id, "cr01");
}

}  // namespace
}  // namespace fedge::data
