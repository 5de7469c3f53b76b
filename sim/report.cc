#include "sim/report.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fedge::sim {
namespace {

// Shortest text that parses back to the same double.
std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  for (int precision = 6; precision <= 17; ++precision) {
    std::string s = absl::StrFormat("%.*g", precision, v);
    if (std::strtod(s.c_str(), nullptr) == v) return s;
  }
  return absl::StrFormat("%.17g", v);
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Round-number ticks covering [lo, hi] (Heckbert's "nice numbers").
std::vector<double> NiceTicks(double lo, double hi, int target, double* step_out) {
  const double range = hi - lo;
  const double raw = range / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  std::vector<double> ticks;
  // From the last tick at or below lo to the first at or above hi, so the data never
  // touches the frame between ticks.
  const double first = std::floor(lo / step + 1e-9) * step;
  for (int i = 0;; ++i) {
    const double t = first + i * step;
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    if (t >= hi - step * 1e-9) break;
  }
  *step_out = step;
  return ticks;
}

std::string TickLabel(double v, double step) {
  if (std::abs(v) >= 1e6 || (step < 1e-3 && v != 0)) return absl::StrFormat("%.3g", v);
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return absl::StrFormat("%.*f", decimals, v);
}

absl::Status WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("Report: cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

std::string MetricsJsonLine(const RoundReport& r, bool wall_time) {
  // FedCG rounds carry their own figures (test_accuracy is the mean client accuracy).
  const std::string fed_cg =
      r.fed_cg ? absl::StrCat(",\"fed_cg\":true,\"fedcg_reported_accuracy\":",
                              Num(r.fedcg_reported_accuracy), ",\"fedcg_first_kl\":",
                              Num(r.fedcg_first_kl), ",\"fedcg_last_kl\":", Num(r.fedcg_last_kl),
                              ",\"fedcg_synthetic_accuracy\":", Num(r.fedcg_synthetic_accuracy))
               : std::string();
  // DP rounds carry the clip norm and, with adaptive clipping, the unclipped fraction and
  // the next round's clip norm, as the coordinator records them (RoundMetrics.dp_*).
  const std::string dp =
      r.dp_clip_norm > 0
          ? absl::StrCat(",\"dp_clip_norm\":", Num(r.dp_clip_norm),
                         ",\"dp_unclipped_fraction\":", Num(r.dp_unclipped_fraction),
                         ",\"dp_next_clip_norm\":", Num(r.dp_next_clip_norm))
          : std::string();
  const std::string declined =
      absl::StrCat(r.declined > 0 ? absl::StrCat(",\"declined\":", r.declined) : "",
                   r.rejected > 0 ? absl::StrCat(",\"rejected\":", r.rejected) : "");
  // The update bound (server/update_bound.h): the bound at the close, updates clipped to it
  // and updates whose weight was capped.
  const std::string bound =
      r.bounded ? absl::StrCat(",\"bound_norm\":", Num(r.bound_norm), ",\"bound_clipped\":",
                               r.bound_clipped, ",\"bound_weight_capped\":",
                               r.bound_weight_capped,
                               r.bound_excluded > 0
                                   ? absl::StrCat(",\"bound_excluded\":", r.bound_excluded)
                                   : std::string())
                : std::string();
  // Secure-aggregation rounds: who took part in each phase, and the released sum's check.
  const std::string secagg =
      r.secure_aggregation
          ? absl::StrCat(",\"secagg_advertised\":", r.secagg_advertised, ",\"secagg_shared\":",
                         r.secagg_shared, ",\"secagg_masked\":", r.secagg_masked,
                         ",\"secagg_unmasked_by\":", r.secagg_unmasked_by,
                         ",\"secagg_sum_checked\":", r.secagg_sum_checked ? "true" : "false")
          : std::string();
  return absl::StrCat(
      "{\"round\":", r.round, ",\"attempts\":", r.attempts,
      ",\"virtual_time_s\":", Num(r.virtual_time_s), ",\"round_virtual_s\":", Num(r.round_virtual_s),
      ",\"wall_time_s\":", Num(wall_time ? r.wall_time_s : 0.0),
      ",\"evaluated\":", r.evaluated ? "true" : "false",
      ",\"test_accuracy\":", Num(r.test_accuracy), ",\"test_loss\":", Num(r.test_loss),
      r.test_perplexity > 0 ? absl::StrCat(",\"test_perplexity\":", Num(r.test_perplexity))
                            : std::string(),
      ",\"train_loss\":", Num(r.train_loss), ",\"sampled\":", r.sampled,
      ",\"participants\":", r.participants, ",\"dropped\":", r.dropped,
      ",\"offline\":", r.offline, ",\"dropouts\":", r.dropouts, ",\"stragglers\":", r.stragglers,
      ",\"examples\":", r.examples, ",\"bytes_up\":", r.bytes_up, ",\"bytes_down\":", r.bytes_down,
      ",\"epsilon\":", Num(r.epsilon), dp, declined, bound, secagg, fed_cg, "}");
}

absl::StatusOr<RoundReport> ParseMetricsJsonLine(absl::string_view line) {
  absl::string_view s = absl::StripAsciiWhitespace(line);
  if (!absl::ConsumePrefix(&s, "{") || !absl::ConsumeSuffix(&s, "}")) {
    return absl::InvalidArgumentError("Metrics: a line must be one JSON object");
  }
  RoundReport r;
  bool has_round = false;
  for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, absl::MaxSplits(':', 1));
    absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (!absl::ConsumePrefix(&key, "\"") || !absl::ConsumeSuffix(&key, "\"") || value.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("Metrics: bad member '", item, "'"));
    }
    double v = 0;
    if (value == "true" || value == "false") {
      v = value == "true";
    } else if (value == "null") {
      v = std::numeric_limits<double>::quiet_NaN();
    } else if (!absl::SimpleAtod(value, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Metrics: '", key, "' is not a number: '", value, "'"));
    }
    const auto i64 = static_cast<int64_t>(v);
    const auto i32 = static_cast<int>(v);
    if (key == "round") r.round = i64, has_round = true;
    else if (key == "attempts") r.attempts = i32;
    else if (key == "virtual_time_s") r.virtual_time_s = v;
    else if (key == "round_virtual_s") r.round_virtual_s = v;
    else if (key == "wall_time_s") r.wall_time_s = v;
    else if (key == "evaluated") r.evaluated = v != 0;
    else if (key == "test_accuracy") r.test_accuracy = v;
    else if (key == "test_loss") r.test_loss = v;
    else if (key == "test_perplexity") r.test_perplexity = v;
    else if (key == "train_loss") r.train_loss = v;
    else if (key == "sampled") r.sampled = i32;
    else if (key == "participants") r.participants = i32;
    else if (key == "dropped") r.dropped = i32;
    else if (key == "offline") r.offline = i32;
    else if (key == "dropouts") r.dropouts = i32;
    else if (key == "stragglers") r.stragglers = i32;
    else if (key == "examples") r.examples = i64;
    else if (key == "bytes_up") r.bytes_up = i64;
    else if (key == "fed_cg") r.fed_cg = v != 0;
    else if (key == "fedcg_reported_accuracy") r.fedcg_reported_accuracy = v;
    else if (key == "fedcg_first_kl") r.fedcg_first_kl = v;
    else if (key == "fedcg_last_kl") r.fedcg_last_kl = v;
    else if (key == "fedcg_synthetic_accuracy") r.fedcg_synthetic_accuracy = v;
    else if (key == "bytes_down") r.bytes_down = i64;
    else if (key == "epsilon") r.epsilon = v;
    else if (key == "dp_clip_norm") r.dp_clip_norm = v;
    else if (key == "dp_unclipped_fraction") r.dp_unclipped_fraction = v;
    else if (key == "dp_next_clip_norm") r.dp_next_clip_norm = v;
    else if (key == "declined") r.declined = i32;
    else if (key == "rejected") r.rejected = i32;
    else if (key == "bound_norm") r.bounded = true, r.bound_norm = v;
    else if (key == "bound_clipped") r.bound_clipped = i32;
    else if (key == "bound_weight_capped") r.bound_weight_capped = i32;
    else if (key == "bound_excluded") r.bound_excluded = i32;
    else if (key == "secagg_advertised") r.secure_aggregation = true, r.secagg_advertised = i32;
    else if (key == "secagg_shared") r.secagg_shared = i32;
    else if (key == "secagg_masked") r.secagg_masked = i32;
    else if (key == "secagg_unmasked_by") r.secagg_unmasked_by = i32;
    else if (key == "secagg_sum_checked") r.secagg_sum_checked = v != 0;
  }
  if (!has_round) return absl::InvalidArgumentError("Metrics: no \"round\" in the line");
  return r;
}

std::string SvgLineChart(const std::string& title, const std::string& x_label,
                         const std::string& y_label, const std::vector<ChartSeries>& series) {
  constexpr double kW = 640, kH = 420, kLeft = 72, kRight = 20, kTop = 64, kBottom = 56;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  double ymin = xmin, ymax = -xmin;
  for (const ChartSeries& s : series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  const bool empty = !std::isfinite(xmin);
  if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (ymin > 0 && ymin < 0.5 * ymax) ymin = 0;  // start at zero when that costs little
  if (xmax - xmin < 1e-12) xmin -= 0.5, xmax += 0.5;
  if (ymax - ymin < 1e-12) ymin -= 0.5, ymax += 0.5;
  double xstep = 1, ystep = 1;
  std::vector<double> xt = NiceTicks(xmin, xmax, 8, &xstep);
  // 3% headroom above the data, so a flat line at the maximum stays off the frame.
  std::vector<double> yt = NiceTicks(ymin, ymax + 0.03 * (ymax - ymin), 6, &ystep);
  xmin = xt.front(), xmax = xt.back();
  ymin = yt.front(), ymax = yt.back();
  auto X = [&](double x) { return kLeft + (x - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double y) { return kTop + ph - (y - ymin) / (ymax - ymin) * ph; };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%g\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">%s</text>\n",
      kW, kH, kW, kH, kW / 2, Escape(title));
  for (double t : yt) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                          kLeft, Y(t), kLeft + pw, Y(t), kLeft - 6, Y(t) + 4, TickLabel(t, ystep));
  }
  for (double t : xt) {
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                          X(t), kTop, X(t), kTop + ph, X(t), kTop + ph + 16, TickLabel(t, xstep));
  }
  absl::StrAppendFormat(&svg,
                        "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n"
                        "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n"
                        "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">%s</text>\n",
                        kLeft, kTop, pw, ph, kLeft + pw / 2, kH - 14, Escape(x_label),
                        kTop + ph / 2, kTop + ph / 2, Escape(y_label));
  if (empty) {
    absl::StrAppendFormat(&svg, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n",
                          kLeft + pw / 2, kTop + ph / 2);
  }
  double legend_x = kLeft;  // the legend: one row between the title and the plot
  for (const ChartSeries& s : series) {
    std::string points;
    int count = 0;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      absl::StrAppendFormat(&points, "%.1f,%.1f ", X(s.x[i]), Y(s.y[i]));
      ++count;
    }
    const std::string color = s.color.empty() ? "#1f77b4" : s.color;
    const char* dash = s.dashed ? " stroke-dasharray=\"8 5\"" : "";
    const double width = s.dashed ? 3 : 2;
    if (count > 0) {
      absl::StrAppendFormat(&svg,
                            "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%g\"%s points=\"%s\"/>\n",
                            color, width, dash, points);
    }
    if (count == 1) {
      absl::StrAppendFormat(&svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                            X(s.x[0]), Y(s.y[0]), color);
    }
    const double ly = kTop - 14;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"%s/>"
                          "<text x=\"%g\" y=\"%g\">%s</text>\n",
                          legend_x, ly - 4, legend_x + 22, ly - 4, color, dash, legend_x + 28, ly,
                          Escape(s.name));
    legend_x += 28 + 7.0 * static_cast<double>(s.name.size()) + 24;
  }
  svg += "</svg>\n";
  return svg;
}

absl::Status WriteReport(const std::string& dir, const std::vector<RoundReport>& rounds,
                         const ReportSummary& summary) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("Report: cannot create ", dir, ": ", ec.message()));
  const std::filesystem::path root(dir);
  std::vector<double> round, vtime, acc, loss, train_loss, up, down, sampled, part, dropped;
  std::vector<double> eval_round, eval_time;
  for (const RoundReport& r : rounds) {
    round.push_back(static_cast<double>(r.round));
    vtime.push_back(r.virtual_time_s);
    train_loss.push_back(r.train_loss);
    up.push_back(static_cast<double>(r.bytes_up) / 1e6);
    down.push_back(static_cast<double>(r.bytes_down) / 1e6);
    sampled.push_back(r.sampled);
    part.push_back(r.participants);
    dropped.push_back(r.dropped);
    if (r.evaluated) {
      eval_round.push_back(static_cast<double>(r.round));
      eval_time.push_back(r.virtual_time_s);
      acc.push_back(r.test_accuracy);
      loss.push_back(r.test_loss);
    }
  }
  // Virtual time in the unit that keeps the numbers readable.
  double tmax = vtime.empty() ? 0 : vtime.back();
  std::string tunit = "s";
  double tdiv = 1;
  if (tmax > 2 * 3600) tunit = "h", tdiv = 3600;
  else if (tmax > 2 * 60) tunit = "min", tdiv = 60;
  std::vector<double> eval_time_u, vtime_u;
  for (double t : eval_time) eval_time_u.push_back(t / tdiv);
  for (double t : vtime) vtime_u.push_back(t / tdiv);
  const std::string time_label = absl::StrCat("virtual time (", tunit, ")");

  struct Plot {
    std::string file, title, x, y;
    std::vector<ChartSeries> series;
  };
  const std::vector<Plot> plots = {
      {"accuracy_vs_round.svg", "Test accuracy by round", "round", "test accuracy",
       {{"central model", eval_round, acc, "#1f77b4"}}},
      {"accuracy_vs_time.svg", "Test accuracy by virtual time", time_label, "test accuracy",
       {{"central model", eval_time_u, acc, "#1f77b4"}}},
      {"loss_vs_round.svg", "Loss by round", "round", "cross-entropy loss",
       {{"test loss", eval_round, loss, "#d62728"}, {"train loss (clients)", round, train_loss, "#ff7f0e"}}},
      {"loss_vs_time.svg", "Loss by virtual time", time_label, "cross-entropy loss",
       {{"test loss", eval_time_u, loss, "#d62728"}, {"train loss (clients)", vtime_u, train_loss, "#ff7f0e"}}},
      {"bytes.svg", "Traffic per round", "round", "MB",
       {{"down (tasks)", round, down, "#2ca02c"}, {"up (updates)", round, up, "#9467bd"}}},
      {"participation.svg", "Participation per round", "round", "clients",
       {{"sampled", round, sampled, "#7f7f7f", true}, {"participants", round, part, "#1f77b4"},
        {"dropped", round, dropped, "#d62728"}}},
  };
  for (const Plot& p : plots) {
    if (absl::Status s = WriteFile(root / p.file, SvgLineChart(p.title, p.x, p.y, p.series)); !s.ok()) {
      return s;
    }
  }

  // The page.
  double best = 0, total_up = 0, total_down = 0;
  int64_t updates = 0;
  for (const RoundReport& r : rounds) {
    if (r.evaluated) best = std::max(best, r.test_accuracy);
    total_up += static_cast<double>(r.bytes_up);
    total_down += static_cast<double>(r.bytes_down);
    updates += r.participants;
  }
  const RoundReport last = rounds.empty() ? RoundReport{} : rounds.back();
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>fedge-sim: ",
      Escape(summary.title), "</title>\n<style>body{font-family:sans-serif;margin:24px}"
      "img{width:640px;margin:8px;border:1px solid #ddd}td,th{padding:2px 12px;text-align:left}"
      "</style></head><body>\n<h1>fedge-sim: ", Escape(summary.title), "</h1>\n<p>",
      Escape(summary.config), "</p>\n<table>\n");
  auto row = [&](const std::string& k, const std::string& v) {
    absl::StrAppend(&html, "<tr><th>", Escape(k), "</th><td>", Escape(v), "</td></tr>\n");
  };
  row("rounds completed", absl::StrCat(rounds.size()));
  row("final test accuracy", absl::StrFormat("%.4f (round %d)", last.test_accuracy, last.round));
  row("best test accuracy", absl::StrFormat("%.4f", best));
  row("virtual time", absl::StrFormat("%.1f s", last.virtual_time_s));
  row("wall time", absl::StrFormat("%.1f s on %d thread(s)", summary.wall_seconds, summary.threads));
  row("client updates aggregated", absl::StrFormat("%d (%.1f per wall second)", updates,
                                                   summary.wall_seconds > 0 ? updates / summary.wall_seconds : 0.0));
  row("traffic", absl::StrFormat("%.1f MB down, %.1f MB up", total_down / 1e6, total_up / 1e6));
  if (last.epsilon > 0) row("DP epsilon", absl::StrFormat("%.3f", last.epsilon));
  html += "</table>\n<div>\n";
  for (const Plot& p : plots) {
    absl::StrAppend(&html, "<img src=\"", p.file, "\" alt=\"", Escape(p.title), "\">\n");
  }
  html += "</div>\n<p>Metrics per round: metrics.jsonl (when written with --metrics-out).</p>\n</body></html>\n";
  return WriteFile(root / "index.html", html);
}

}  // namespace fedge::sim
