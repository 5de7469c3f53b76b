// A TCP proxy for fault tests: forwards 127.0.0.1:port() to a target port and cuts the
// connection that carries the client→server byte at each of the given cumulative offsets
// (both sockets closed at once, as a dropped link does). Later connections are forwarded
// normally until the next cut point. Header-only, POSIX sockets, one thread per connection.
#ifndef FEDGE_TESTS_CUTTING_PROXY_H_
#define FEDGE_TESTS_CUTTING_PROXY_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace fedge::testing {

class CuttingProxy {
 public:
  // Cuts when the total client→server bytes forwarded reach each value of `cuts` (sorted).
  CuttingProxy(int target_port, std::vector<int64_t> cuts)
      : target_port_(target_port), cuts_(std::move(cuts)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(listen_fd_, 16);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~CuttingProxy() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    acceptor_.join();
    // Joined without holding mu_: a worker forwarding client bytes takes mu_ (the cut
    // points), and would wait forever for a destructor that waits for it.
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      workers.swap(workers_);
    }
    for (std::thread& t : workers) t.join();
  }

  int port() const { return port_; }
  int cuts_done() const { return cuts_done_.load(); }
  int64_t upstream_bytes() const { return upstream_.load(); }

 private:
  void Accept() {
    while (!stop_) {
      const int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(target_port_));
      if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      // A send to a peer that stopped reading gives up after a second (then the pair is
      // closed) instead of blocking past stop_.
      const timeval one_second{1, 0};
      ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &one_second, sizeof(one_second));
      ::setsockopt(server, SOL_SOCKET, SO_SNDTIMEO, &one_second, sizeof(one_second));
      std::lock_guard<std::mutex> lock(mu_);
      workers_.emplace_back([this, client, server] { Pump(client, server); });
    }
  }

  // Forwards both ways until either side closes or a cut point is reached.
  void Pump(int client, int server) {
    char buf[16384];
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (!stop_) {
      if (::poll(fds, 2, 100) < 0) break;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        size_t want = sizeof(buf);
        if (i == 0) {
          // Never forward past the next cut point: the cut falls exactly there.
          std::lock_guard<std::mutex> lock(mu_);
          const size_t next = static_cast<size_t>(cuts_done_);
          if (next < cuts_.size()) {
            const int64_t left = cuts_[next] - upstream_.load();
            if (left <= 0) {
              ++cuts_done_;
              done = true;
              break;
            }
            want = std::min<size_t>(want, static_cast<size_t>(left));
          }
        }
        const ssize_t n = ::recv(fds[i].fd, buf, want, 0);
        if (n <= 0) {
          done = true;
          break;
        }
        const int to = i == 0 ? server : client;
        for (ssize_t sent = 0; sent < n;) {
          const ssize_t w = ::send(to, buf + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
          if (w <= 0) {
            done = true;
            break;
          }
          sent += w;
        }
        if (i == 0) upstream_ += n;
      }
      if (done) break;
    }
    ::shutdown(client, SHUT_RDWR);
    ::shutdown(server, SHUT_RDWR);
    ::close(client);
    ::close(server);
  }

  const int target_port_;
  const std::vector<int64_t> cuts_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> cuts_done_{0};
  std::atomic<int64_t> upstream_{0};
  std::mutex mu_;
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

}  // namespace fedge::testing

#endif  // FEDGE_TESTS_CUTTING_PROXY_H_
