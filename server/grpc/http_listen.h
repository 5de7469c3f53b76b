// Starting a cpp-httplib server on host:port on a thread of its own: the metrics endpoint
// (metrics_http.h) and the web console (console_http.h).
#ifndef FEDGE_SERVER_GRPC_HTTP_LISTEN_H_
#define FEDGE_SERVER_GRPC_HTTP_LISTEN_H_

#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace httplib {
class Server;
}

namespace fedge::server {

// "host:port" or "[v6]:port" → (host without brackets, port in [0, 65535]); the error names
// `flag`.
absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(const std::string& listen,
                                                               absl::string_view flag);

// Binds `http` to `listen` (port 0 = any free port), starts its loop on `*thread` and
// returns once it runs; the bound port. UNAVAILABLE naming `flag` when binding fails.
absl::StatusOr<int> BindAndServe(httplib::Server* http, const std::string& listen,
                                 absl::string_view flag, std::thread* thread);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_HTTP_LISTEN_H_
