#include "server/grpc/http_listen.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace fedge::server {

absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(const std::string& listen,
                                                               absl::string_view flag) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " '", listen, "' is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, port);
}

absl::StatusOr<int> BindAndServe(httplib::Server* http, const std::string& listen,
                                 absl::string_view flag, std::thread* thread) {
  FEDGE_ASSIGN_OR_RETURN(auto host_port, ParseListenAddress(listen, flag));
  const auto& [host, port] = host_port;
  int bound = port;
  if (port == 0) {
    bound = http->bind_to_any_port(host);
    if (bound <= 0) return absl::UnavailableError(absl::StrCat(flag, ": cannot bind ", listen));
  } else if (!http->bind_to_port(host, port)) {
    return absl::UnavailableError(absl::StrCat(flag, ": cannot bind ", listen));
  }
  *thread = std::thread([http] { http->listen_after_bind(); });
  // stop() before the loop runs would be lost (and joining would then hang).
  while (!http->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return bound;
}

}  // namespace fedge::server
