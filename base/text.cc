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

// Length of the well-formed UTF-8 character (not NUL) at the start of `s`, or 0.
size_t Utf8CharLength(absl::string_view s) {
  const unsigned char c = static_cast<unsigned char>(s[0]);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // no overlong forms
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  const unsigned char c1 = static_cast<unsigned char>(s[1]);
  if (c1 < lo || c1 > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    const unsigned char ci = static_cast<unsigned char>(s[i]);
    if (ci < 0x80 || ci > 0xBF) return 0;
  }
  return n;
}

}  // namespace

bool IsStorableText(absl::string_view s) {
  while (!s.empty()) {
    const size_t n = Utf8CharLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string StorableText(absl::string_view s, size_t max_bytes) {
  std::string out;
  while (!s.empty()) {
    const size_t n = Utf8CharLength(s);
    const size_t take = n == 0 ? 1 : n;
    if (out.size() + (n == 0 ? 1 : n) > max_bytes) break;
    if (n == 0) {
      out.push_back('?');
    } else {
      out.append(s.data(), n);
    }
    s.remove_prefix(take);
  }
  return out;
}

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
