#include "sim/report.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::sim {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

RoundReport Sample(int64_t round) {
  RoundReport r;
  r.round = round;
  r.attempts = 2;
  r.virtual_time_s = 12.345678901234 * static_cast<double>(round);
  r.round_virtual_s = 0.1 + 0.2;  // not representable exactly: must still round-trip
  r.wall_time_s = 3.5;
  r.evaluated = true;
  r.test_accuracy = 0.5 + 0.01 * static_cast<double>(round);
  r.test_loss = 1.0 / 3.0;
  r.train_loss = 0.7;
  r.sampled = 10;
  r.participants = 7;
  r.dropped = 3;
  r.offline = 1;
  r.dropouts = 1;
  r.stragglers = 1;
  r.examples = 4200;
  r.bytes_up = 1234567890123;
  r.bytes_down = 42;
  r.epsilon = 1.25;
  r.bounded = true;
  r.bound_norm = 0.1 + 0.7;
  r.bound_clipped = 2;
  r.bound_weight_capped = 1;
  r.bound_excluded = 1;
  r.rejected = 1;
  return r;
}

std::string Read(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ReportTest, MetricsLineRoundTrips) {
  const RoundReport r = Sample(3);
  const std::string line = MetricsJsonLine(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  absl::StatusOr<RoundReport> back = ParseMetricsJsonLine(line);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(MetricsJsonLine(*back), line);
  EXPECT_EQ(back->round_virtual_s, r.round_virtual_s);
  EXPECT_EQ(back->virtual_time_s, r.virtual_time_s);
  EXPECT_EQ(back->bytes_up, r.bytes_up);
  EXPECT_EQ(back->attempts, 2);
  EXPECT_TRUE(back->evaluated);
  EXPECT_EQ(back->bound_norm, r.bound_norm);
  EXPECT_EQ(back->bound_clipped, 2);
  EXPECT_EQ(back->bound_weight_capped, 1);
  EXPECT_EQ(back->bound_excluded, 1);
  EXPECT_EQ(back->rejected, 1);
}

TEST(ReportTest, WallTimeCanBeLeftOut) {
  EXPECT_THAT(MetricsJsonLine(Sample(1), false), HasSubstr("\"wall_time_s\":0,"));
  EXPECT_THAT(MetricsJsonLine(Sample(1), true), HasSubstr("\"wall_time_s\":3.5,"));
}

TEST(ReportTest, MalformedLinesAreRefused) {
  EXPECT_THAT(ParseMetricsJsonLine("round 3"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JSON object")));
  EXPECT_THAT(ParseMetricsJsonLine("{\"test_accuracy\":0.5}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("round")));
  EXPECT_THAT(ParseMetricsJsonLine("{\"round\":x}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("round")));
}

TEST(ReportTest, WritesEveryPlotAndAPageShowingThem) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "fedge_sim_report_test";
  std::filesystem::remove_all(dir);
  std::vector<RoundReport> rounds;
  for (int i = 1; i <= 5; ++i) rounds.push_back(Sample(i));
  ReportSummary summary;
  summary.title = "fleet <test>";
  summary.config = "5 rounds";
  summary.threads = 2;
  summary.wall_seconds = 10;
  ASSERT_THAT(WriteReport(dir.string(), rounds, summary), IsOk());
  const std::string html = Read(dir / "index.html");
  EXPECT_THAT(html, HasSubstr("fleet &lt;test&gt;"));
  for (const char* file : {"accuracy_vs_round.svg", "accuracy_vs_time.svg", "loss_vs_round.svg",
                           "loss_vs_time.svg", "bytes.svg", "participation.svg"}) {
    const std::string svg = Read(dir / file);
    ASSERT_FALSE(svg.empty()) << file;
    EXPECT_THAT(svg, HasSubstr("<svg")) << file;
    EXPECT_THAT(svg, HasSubstr("<polyline")) << file;
    EXPECT_THAT(svg, HasSubstr("</svg>")) << file;
    EXPECT_THAT(html, HasSubstr(std::string("src=\"") + file + "\"")) << file;
  }
  // Titles, axis labels and legends.
  const std::string participation = Read(dir / "participation.svg");
  EXPECT_THAT(participation, HasSubstr("Participation per round"));
  EXPECT_THAT(participation, HasSubstr(">round<"));
  EXPECT_THAT(participation, HasSubstr(">participants<"));
  EXPECT_THAT(participation, HasSubstr(">dropped<"));
  EXPECT_THAT(Read(dir / "accuracy_vs_time.svg"), HasSubstr("virtual time (s)"));
}

TEST(ReportTest, EmptyChartSaysSo) {
  const std::string svg = SvgLineChart("t", "x", "y", {{"s", {}, {}, ""}});
  EXPECT_THAT(svg, HasSubstr("no data"));
  EXPECT_THAT(svg, ::testing::Not(HasSubstr("<polyline")));
}

TEST(ReportTest, TicksAreRoundNumbers) {
  const std::string svg = SvgLineChart("t", "round", "acc", {{"a", {1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                                                              {0.1, 0.3, 0.5, 0.6, 0.65, 0.7, 0.72,
                                                               0.74, 0.75, 0.76}, ""}});
  EXPECT_THAT(svg, HasSubstr(">0.4<"));
  EXPECT_THAT(svg, HasSubstr(">10<"));
}

}  // namespace
}  // namespace fedge::sim
