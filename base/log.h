// Minimal leveled logging to stderr (Abseil 20220623 predates absl/log):
//   FEDGE_LOG(INFO) << "round " << r << " closed";
// Lines look like "I 04:12:33.123 fed_avg.cc:42] message". The threshold comes from
// SetMinLogLevel() or the FEDGE_LOG_LEVEL environment variable (0=INFO .. 3=FATAL).
// A message is one line: control characters in it (a newline in a device's reason, an
// ESC sequence) are written as \xNN escapes (base/text.h).
#ifndef FEDGE_BASE_LOG_H_
#define FEDGE_BASE_LOG_H_

#include <sstream>

namespace fedge::base {

enum class LogLevel { INFO = 0, WARNING = 1, ERROR = 2, FATAL = 3 };

void SetMinLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();  // writes the line; aborts for FATAL
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace fedge::base

#define FEDGE_LOG(level)                                                  \
  if (!::fedge::base::LogEnabled(::fedge::base::LogLevel::level)) {       \
  } else                                                                  \
    ::fedge::base::LogMessage(::fedge::base::LogLevel::level, __FILE__, __LINE__).stream()

#endif  // FEDGE_BASE_LOG_H_
