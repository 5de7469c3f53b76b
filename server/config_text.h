// What the job config (server/job_config.h) and the simulation config (sim/sim_config.h)
// share: protobuf text-format parsing with every error located, and a list of field problems
// that one validation pass fills so that the error names every bad field at once.
#ifndef FEDGE_SERVER_CONFIG_TEXT_H_
#define FEDGE_SERVER_CONFIG_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace fedge::server {

// Parses text-format `text` into *out (cleared first); unknown fields and extensions are
// errors. Errors: kInvalidArgument "<what>: <source>:<line>:<column>: <message>; ..." (or
// "<what>: cannot parse <source>" when the parser gives no location).
absl::Status ParseTextProto(absl::string_view text, absl::string_view source,
                            absl::string_view what, google::protobuf::Message* out);

// "field problem" lines; ToStatus() joins them after `prefix` (e.g. "JobConfig: invalid job").
class ConfigProblems {
 public:
  explicit ConfigProblems(std::string prefix) : prefix_(std::move(prefix)) {}

  void Add(absl::string_view field, absl::string_view problem);
  void Add(std::string line) { list_.push_back(std::move(line)); }
  bool empty() const { return list_.empty(); }
  absl::Status ToStatus() const;

  // Range checks; each names the field and the offending value.
  void Positive(absl::string_view field, double v);      // > 0, finite
  void NonNegative(absl::string_view field, double v);   // >= 0, finite
  void HalfOpenUnit(absl::string_view field, double v);  // [0, 1)
  void IntRange(absl::string_view field, int64_t v, int64_t lo, int64_t hi);

 private:
  std::string prefix_;
  std::vector<std::string> list_;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_CONFIG_TEXT_H_
