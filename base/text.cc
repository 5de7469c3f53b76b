#include "base/text.h"

#include "absl/strings/str_format.h"

namespace fedge::base {
namespace {

void AppendEscaped(absl::string_view s, std::string& out) {
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || c == '\\') {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(ch);
    }
  }
}

}  // namespace

std::string Printable(absl::string_view s, size_t max_bytes) {
  std::string out;
  const bool cut = s.size() > max_bytes;
  AppendEscaped(cut ? s.substr(0, max_bytes) : s, out);
  if (cut) out += "...";
  return out;
}

std::string PrintableLine(absl::string_view line) {
  const bool newline = !line.empty() && line.back() == '\n';
  if (newline) line.remove_suffix(1);
  std::string out;
  out.reserve(line.size() + 1);
  AppendEscaped(line, out);
  if (newline) out.push_back('\n');
  return out;
}

}  // namespace fedge::base
