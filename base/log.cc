#include "base/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/text.h"

namespace fedge::base {
namespace {

int InitialLevel() {
  const char* env = std::getenv("FEDGE_LOG_LEVEL");
  if (env == nullptr || *env < '0' || *env > '3') return 0;
  return *env - '0';
}

std::atomic<int>& MinLevel() {
  static std::atomic<int> level{InitialLevel()};
  return level;
}

}  // namespace

void SetMinLogLevel(LogLevel level) { MinLevel().store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= MinLevel().load(); }

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  const char* base = std::strrchr(file, '/');
  stream_ << "IWEF"[static_cast<int>(level)] << ' '
          << absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::LocalTimeZone()) << ' '
          << (base ? base + 1 : file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  // A message may carry text from outside (a device's reason, platform): it cannot start a
  // line of its own or reach the terminal as a control sequence.
  const std::string line = PrintableLine(stream_.str());
  std::fwrite(line.data(), 1, line.size(), stderr);
  if (level_ == LogLevel::FATAL) std::abort();
}

}  // namespace fedge::base
