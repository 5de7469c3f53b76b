// A throwaway PostgreSQL server for tests: Debian's initdb and postgres, in a temporary
// directory, on a free loopback port, trust authentication for the local user "fedge".
//
// PostgreSQL refuses to run as root. Run as root (as CI does), the server runs as the
// system user fedge-pg, which scripts/setup.sh creates; the test fails with that hint when
// the user is missing. The server is this process's child with a parent-death signal, so
// it ends with the test, pass, fail or crash. The signal follows the THREAD that started
// it: call Start and Restart from a thread that outlives the server (the main thread).
#ifndef FEDGE_TESTS_POSTGRES_SERVER_H_
#define FEDGE_TESTS_POSTGRES_SERVER_H_

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fedge::testing {

class PostgresServer {
 public:
  static constexpr char kRunAsUser[] = "fedge-pg";

  // Initializes and starts a server; the error says why it could not.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Start() {
    std::unique_ptr<PostgresServer> s(new PostgresServer());
    if (absl::Status st = s->Init(); !st.ok()) return st;
    if (absl::Status st = s->Launch(); !st.ok()) return st;
    return s;
  }
  ~PostgresServer() {
    Stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A new empty database, and its URL.
  absl::StatusOr<std::string> CreateDatabase(const std::string& name) {
    PGconn* c = PQconnectdb(Url("postgres").c_str());
    const bool ok = PQstatus(c) == CONNECTION_OK;
    std::string error = PQerrorMessage(c);
    if (ok) {
      PGresult* r = PQexec(c, absl::StrCat("CREATE DATABASE \"", name, "\"").c_str());
      if (PQresultStatus(r) != PGRES_COMMAND_OK) error = PQresultErrorMessage(r);
      else error.clear();
      PQclear(r);
    }
    PQfinish(c);
    if (!error.empty()) return absl::InternalError("PostgresServer: " + error);
    return Url(name);
  }
  std::string Url(const std::string& database) const {
    return absl::StrCat("postgresql://fedge@127.0.0.1:", port_, "/", database);
  }

  // Fast shutdown (SIGINT), then SIGKILL after 10 s.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGINT);
    for (int i = 0; i < 1000; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // Stops and starts again on the same port and data.
  absl::Status Restart() {
    Stop();
    return Launch();
  }

  const std::string& log_path() const { return log_; }

 private:
  PostgresServer() = default;

  static std::string BinDir() {
    std::vector<std::string> dirs;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
      if (std::filesystem::exists(e.path() / "bin" / "postgres")) dirs.push_back(e.path() / "bin");
    }
    std::sort(dirs.begin(), dirs.end());
    return dirs.empty() ? "" : dirs.back();
  }

  static int FreePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port = ntohs(a.sin_port);
    }
    close(fd);
    return port;
  }

  // Forks `argv`, as kRunAsUser when this process is root, output appended to the log.
  absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv) {
    std::vector<char*> args;  // built before fork: the child only calls what is safe there
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("PostgresServer: fork failed");
    if (pid > 0) return pid;
    if (uid_ != 0 && (setgroups(0, nullptr) != 0 || setgid(gid_) != 0 || setuid(uid_) != 0)) {
      _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, SIGQUIT);  // after setuid, which clears it
    if (getppid() != parent) _exit(125);  // the parent died before the signal was set
    const int log = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    execv(args[0], args.data());
    _exit(127);
  }

  absl::Status Init() {
    bin_ = BinDir();
    if (bin_.empty()) {
      return absl::FailedPreconditionError(
          "PostgresServer: no /usr/lib/postgresql/*/bin/postgres: install Debian's postgresql "
          "(scripts/setup.sh does)");
    }
    if (geteuid() == 0) {
      const passwd* pw = getpwnam(kRunAsUser);
      if (pw == nullptr) {
        return absl::FailedPreconditionError(absl::StrCat(
            "PostgresServer: PostgreSQL does not run as root and there is no user ", kRunAsUser,
            " to run it as: scripts/setup.sh creates it"));
      }
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
    }
    std::string tmpl = (std::filesystem::temp_directory_path() / "fedge-pg-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return absl::InternalError("PostgresServer: mkdtemp");
    dir_ = tmpl;
    data_ = dir_ + "/data";
    log_ = dir_ + "/server.log";
    if (uid_ != 0 && chown(dir_.c_str(), uid_, gid_) != 0) {
      return absl::InternalError("PostgresServer: cannot chown " + dir_);
    }
    absl::StatusOr<pid_t> pid = Spawn({bin_ + "/initdb", "-D", data_, "-U", "fedge", "-A",
                                       "trust", "-E", "UTF8", "--locale=C", "--no-sync"});
    if (!pid.ok()) return pid.status();
    int status = 0;
    waitpid(*pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return absl::InternalError("PostgresServer: initdb failed; see " + log_ + ":\n" + Log());
    }
    port_ = FreePort();
    return absl::OkStatus();
  }

  absl::Status Launch() {
    absl::StatusOr<pid_t> pid =
        Spawn({bin_ + "/postgres", "-D", data_, "-p", std::to_string(port_), "-c",
               "unix_socket_directories=", "-c", "listen_addresses=127.0.0.1", "-c",
               "fsync=off", "-c", "max_connections=40"});
    if (!pid.ok()) return pid.status();
    pid_ = *pid;
    const std::string url = Url("postgres");
    for (int i = 0; i < 600; ++i) {
      if (PQping(url.c_str()) == PQPING_OK) return absl::OkStatus();
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError("PostgresServer: postgres exited; see " + log_ + ":\n" + Log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return absl::DeadlineExceededError("PostgresServer: not ready after 30 s:\n" + Log());
  }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string bin_, dir_, data_, log_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_POSTGRES_SERVER_H_
