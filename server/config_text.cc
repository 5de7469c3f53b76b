#include "server/config_text.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace fedge::server {
namespace {

class CollectingErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectingErrorCollector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::Status ParseTextProto(absl::string_view text, absl::string_view source,
                            absl::string_view what, google::protobuf::Message* out) {
  CollectingErrorCollector errors{std::string(source)};
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);  // unknown fields and extensions stay errors (the default)
  if (parser.ParseFromString(std::string(text), out)) return absl::OkStatus();
  if (errors.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": cannot parse ", source));
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", absl::StrJoin(errors.errors(), "; ")));
}

void ConfigProblems::Add(absl::string_view field, absl::string_view problem) {
  list_.push_back(absl::StrCat(field, " ", problem));
}

absl::Status ConfigProblems::ToStatus() const {
  return absl::InvalidArgumentError(absl::StrCat(prefix_, ": ", absl::StrJoin(list_, "; ")));
}

void ConfigProblems::Positive(absl::string_view field, double v) {
  if (!std::isfinite(v) || !(v > 0)) Add(field, absl::StrCat("must be > 0 and finite, got ", v));
}

void ConfigProblems::NonNegative(absl::string_view field, double v) {
  if (!std::isfinite(v) || v < 0) Add(field, absl::StrCat("must be >= 0 and finite, got ", v));
}

void ConfigProblems::HalfOpenUnit(absl::string_view field, double v) {
  if (!std::isfinite(v) || v < 0 || v >= 1) {
    Add(field, absl::StrCat("must be in [0, 1), got ", v));
  }
}

void ConfigProblems::IntRange(absl::string_view field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) Add(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", v));
}

}  // namespace fedge::server
