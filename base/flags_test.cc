#include "base/flags.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace fedge::base {
namespace {

std::vector<std::string> Rewrite(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  AcceptDashedFlags(static_cast<int>(argv.size()), argv.data());
  return args;
}

TEST(AcceptDashedFlagsTest, RewritesNamesNotValues) {
  EXPECT_EQ(Rewrite({"prog", "--metrics-out=a-b.jsonl", "--train-examples", "5", "-x-y",
                     "pos-arg", "--", "--not-a-flag"}),
            (std::vector<std::string>{"prog", "--metrics_out=a-b.jsonl", "--train_examples", "5",
                                      "-x_y", "pos-arg", "--", "--not-a-flag"}));
}

}  // namespace
}  // namespace fedge::base
