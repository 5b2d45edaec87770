// SPDX-License-Identifier: MIT
#include "hostile_server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace dogpile::test {
namespace {

using namespace std::chrono_literals;

// Sends all of `bytes` unless the peer is gone or `stop` is set; false then.
bool send_all(int fd, std::string_view bytes, const std::atomic<bool>& stop,
              std::atomic<std::size_t>& sent) {
  while (!bytes.empty()) {
    if (stop.load()) return false;
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      return false;
    }
    sent += static_cast<std::size_t>(n);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Waits `how_long`, or less if stopped; false if stopped.
bool pause_for(std::chrono::milliseconds how_long, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < until) {
    if (stop.load()) return false;
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(how_long, 5ms));
  }
  return true;
}

// The first space-separated token after the command (the key).
std::string_view key_of(std::string_view line) {
  const auto space = line.find(' ');
  if (space == std::string_view::npos) return {};
  std::string_view rest = line.substr(space + 1);
  return rest.substr(0, rest.find(' '));
}

// The opaque token (O...) of a meta request line, with its 'O'.
std::string_view opaque_of(std::string_view line) {
  for (std::size_t at = line.find(" O"); at != std::string_view::npos;
       at = line.find(" O", at + 1)) {
    std::string_view token = line.substr(at + 1);
    return token.substr(0, token.find(' '));
  }
  return {};
}

}  // namespace

const char* HostileServer::name(Reply reply) noexcept {
  switch (reply) {
    case Reply::honest:
      return "honest";
    case Reply::stream:
      return "streams a 1 TiB value";
    case Reply::stream_endless:
      return "streams a line without end";
    case Reply::drip:
      return "drips a byte every 20 ms";
    case Reply::stall_mid_value:
      return "stalls mid-value";
    case Reply::truncated:
      return "truncates and closes";
    case Reply::reset:
      return "resets the connection";
    case Reply::out_of_order:
      return "answers another request";
    case Reply::extra_replies:
      return "sends an extra reply";
    case Reply::garbage:
      return "sends garbage";
    case Reply::server_error:
      return "refuses: SERVER_ERROR";
  }
  return "?";
}

HostileServer::HostileServer(Reply reply, std::string stats_time)
    : reply_(reply), stats_time_(std::move(stats_time)) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_, 64) != 0) {
    ::close(listener_);
    throw std::runtime_error("hostile server: cannot listen");
  }
  socklen_t length = sizeof addr;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &length);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this, one] {
    while (!stop_.load()) {
      pollfd pfd{listener_, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  });
}

HostileServer::~HostileServer() {
  stop_ = true;
  acceptor_.join();
  for (auto& t : connections_) t.join();
  ::close(listener_);
}

std::string HostileServer::options() const { return "--SERVER=127.0.0.1:" + std::to_string(port_); }

void HostileServer::serve(int fd) {
  std::string in;
  char buffer[4096];
  bool open = true;
  while (open && !stop_.load()) {
    const auto end = in.find("\r\n");
    if (end == std::string::npos) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      in.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    const std::string line = in.substr(0, end);
    in.erase(0, end + 2);
    const std::string_view command = std::string_view(line).substr(0, line.find(' '));
    const bool meta = command.size() == 2 && command[0] == 'm';
    if (command != "mn" && line != "stats settings") ++requests_;
    std::string reply;
    if (command == "mn") {
      reply = "MN\r\n";
    } else if (line == "stats settings") {
      reply = "STAT item_size_max 1048576\r\nEND\r\n";
    } else if (command == "stats") {
      reply = "STAT time " +
              (stats_time_.empty() ? std::to_string(std::time(nullptr)) : stats_time_) +
              "\r\nEND\r\n";
    } else if (command == "ms" || command == "set" || command == "add" || command == "cas") {
      // A write: its data block is skipped, and it is stored (on paper).
      // Its length: ms <key> <length> ...; set <key> <flags> <exptime> <length>.
      std::vector<std::string> tokens;
      for (std::size_t at = 0; at <= line.size();) {
        const std::size_t space = std::min(line.find(' ', at), line.size());
        tokens.push_back(line.substr(at, space - at));
        at = space + 1;
      }
      const std::size_t field = command == "ms" ? 2 : 4;
      const std::size_t length = tokens.size() > field ? std::stoul(tokens[field]) : 0;
      while (in.size() < length + 2 && open) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) open = false;
        if (n > 0) in.append(buffer, static_cast<std::size_t>(n));
      }
      if (!open) break;
      in.erase(0, length + 2);
      reply = meta ? "HD " + std::string(opaque_of(line)) + "\r\n" : std::string("STORED\r\n");
    } else if (command == "md" || command == "delete" || command == "touch") {
      reply = meta ? "NF " + std::string(opaque_of(line)) + "\r\n" : std::string("NOT_FOUND\r\n");
    } else if (command == "mg" || command == "get" || command == "gets") {
      ++reads_;
      const std::string key(key_of(line));
      const std::string opaque(opaque_of(line));
      const std::string value(1024, 'v');
      const std::string good = meta ? "VA 1024 f0 c1 " + opaque + "\r\n" + value + "\r\n"
                                    : "VALUE " + key + " 0 1024 1\r\n" + value + "\r\nEND\r\n";
      switch (reply_) {
        case Reply::honest:
          reply = meta ? "EN " + opaque + "\r\n" : std::string("END\r\n");
          break;
        case Reply::stream: {
          const std::string header = meta ? "VA 1099511627776 f0 " + opaque + "\r\n"
                                          : "VALUE " + key + " 0 1099511627776 1\r\n";
          const std::string chunk(64 * 1024, 'x');
          open = send_all(fd, header, stop_, sent_);
          while (open) open = send_all(fd, chunk, stop_, sent_);
          continue;
        }
        case Reply::stream_endless: {
          const std::string chunk(64 * 1024, 'x');
          open = send_all(fd, meta ? "VA 1" : "VALUE ", stop_, sent_);
          while (open) open = send_all(fd, chunk, stop_, sent_);
          continue;
        }
        case Reply::drip:
          for (const char c : good) {
            if (!pause_for(20ms, stop_) || !send_all(fd, std::string_view(&c, 1), stop_, sent_)) {
              open = false;
              break;
            }
          }
          continue;
        case Reply::stall_mid_value:
          open = send_all(fd, good.substr(0, good.size() / 2), stop_, sent_);
          while (open && pause_for(50ms, stop_)) {
            pollfd pfd{fd, POLLIN, 0};
            if (::poll(&pfd, 1, 0) > 0 && ::recv(fd, buffer, sizeof buffer, 0) <= 0) open = false;
          }
          continue;
        case Reply::truncated:
          send_all(fd, good.substr(0, good.size() / 2), stop_, sent_);
          open = false;
          continue;
        case Reply::reset: {
          const linger hard{1, 0};
          ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
          open = false;
          continue;
        }
        case Reply::out_of_order:
          reply = meta ? "VA 1024 f0 c1 O999999\r\n" + value + "\r\n"
                       : "VALUE another" + key + " 0 1024 1\r\n" + value + "\r\nEND\r\n";
          break;
        case Reply::extra_replies:
          reply = good + (meta ? "HD " + opaque + "\r\n" : std::string("STORED\r\n"));
          break;
        case Reply::garbage:
          reply = "\x01\x02 hello \xff\xfe\r\nVALUE\r\n\r\n";
          break;
        case Reply::server_error:
          reply = "SERVER_ERROR out of memory storing object\r\n";
          break;
      }
    } else {
      reply = "ERROR\r\n";
    }
    open = send_all(fd, reply, stop_, sent_);
  }
  ::close(fd);
}

}  // namespace dogpile::test
