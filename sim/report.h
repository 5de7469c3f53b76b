// fedge-sim's outputs: one JSON object per round (metrics lines), and a report
// directory of SVG plots with an index.html that shows them, written directly (no external
// tools):
//   accuracy_vs_round.svg, accuracy_vs_time.svg   test accuracy against round / virtual time
//   loss_vs_round.svg, loss_vs_time.svg           test and train loss
//   bytes.svg                                     MB up and down per round
//   participation.svg                             sampled, participants, dropped per round
//   index.html                                    the plots and a summary table
#ifndef FEDGE_SIM_REPORT_H_
#define FEDGE_SIM_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sim/simulator.h"

namespace fedge::sim {

// {"round":3,"virtual_time_s":...,"wall_time_s":...,"test_accuracy":...,...} on one line,
// no newline. Every number is printed so that it parses back to the same double. With
// `wall_time` false, wall_time_s is written as 0 so that runs can be compared byte for byte.
std::string MetricsJsonLine(const RoundReport& r, bool wall_time = true);

// The inverse of MetricsJsonLine (unknown keys are ignored). INVALID_ARGUMENT ("Metrics: ...")
// for anything that is not a flat JSON object of numbers and booleans, or without "round".
absl::StatusOr<RoundReport> ParseMetricsJsonLine(absl::string_view line);

struct ReportSummary {
  std::string title;     // e.g. the job name
  std::string config;    // a one-line description of the scenario
  int threads = 0;
  double wall_seconds = 0;
};

// One series of a line chart.
struct ChartSeries {
  std::string name;  // the legend
  std::vector<double> x, y;
  std::string color;  // CSS colour
  bool dashed = false;
};

// An SVG line chart with a title, labelled axes with round-number ticks, and a legend.
// Non-finite points are skipped. An empty chart still renders (axes and a "no data" note).
std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<ChartSeries>& series);

// Writes the plots and index.html into `dir` (created if missing). Errors: UNAVAILABLE when
// a file cannot be written.
absl::Status WriteReport(const std::string& dir, const std::vector<RoundReport>& rounds,
                         const ReportSummary& summary);

}  // namespace fedge::sim

#endif  // FEDGE_SIM_REPORT_H_
