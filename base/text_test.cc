#include "base/text.h"

#include <algorithm>
#include <string>

#include "base/log.h"
#include "gtest/gtest.h"

namespace fedge::base {
namespace {

TEST(PrintableTest, EscapesControlCharactersAndBackslashes) {
  EXPECT_EQ(Printable("linux-aarch64"), "linux-aarch64");
  EXPECT_EQ(Printable("ok\nI 00:00:00.000 forged.cc:1] ..."),
            "ok\\x0aI 00:00:00.000 forged.cc:1] ...");
  EXPECT_EQ(Printable("\x1b[2J"), "\\x1b[2J");  // would clear the terminal
  EXPECT_EQ(Printable("a\\x0a"), "a\\x5cx0a");  // an escape cannot be faked
  EXPECT_EQ(Printable(std::string("nul\0byte", 8)), "nul\\x00byte");
  EXPECT_EQ(Printable("\x7f"), "\\x7f");
  EXPECT_EQ(Printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 passes
  EXPECT_EQ(Printable("abcdef", 3), "abc...");
}

TEST(PrintableTest, ALineKeepsOnlyItsOwnEnd) {
  EXPECT_EQ(PrintableLine("I x.cc:1] reason: a\nb\n"), "I x.cc:1] reason: a\\x0ab\n");
  EXPECT_EQ(PrintableLine("no end"), "no end");
}

// A device's text in a log message cannot forge a second line or reach the terminal raw.
TEST(PrintableTest, LogLinesStayOneLine) {
  ::testing::internal::CaptureStderr();
  FEDGE_LOG(WARNING) << "client left (" << "bye\nI 00:00:00.000 forged.cc:1] job stopped\x1b[2J"
                     << ")";
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_NE(out.find("bye\\x0aI 00:00:00.000 forged.cc:1]"), std::string::npos);
}

}  // namespace
}  // namespace fedge::base
