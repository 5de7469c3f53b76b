#include "server/grpc/metrics_http.h"

#include <httplib.h>

#include "base/status_macros.h"
#include "server/grpc/http_listen.h"

namespace fedge::server {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, MetricsExporter* exporter) {
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->http_ = std::make_unique<httplib::Server>();
  s->http_->Get("/metrics", [exporter](const httplib::Request&, httplib::Response& res) {
    res.set_content(exporter->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  FEDGE_ASSIGN_OR_RETURN(s->port_,
                         BindAndServe(s->http_.get(), listen, "metrics: --metrics-listen",
                                      &s->thread_));
  return s;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (http_ != nullptr) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fedge::server
