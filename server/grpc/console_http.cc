#include "server/grpc/console_http.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "server/grpc/http_listen.h"
#include "server/rate_limiter.h"

namespace fedge::server {
namespace {

constexpr int kWorkerThreads = 32;
constexpr size_t kMaxBodyBytes = 64 << 10;
constexpr absl::Duration kKeepaliveEvery = absl::Seconds(5);

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

std::string JsonObject(std::initializer_list<std::pair<const char*, std::string>> fields) {
  google::protobuf::Struct s;
  for (const auto& [k, v] : fields) (*s.mutable_fields())[k].set_string_value(v);
  return Json(s);
}

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists: return 409;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

void SendError(const absl::Status& s, httplib::Response& res) {
  res.status = HttpStatus(s.code());
  res.set_content(JsonObject({{"error", std::string(s.message())},
                              {"code", absl::StatusCodeToString(s.code())}}),
                  "application/json");
}

void SendJson(std::string body, httplib::Response& res) {
  res.set_content(std::move(body), "application/json");
}

std::string Peer(const httplib::Request& req) {
  return absl::StrCat(req.remote_addr, ":", req.remote_port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ConsoleHttpServer>> ConsoleHttpServer::Start(
    const ConsoleOptions& options, AdminApi* api) {
  const bool tls = !options.tls_cert_file.empty();
  if (tls != !options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("console: give a TLS certificate and its key, or neither");
  }
  FEDGE_ASSIGN_OR_RETURN(auto host_port, ParseListenAddress(options.listen, "--console-listen"));
  if (!tls && !IsLoopbackAddress(host_port.first)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "console: --console-listen ", options.listen,
        " is plaintext and not on loopback; give the coordinator TLS (--tls-cert, --tls-key) "
        "or a 127.0.0.1 address"));
  }
  std::unique_ptr<ConsoleHttpServer> s(new ConsoleHttpServer());
  if (tls) {
    auto ssl = std::make_unique<httplib::SSLServer>(options.tls_cert_file.c_str(),
                                                    options.tls_key_file.c_str());
    if (!ssl->is_valid()) {
      return absl::UnavailableError(absl::StrCat("console: cannot load the TLS certificate ",
                                                 options.tls_cert_file, " and key"));
    }
    s->http_ = std::move(ssl);
  } else {
    s->http_ = std::make_unique<httplib::Server>();
  }
  s->tls_ = tls;
  s->http_->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  s->http_->set_payload_max_length(kMaxBodyBytes);
  s->http_->set_read_timeout(10, 0);
  s->http_->set_write_timeout(10, 0);
  s->http_->set_keep_alive_max_count(100);
  s->http_->set_default_headers({
      {"Content-Security-Policy",
       "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'none'"},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
  });
  s->Route(api, options.max_event_streams);
  FEDGE_ASSIGN_OR_RETURN(s->port_,
                         BindAndServe(s->http_.get(), options.listen, "console: --console-listen",
                                      &s->thread_));
  return s;
}

void ConsoleHttpServer::Route(AdminApi* api, int max_event_streams) {
  httplib::Server& http = *http_;
  for (const char* path : {"/", "/index.html", "/console.js", "/console.css", "/chart.js"}) {
    http.Get(path, [](const httplib::Request& req, httplib::Response& res) {
      const ConsoleAsset* a = FindConsoleAsset(req.path);
      res.set_content(a->data, a->size, a->content_type);
    });
  }
  // Authenticates an /api call for `role`; on refusal answers the error and returns null.
  auto caller = [api](const httplib::Request& req, httplib::Response& res, OperatorRole role,
                      absl::string_view call) -> std::optional<Operator> {
    res.set_header("Cache-Control", "no-store");
    absl::StatusOr<Operator> op =
        api->Authenticate(req.get_header_value("Authorization"), req.remote_addr, role,
                          absl::StrCat("console ", call));
    if (!op.ok()) {
      SendError(op.status(), res);
      return std::nullopt;
    }
    return *std::move(op);
  };

  http.Get("/api/whoami", [caller](const httplib::Request& req, httplib::Response& res) {
    std::optional<Operator> op = caller(req, res, OperatorRole::kViewer, "whoami");
    if (!op) return;
    SendJson(JsonObject({{"name", op->name}, {"role", OperatorRoleName(op->role)}}), res);
  });
  http.Get("/api/jobs", [api, caller](const httplib::Request& req, httplib::Response& res) {
    if (!caller(req, res, OperatorRole::kViewer, "ListJobs")) return;
    absl::StatusOr<std::vector<v1::JobStatus>> jobs = api->ListJobs(0);
    if (!jobs.ok()) return SendError(jobs.status(), res);
    std::string body = "{\"jobs\":[";
    for (size_t i = 0; i < jobs->size(); ++i) {
      absl::StrAppend(&body, i ? "," : "", Json((*jobs)[i]));
    }
    SendJson(absl::StrCat(body, "]}"), res);
  });
  http.Get(R"(/api/jobs/([^/]+))", [api, caller](const httplib::Request& req,
                                                 httplib::Response& res) {
    if (!caller(req, res, OperatorRole::kViewer, "GetJob")) return;
    absl::StatusOr<v1::JobStatus> job = api->GetJob(req.matches[1]);
    if (!job.ok()) return SendError(job.status(), res);
    SendJson(Json(*job), res);
  });
  http.Get(R"(/api/jobs/([^/]+)/rounds)", [api, caller](const httplib::Request& req,
                                                        httplib::Response& res) {
    if (!caller(req, res, OperatorRole::kViewer, "ListRounds")) return;
    v1::ListRoundsRequest r;
    r.set_job_id(req.matches[1]);
    absl::StatusOr<v1::ListRoundsResponse> rounds = api->ListRounds(r);
    if (!rounds.ok()) return SendError(rounds.status(), res);
    SendJson(Json(*rounds), res);
  });
  http.Get("/api/clients", [api, caller](const httplib::Request& req, httplib::Response& res) {
    if (!caller(req, res, OperatorRole::kViewer, "ListClients")) return;
    v1::ListClientsRequest r;
    r.set_include_inactive(req.get_param_value("include_inactive") == "1");
    absl::StatusOr<v1::ListClientsResponse> clients = api->ListClients(r);
    if (!clients.ok()) return SendError(clients.status(), res);
    SendJson(Json(*clients), res);
  });
  http.Post(R"(/api/jobs/([^/]+)/stop)", [api, caller](const httplib::Request& req,
                                                       httplib::Response& res) {
    std::optional<Operator> op = caller(req, res, OperatorRole::kOperator, "StopJob");
    if (!op) return;
    v1::StopJobRequest r;
    if (!req.body.empty()) {
      google::protobuf::util::JsonParseOptions o;
      const auto parsed = google::protobuf::util::JsonStringToMessage(req.body, &r, o);
      if (!parsed.ok()) {
        return SendError(absl::InvalidArgumentError(absl::StrCat(
                             "console: the body is not a StopJobRequest in JSON: ",
                             std::string(parsed.message()))),
                         res);
      }
    }
    r.set_job_id(req.matches[1]);
    absl::StatusOr<v1::JobStatus> status = api->StopJob(*op, Peer(req), r);
    if (!status.ok()) return SendError(status.status(), res);
    SendJson(Json(*status), res);
  });
  http.Get(R"(/api/jobs/([^/]+)/events)", [this, api, caller, max_event_streams](
                                               const httplib::Request& req,
                                               httplib::Response& res) {
    if (!caller(req, res, OperatorRole::kViewer, "WatchJob")) return;
    const std::string id = req.matches[1];
    absl::StatusOr<v1::JobStatus> job = api->GetJob(id);
    if (!job.ok()) return SendError(job.status(), res);
    if (event_streams_.fetch_add(1) >= max_event_streams) {
      event_streams_.fetch_sub(1);
      return SendError(absl::UnavailableError(absl::StrCat(
                           "console: ", max_event_streams, " event streams are open already")),
                       res);
    }
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, api, id](size_t, httplib::DataSink& sink) {
          auto write = [&sink](const std::string& s) { return sink.write(s.data(), s.size()); };
          if (!write(": watching\n\n")) return false;
          absl::Time last = absl::Now();
          v1::WatchJobRequest w;
          w.set_job_id(id);
          const absl::Status s = api->WatchJob(
              w,
              [&](v1::JobEvent e) {
                const char* kind = e.has_round_opened()   ? "round_opened"
                                   : e.has_round_closed() ? "round_closed"
                                                          : "job_changed";
                const google::protobuf::Message& m =
                    e.has_round_opened()   ? static_cast<const google::protobuf::Message&>(e.round_opened())
                    : e.has_round_closed() ? static_cast<const google::protobuf::Message&>(e.round_closed())
                                           : e.job_changed();
                last = absl::Now();
                return write(absl::StrCat("event: ", kind, "\ndata: ", Json(m), "\n\n"));
              },
              [&] {
                if (stopping_.load() || !sink.is_writable()) return true;
                if (absl::Now() - last >= kKeepaliveEvery) {
                  last = absl::Now();
                  return !write(": keepalive\n\n");
                }
                return false;
              });
          if (!s.ok() && !absl::IsCancelled(s)) {
            write(absl::StrCat("event: error\ndata: ",
                               JsonObject({{"error", std::string(s.message())},
                                           {"code", absl::StatusCodeToString(s.code())}}),
                               "\n\n"));
          }
          sink.done();
          return true;
        },
        [this](bool) { event_streams_.fetch_sub(1); });
  });
}

ConsoleHttpServer::~ConsoleHttpServer() { Stop(); }

void ConsoleHttpServer::Stop() {
  stopping_.store(true);
  if (http_ != nullptr) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fedge::server
