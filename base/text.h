// Text that came from outside (a device's platform string, a refusal or leave reason, a job
// name) made safe to print: control characters (bytes below 0x20 and 0x7F, which would
// forge a log line with a newline or drive an operator's terminal with ESC sequences)
// become \xNN escapes, and so does the backslash itself, so that the result reads back
// unambiguously. Other bytes (UTF-8 included) pass through. The log sink (base/log.h) and
// fedgectl print every message through it.
#ifndef FEDGE_BASE_TEXT_H_
#define FEDGE_BASE_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace fedge::base {

// `s` with control characters and backslashes escaped (\xNN); at most `max_bytes` bytes of
// `s` are kept (then "..." is appended).
std::string Printable(absl::string_view s, size_t max_bytes = 4096);

// Printable for a whole log line: like Printable, but one trailing newline is kept as the
// line's end. No truncation.
std::string PrintableLine(absl::string_view line);

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF) without a NUL: text every database stores as it is.
bool IsStorableText(absl::string_view s);

// The longest prefix of `s` of at most `max_bytes` bytes that ends on a UTF-8 character
// boundary, with NUL bytes and ill-formed sequences replaced by '?'.
std::string StorableText(absl::string_view s, size_t max_bytes);

}  // namespace fedge::base

#endif  // FEDGE_BASE_TEXT_H_
