// SPDX-License-Identifier: MIT
// A /metrics page for Prometheus: a region's counters and histograms served
// over HTTP by dogpile::prometheus_text, next to the service's traffic.
//
//   dogpile_metrics_page [--memcached OPTIONS] [--port N] [--once]
//
// Serves http://127.0.0.1:<port>/metrics (port 0: the kernel picks one) while
// four threads call get_or_create on a few keys. --once: fetches its own page
// once, prints it and exits (the test that runs this example). Any HTTP
// server the service already has does the same: on GET /metrics, reply with
// prometheus_text() and Content-Type "text/plain; version=0.0.4".
#include <arpa/inet.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "dogpile/dogpile.hpp"

namespace {

// One request per connection: enough for a scraper.
void serve(int listener, const dogpile::CacheRegion& region, std::atomic<bool>& stop) {
  while (!stop.load()) {
    const int client = ::accept(listener, nullptr, nullptr);
    if (client < 0) continue;
    char request[2048];
    const ssize_t n = ::recv(client, request, sizeof request - 1, 0);
    const std::string_view first(request, n > 0 ? static_cast<std::size_t>(n) : 0);
    std::string reply;
    if (first.starts_with("GET /metrics ")) {
      const std::string body = dogpile::prometheus_text(region, "profiles");
      reply = fmt::format(
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
          "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
          body.size(), body);
    } else {
      reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    }
    for (std::size_t sent = 0; sent < reply.size();) {
      const ssize_t k = ::send(client, reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
      if (k <= 0) break;
      sent += static_cast<std::size_t>(k);
    }
    ::close(client);
  }
}

std::string fetch(int port, std::string_view path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buffer[65536];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) {
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string memcached;
  int port = 0;
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--once") {
      once = true;
    } else if (arg == "--memcached" && i + 1 < argc) {
      memcached = argv[++i];
    } else if (arg == "--port" && i + 1 < argc) {
      port = std::stoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--memcached OPTIONS] [--port N] [--once]\n", argv[0]);
      return 2;
    }
  }
  std::shared_ptr<dogpile::Backend> backend;
  if (memcached.empty()) {
    backend = std::make_shared<dogpile::MemoryBackend>();
  } else {
    backend = std::make_shared<dogpile::MemcachedBackend>(memcached);
  }
  dogpile::RegionOptions options;
  options.expiration = std::chrono::milliseconds(200);
  dogpile::CacheRegion region(backend, options);

  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  const int yes = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // loopback only
  socklen_t length = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 16) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    std::perror("listen");
    return 1;
  }
  port = ntohs(addr.sin_port);
  fmt::print("serving http://127.0.0.1:{}/metrics\n", port);
  std::fflush(stdout);

  std::atomic<bool> stop{false};
  std::vector<std::jthread> traffic;
  for (int t = 0; t < 4; ++t) {
    traffic.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        region.get_or_create("profile:" + std::to_string((i + t) % 8), [] {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the database
          return std::string("{\"name\":\"Ada\"}");
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  std::jthread server([&] { serve(listener, region, stop); });
  if (!once) {
    server.join();  // until killed
    return 0;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string page = fetch(port, "/metrics");
  stop = true;
  ::shutdown(listener, SHUT_RDWR);  // wakes accept()
  ::close(listener);
  traffic.clear();
  std::fwrite(page.data(), 1, page.size(), stdout);
  return page.starts_with("HTTP/1.1 200 OK") ? 0 : 1;
}
