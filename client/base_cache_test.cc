#include "client/base_cache.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "privacy/sodium.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace fedge::client {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

std::string Bytes(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + 7 * i + (i >> 8));
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(BaseCacheTest, ADownloadInChunksBecomesTheBaseOnlyWithItsDigest) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path() + "/bases";
  auto cache = BaseCache::Open(dir, 1 << 20);
  ASSERT_THAT(cache, IsOk());
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  const std::string file = Bytes(10000, 3);
  const std::string sha = privacy::Sha256Hex(file);
  EXPECT_THAT(cache->Find(sha), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(cache->Begin(sha, 0, file.size()), IsOk());
  ASSERT_THAT(cache->Append(0, file.substr(0, 4096)), IsOk());
  EXPECT_THAT(cache->Complete(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                          HasSubstr("4096 of 10000 bytes")));
  // Offsets must follow what is kept; nothing may run past the announced size.
  EXPECT_THAT(cache->Append(100, "x"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(cache->Append(4096, Bytes(6000, 1)), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(cache->Append(4096, file.substr(4096)), IsOk());
  auto path = cache->Complete();
  ASSERT_THAT(path, IsOk());
  EXPECT_EQ(*path, dir + "/" + sha + ".fedgemodel");
  EXPECT_EQ(ReadAll(*path), file);
  EXPECT_THAT(cache->Find(sha), IsOk());
  EXPECT_EQ(cache->PartialBytes(sha), 0);
}

TEST(BaseCacheTest, AnInterruptedDownloadResumesAfterARestart) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path();
  const std::string file = Bytes(5000, 9);
  const std::string sha = privacy::Sha256Hex(file);
  {
    auto cache = BaseCache::Open(dir, 1 << 20);
    ASSERT_THAT(cache, IsOk());
    ASSERT_THAT(cache->Begin(sha, 0, file.size()), IsOk());
    ASSERT_THAT(cache->Append(0, file.substr(0, 3000)), IsOk());
  }  // the device stops here
  auto cache = BaseCache::Open(dir, 1 << 20);
  ASSERT_THAT(cache, IsOk());
  EXPECT_EQ(cache->PartialBytes(sha), 3000);
  // A resume that does not start where the kept bytes end drops them.
  EXPECT_THAT(cache->Begin(sha, 2000, file.size()), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(cache->PartialBytes(sha), 0);
  ASSERT_THAT(cache->Begin(sha, 0, file.size()), IsOk());
  ASSERT_THAT(cache->Append(0, file.substr(0, 3000)), IsOk());
  ASSERT_THAT(cache->Begin(sha, 3000, file.size()), IsOk());
  ASSERT_THAT(cache->Append(3000, file.substr(3000)), IsOk());
  auto path = cache->Complete();
  ASSERT_THAT(path, IsOk());
  EXPECT_EQ(ReadAll(*path), file);
}

TEST(BaseCacheTest, BytesThatAreNotTheDigestAreDroppedAndNeverFound) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path();
  auto cache = BaseCache::Open(dir, 1 << 20);
  ASSERT_THAT(cache, IsOk());
  const std::string file = Bytes(2000, 5);
  const std::string sha = privacy::Sha256Hex(file);
  std::string other = file;
  other[1234] ^= 1;
  ASSERT_THAT(cache->Begin(sha, 0, other.size()), IsOk());
  ASSERT_THAT(cache->Append(0, other), IsOk());
  EXPECT_THAT(cache->Complete(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(sha)));
  EXPECT_EQ(cache->PartialBytes(sha), 0);
  EXPECT_THAT(cache->Find(sha), StatusIs(absl::StatusCode::kNotFound));
  // A complete base changed on disk afterwards is removed when looked up, not loaded.
  ASSERT_THAT(cache->Begin(sha, 0, file.size()), IsOk());
  ASSERT_THAT(cache->Append(0, file), IsOk());
  auto path = cache->Complete();
  ASSERT_THAT(path, IsOk());
  std::ofstream(*path, std::ios::binary | std::ios::trunc) << other;
  EXPECT_THAT(cache->Find(sha), StatusIs(absl::StatusCode::kNotFound, HasSubstr("removed")));
  EXPECT_FALSE(std::filesystem::exists(*path));
}

TEST(BaseCacheTest, SizeAndNamesFromTheCoordinatorAreBounded) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path();
  auto cache = BaseCache::Open(dir, 4096);
  ASSERT_THAT(cache, IsOk());
  const std::string sha(64, 'a');
  EXPECT_THAT(cache->Begin(sha, 0, 4097),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("1 to 4096")));
  EXPECT_THAT(cache->Begin(sha, 0, 0), StatusIs(absl::StatusCode::kResourceExhausted));
  for (const std::string bad : {std::string("../../etc/passwd"), std::string(64, 'A'),
                                std::string(63, 'a'), std::string()}) {
    EXPECT_THAT(cache->Begin(bad, 0, 10), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(cache->Find(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  EXPECT_THAT(cache->Append(0, "x"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(BaseCache::Open("", 10), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BaseCache::Open(dir, 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A coordinator cannot fill the disk with partial downloads (one is kept at a time), and
// nothing the cache did not write is read, written through or removed: symbolic links
// planted under a digest's name are not followed.
TEST(BaseCacheTest, OnePartialDownloadAtATimeAndNoLinkIsFollowed) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path();
  auto cache = BaseCache::Open(dir, 1 << 20);
  ASSERT_THAT(cache, IsOk());
  const std::string a = Bytes(3000, 1), b = Bytes(2000, 2);
  const std::string sa = privacy::Sha256Hex(a), sb = privacy::Sha256Hex(b);
  ASSERT_THAT(cache->Begin(sa, 0, a.size()), IsOk());
  ASSERT_THAT(cache->Append(0, a.substr(0, 1000)), IsOk());
  ASSERT_THAT(cache->Begin(sb, 0, b.size()), IsOk());
  EXPECT_EQ(cache->PartialBytes(sa), 0);  // dropped when another download began
  ASSERT_THAT(cache->Append(0, b.substr(0, 500)), IsOk());
  cache->DropPartial(sb);
  EXPECT_EQ(cache->PartialBytes(sb), 0);

  const std::string target = dir + "/victim";
  std::ofstream(target) << "unchanged";
  ASSERT_EQ(::symlink(target.c_str(), (dir + "/" + sa + ".part").c_str()), 0);
  EXPECT_EQ(cache->PartialBytes(sa), 0);
  ASSERT_THAT(cache->Begin(sa, 0, a.size()), IsOk());
  EXPECT_THAT(cache->Append(0, a), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(ReadAll(target), "unchanged");
  ASSERT_EQ(::symlink(target.c_str(), (dir + "/" + sb + ".fedgemodel").c_str()), 0);
  EXPECT_THAT(cache->Find(sb), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(ReadAll(target), "unchanged");
}

TEST(BaseCacheTest, ANewBaseReplacesTheOldOneAndPartialDownloads) {
  const fedge::testing::ScopedTempDir tmp("base_cache");
  const std::string dir = tmp.path();
  auto cache = BaseCache::Open(dir, 1 << 20);
  ASSERT_THAT(cache, IsOk());
  const std::string a = Bytes(1000, 1), b = Bytes(1200, 2), c = Bytes(900, 4);
  const std::string sa = privacy::Sha256Hex(a), sb = privacy::Sha256Hex(b),
                    sc = privacy::Sha256Hex(c);
  ASSERT_THAT(cache->Begin(sa, 0, a.size()), IsOk());
  ASSERT_THAT(cache->Append(0, a), IsOk());
  ASSERT_THAT(cache->Complete(), IsOk());
  ASSERT_THAT(cache->Begin(sc, 0, c.size()), IsOk());
  ASSERT_THAT(cache->Append(0, c.substr(0, 100)), IsOk());  // left partial
  std::ofstream(dir + "/notes.txt") << "kept";
  std::ofstream(dir + "/mine.fedgemodel") << "a user's own model";
  ASSERT_THAT(cache->Begin(sb, 0, b.size()), IsOk());
  ASSERT_THAT(cache->Append(0, b), IsOk());
  ASSERT_THAT(cache->Complete(), IsOk());
  EXPECT_THAT(cache->Find(sb), IsOk());
  EXPECT_THAT(cache->Find(sa), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(cache->PartialBytes(sc), 0);
  // Only what the cache names by digest is removed.
  EXPECT_TRUE(std::filesystem::exists(dir + "/notes.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/mine.fedgemodel"));
}

}  // namespace
}  // namespace fedge::client
