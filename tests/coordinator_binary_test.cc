// The fedge-coordinator process: refuses unsafe setups with a clear message, serves TLS and
// mutual TLS (certificates made with the openssl command line at test time), serves
// Prometheus metrics over HTTP with --metrics-listen, and exits 0 on SIGTERM. FEDGE_COORDINATOR_PATH is the binary under test.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/coordinator.grpc.pb.h"
#include "tests/test_certificates.h"

namespace fedge {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "binary-test-token";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
}

// Runs a shell command; returns (exit code, stdout+stderr).
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class CoordinatorBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/coordinator_binary_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    token_file_ = dir_ + "/token";
    WriteFile(token_file_, std::string(kToken) + "\n", 0600);
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Starts the coordinator with `args` on a free port; output goes to dir_/log.
  void Spawn(const std::vector<std::string>& args) {
    port_ = FreePort();
    std::vector<std::string> all = {FEDGE_COORDINATOR_PATH,
                                    "--state-dir=" + dir_ + "/state",
                                    "--enrollment-token-file=" + token_file_,
                                    absl::StrCat("--listen=127.0.0.1:", port_),
                                    "--admin-listen=127.0.0.1:0"};
    all.insert(all.end(), args.begin(), args.end());
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      FILE* log = std::fopen((dir_ + "/log").c_str(), "w");
      dup2(fileno(log), 2);
      dup2(fileno(log), 1);
      std::vector<char*> argv;
      for (std::string& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }

  // Register over `credentials` (to "localhost", the certificate's name), retrying while
  // the server starts.
  grpc::Status Register(const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                        int tries = 50) {
    for (int i = 0; i < 100 && ReadFile(dir_ + "/log").find("serving on") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    grpc::Status s;
    for (int i = 0; i < tries; ++i) {
      // A fresh channel per try: no reconnect backoff from an earlier refused attempt.
      auto channel = grpc::CreateChannel(absl::StrCat("localhost:", port_), credentials);
      auto stub = v1::Coordinator::NewStub(channel);
      v1::RegisterRequest r;
      r.set_enrollment_token(kToken);
      v1::RegisterResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      s = stub->Register(&ctx, r, &resp);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return s;
  }

  // SIGTERM, then the exit code (-1 when it did not exit within 10 s).
  int Terminate() {
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return -1;
  }

  // A CA, a server certificate for localhost/127.0.0.1 and a client certificate.
  bool MakeCertificates() {
    const absl::Status made = ::fedge::testing::MakeTestCertificates(dir_);
    if (!made.ok()) ADD_FAILURE() << made.message();
    return made.ok();
  }

  std::string dir_, token_file_;
  int port_ = 0;
  pid_t pid_ = 0;
};

TEST_F(CoordinatorBinaryTest, RefusesUnsafeSetupsWithAClearMessage) {
  const std::string bin = FEDGE_COORDINATOR_PATH;
  const std::string state = " --state-dir=" + dir_ + "/state";
  auto [code, out] = RunCommand(bin + " --enrollment-token-file=" + token_file_ + " --insecure");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--state-dir is required"));

  std::tie(code, out) = RunCommand(bin + state + " --insecure");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--enrollment-token-file is required"));

  std::tie(code, out) = RunCommand(bin + state + " --enrollment-token-file=" + dir_ + "/missing --insecure");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("does not exist"));

  WriteFile(dir_ + "/open", "x\n", 0644);
  std::tie(code, out) = RunCommand(bin + state + " --enrollment-token-file=" + dir_ + "/open --insecure");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("readable or writable by others"));

  WriteFile(dir_ + "/empty", " \n", 0600);
  std::tie(code, out) = RunCommand(bin + state + " --enrollment-token-file=" + dir_ + "/empty --insecure");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("is empty"));

  // Plaintext only when asked for.
  std::tie(code, out) = RunCommand(bin + state + " --enrollment-token-file=" + token_file_);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--insecure"));

  // --store takes a PostgreSQL URL, and the lease lasts at least a second; an unreachable
  // database is an error naming it, not a wait.
  const std::string ok = state + " --enrollment-token-file=" + token_file_ + " --insecure";
  std::tie(code, out) = RunCommand(bin + ok + " --store=/var/lib/elsewhere");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--store takes a postgresql:// URL"));
  std::tie(code, out) = RunCommand(bin + ok + " --store=postgresql://x@127.0.0.1:1/y --lease-seconds=0");
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--lease-seconds must be >= 1"));
  std::tie(code, out) = RunCommand(bin + ok + " --store=postgresql://x@127.0.0.1:1/y");
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("cannot connect to PostgreSQL"));
}

TEST_F(CoordinatorBinaryTest, OperatorsSubcommandAddsListsAndRevokesTokens) {
  const std::string bin = FEDGE_COORDINATOR_PATH;
  const std::string state = " --state-dir=" + dir_ + "/state";
  auto [code, out] = RunCommand(bin + " operators add alice --role operator" + state);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("fedge-op-"));
  EXPECT_THAT(out, HasSubstr("shown once"));
  std::tie(code, out) = RunCommand(bin + " operators add bob" + state);  // viewer by default
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = RunCommand(bin + " operators add alice" + state);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("exists"));
  std::tie(code, out) = RunCommand(bin + " operators add carol --role root" + state);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("unknown role"));
  std::tie(code, out) = RunCommand(bin + " operators revoke alice" + state);
  EXPECT_EQ(code, 0) << out;
  std::tie(code, out) = RunCommand(bin + " operators list" + state);
  ASSERT_EQ(code, 0) << out;
  EXPECT_THAT(out, ::testing::ContainsRegex("alice +operator .* revoked"));
  EXPECT_THAT(out, ::testing::ContainsRegex("bob +viewer .* active"));
  EXPECT_EQ(out.find("fedge-op-"), std::string::npos);  // only hashes are kept
  std::tie(code, out) = RunCommand(bin + " operators" + state);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("usage"));
  std::tie(code, out) = RunCommand(bin + " frobnicate" + state);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("unknown command"));
}

TEST_F(CoordinatorBinaryTest, PlaintextAdminOffLoopbackIsRefused) {
  const std::string bin = FEDGE_COORDINATOR_PATH;
  auto [code, out] = RunCommand(bin + " --state-dir=" + dir_ + "/state --enrollment-token-file=" +
                                token_file_ + " --insecure --listen=127.0.0.1:0 " +
                                "--admin-listen=0.0.0.0:0");
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("not on loopback"));
}

TEST_F(CoordinatorBinaryTest, InsecureSaysSoLoudlyAndStopsOnSigterm) {
  Spawn({"--insecure"});
  grpc::Status s = Register(grpc::InsecureChannelCredentials());
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Terminate(), 0);
  const std::string log = ReadFile(dir_ + "/log");
  EXPECT_THAT(log, HasSubstr("PLAINTEXT"));
  EXPECT_THAT(log, HasSubstr("SIGTERM, shutting down"));
}

// GET `path` from 127.0.0.1:`port` over HTTP/1.0; the whole response ("" if no connection).
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      std::array<char, 4096> buf;
      ssize_t n;
      while ((n = recv(fd, buf.data(), buf.size(), 0)) > 0) out.append(buf.data(), n);
    }
  }
  close(fd);
  return out;
}

TEST_F(CoordinatorBinaryTest, ServesPrometheusMetrics) {
  const int metrics_port = FreePort();
  Spawn({"--insecure", absl::StrCat("--metrics-listen=127.0.0.1:", metrics_port)});
  std::string response;
  for (int i = 0; i < 100 && response.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    response = HttpGet(metrics_port, "/metrics");
  }
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200"));
  EXPECT_THAT(response, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(response, HasSubstr("\n# TYPE fedge_job_running gauge\nfedge_job_running 0\n"));
  EXPECT_THAT(HttpGet(metrics_port, "/"), HasSubstr("HTTP/1.1 404"));
  EXPECT_EQ(Terminate(), 0);
  EXPECT_THAT(ReadFile(dir_ + "/log"), HasSubstr("Prometheus metrics at"));
}

TEST_F(CoordinatorBinaryTest, ServesTls) {
  if (!MakeCertificates()) return;
  Spawn({"--tls-cert=" + dir_ + "/server.crt", "--tls-key=" + dir_ + "/server.key"});
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(dir_ + "/ca.crt");
  grpc::Status s = Register(grpc::SslCredentials(ssl));
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << ReadFile(dir_ + "/log");
  // A plaintext client gets nowhere.
  EXPECT_FALSE(Register(grpc::InsecureChannelCredentials(), 2).ok());
  EXPECT_EQ(Terminate(), 0);
}

TEST_F(CoordinatorBinaryTest, MutualTlsNeedsAClientCertificate) {
  if (!MakeCertificates()) return;
  Spawn({"--tls-cert=" + dir_ + "/server.crt", "--tls-key=" + dir_ + "/server.key",
         "--tls-client-ca=" + dir_ + "/ca.crt"});
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(dir_ + "/ca.crt");
  grpc::SslCredentialsOptions without_cert = ssl;
  ssl.pem_private_key = ReadFile(dir_ + "/client.key");
  ssl.pem_cert_chain = ReadFile(dir_ + "/client.crt");
  grpc::Status s = Register(grpc::SslCredentials(ssl));
  ASSERT_TRUE(s.ok()) << s.error_message() << "\n" << ReadFile(dir_ + "/log");
  EXPECT_FALSE(Register(grpc::SslCredentials(without_cert), 2).ok());
  EXPECT_EQ(Terminate(), 0);
}

}  // namespace
}  // namespace fedge
