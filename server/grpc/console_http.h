// The operators' web console: a single page (server/console/: HTML, JS, CSS and Debian's
// Chart.js, compiled into the binary; nothing is fetched from elsewhere) and the JSON API it
// reads, over HTTP(S) with cpp-httplib. fedge-coordinator --console-listen HOST:PORT.
//
// Every /api call is an AdminApi call (server/admin_api.h): the same operator tokens, roles
// and bounds as the Admin gRPC service. The page sends the token as `Authorization: Bearer
// <token>`; the static files carry no data and need none.
//
//   GET  /api/whoami                  {"name", "role"}                        viewer
//   GET  /api/jobs                    {"jobs": [JobStatus]}, newest first     viewer
//   GET  /api/jobs/ID                 JobStatus                               viewer
//   GET  /api/jobs/ID/rounds          ListRoundsResponse                      viewer
//   GET  /api/jobs/ID/events          Server-Sent Events: round_opened, round_closed
//                                     (RoundRecord), job_changed (JobStatus)  viewer
//   POST /api/jobs/ID/stop            body {"reason"}; JobStatus              operator
//   GET  /api/clients[?include_inactive=1]  ListClientsResponse               viewer
//
// Messages are protobuf's JSON with the proto field names (snake_case) and every field
// present (int64 as strings). Errors: {"error": message, "code": "PERMISSION_DENIED"} with
// 400 (INVALID_ARGUMENT), 401 (UNAUTHENTICATED), 403 (PERMISSION_DENIED), 404, 409
// (FAILED_PRECONDITION), 503 (UNAVAILABLE) or 500.
//
// TLS: with a certificate and key the console serves HTTPS only; without, it must listen on
// loopback and serves loopback peers only (as the plaintext admin listener). Bounds: 32
// worker threads, at most 16 event streams at once (503 beyond), request bodies of 64 KiB,
// 10 s to read a request; event streams send a comment every 5 s, so a closed tab frees
// its thread within 5 s. Responses forbid framing and inline script (Content-Security-Policy)
// and /api responses are not cached.
#ifndef FEDGE_SERVER_GRPC_CONSOLE_HTTP_H_
#define FEDGE_SERVER_GRPC_CONSOLE_HTTP_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/admin_api.h"

namespace httplib {
class Server;
}

namespace fedge::server {

struct ConsoleOptions {
  std::string listen;          // host:port (port 0 = any free port)
  std::string tls_cert_file;   // PEM; with tls_key_file: HTTPS
  std::string tls_key_file;
  int max_event_streams = 16;
};

class ConsoleHttpServer {
 public:
  // Binds and serves `api` (which must outlive the server). INVALID_ARGUMENT for a
  // malformed address, a plaintext address off loopback or half a TLS pair; UNAVAILABLE
  // when bind fails or the certificate does not load.
  static absl::StatusOr<std::unique_ptr<ConsoleHttpServer>> Start(const ConsoleOptions& options,
                                                                   AdminApi* api);
  ~ConsoleHttpServer();  // Stop()
  int port() const { return port_; }
  bool tls() const { return tls_; }
  // Ends event streams at their next poll, stops listening and joins the thread. Idempotent.
  void Stop();

 private:
  ConsoleHttpServer() = default;
  void Route(AdminApi* api, int max_event_streams);

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> event_streams_{0};
  int port_ = 0;
  bool tls_ = false;
};

// The embedded files (console_assets.cc, generated at build time): content, or null for an
// unknown path ("/", "/console.js", "/console.css", "/chart.js").
struct ConsoleAsset {
  const char* data;
  size_t size;
  const char* content_type;
};
const ConsoleAsset* FindConsoleAsset(const std::string& path);

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_CONSOLE_HTTP_H_
