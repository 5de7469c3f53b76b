// The coordinator's Prometheus endpoint: GET /metrics over plain HTTP (cpp-httplib) on
// its own thread, 404 for any other path. fedge-coordinator --metrics-listen host:port.
#ifndef FEDGE_SERVER_GRPC_METRICS_HTTP_H_
#define FEDGE_SERVER_GRPC_METRICS_HTTP_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/metrics_exporter.h"

namespace httplib {
class Server;
}

namespace fedge::server {

class MetricsHttpServer {
 public:
  // Binds `host:port` (port 0 = any free port) and serves `exporter` (which must outlive
  // the server). INVALID_ARGUMENT for a malformed address, UNAVAILABLE when bind fails.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                    MetricsExporter* exporter);
  ~MetricsHttpServer();  // Stop()
  int port() const { return port_; }
  // Stops listening and joins the thread. Idempotent.
  void Stop();

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fedge::server

#endif  // FEDGE_SERVER_GRPC_METRICS_HTTP_H_
