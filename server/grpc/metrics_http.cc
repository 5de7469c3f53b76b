#include "server/grpc/metrics_http.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fedge::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, MetricsExporter* exporter) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: --metrics-listen '", listen, "' is not host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->http_ = std::make_unique<httplib::Server>();
  s->http_->Get("/metrics", [exporter](const httplib::Request&, httplib::Response& res) {
    res.set_content(exporter->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  if (port == 0) {
    s->port_ = s->http_->bind_to_any_port(host);
    if (s->port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", listen));
    }
  } else {
    if (!s->http_->bind_to_port(host, port)) {
      return absl::UnavailableError(absl::StrCat("metrics: cannot bind ", listen));
    }
    s->port_ = port;
  }
  httplib::Server* http = s->http_.get();
  s->thread_ = std::thread([http] { http->listen_after_bind(); });
  // stop() before the loop runs would be lost (and Stop() would then hang on join).
  while (!http->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return s;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (http_ != nullptr) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fedge::server
