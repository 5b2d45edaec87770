// SPDX-License-Identifier: MIT
// The wire client's connections: a host checked, a pipeline run to its end
// by its limits, a `stats` reply read (see wire_client.hpp).
#include "transport/wire_client.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "base/parse_number.hpp"
#include "transport/wire_parts.hpp"

namespace dogpile::detail::wire {

[[noreturn]] void refuse(std::string_view option, std::string_view why) {
  throw std::invalid_argument(fmt::format("option {}: {}", option, why));
}

void check_host(std::string_view option, std::string_view host, bool socket_path) {
  if (host.empty()) refuse(option, "no host");
  if (host.size() > 255) refuse(option, "the host name is longer than 255 characters");
  if (socket_path) {
    for (const char c : host) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
        refuse(option, "the socket path holds a space or a control character");
      }
    }
    return;
  }
  const bool v6 = host.find(':') != std::string_view::npos;
  for (const char c : host) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '.' || (v6 ? c == ':' : (c == '-' || c == '_'));
    if (!ok) {
      refuse(option,
             fmt::format("'{}' cannot be part of a host name or address (a list of servers takes "
                         "one --SERVER each)",
                         c == ' ' ? std::string("space") : std::string(1, c)));
    }
  }
}

RingServer parse_server(std::string_view option, std::string_view value, bool socket) {
  RingServer server;
  if (socket) {  // path[/?weight]
    if (const auto slash = value.find("/?"); slash != std::string_view::npos) {
      if (!parse_number(value.substr(slash + 2), server.weight) || server.weight == 0) {
        refuse(option, "the weight is not a positive number");
      }
      value = value.substr(0, slash);
    }
    check_host(option, value, true);
    server.host = std::string(value);
    server.port = 0;
    return server;
  }
  // host[:port][/?weight] (libmemcached) or host:port:weight
  if (const auto slash = value.find("/?"); slash != std::string_view::npos) {
    if (!parse_number(value.substr(slash + 2), server.weight) || server.weight == 0) {
      refuse(option, "the weight is not a positive number");
    }
    value = value.substr(0, slash);
  }
  std::string_view host = value;
  std::string_view rest;
  bool colon_seen = false;
  if (!value.empty() && value.front() == '[') {  // [v6 address]:port
    const auto close = value.find(']');
    if (close == std::string_view::npos) refuse(option, "unclosed '['");
    host = value.substr(1, close - 1);
    rest = value.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') refuse(option, "expected ':' after ']'");
    colon_seen = !rest.empty();
    if (!rest.empty()) rest.remove_prefix(1);
  } else if (const auto colon = value.find(':'); colon != std::string_view::npos) {
    host = value.substr(0, colon);
    rest = value.substr(colon + 1);
    colon_seen = true;
  }
  check_host(option, host, false);
  if (colon_seen && rest.empty()) refuse(option, "the port is empty");
  if (!rest.empty()) {
    const auto colon = rest.find(':');
    if (!parse_number(rest.substr(0, colon), server.port) || server.port == 0) {
      refuse(option, "the port is not a number from 1 to 65535");
    }
    if (colon != std::string_view::npos) {
      if (!parse_number(rest.substr(colon + 1), server.weight) || server.weight == 0) {
        refuse(option, "the weight is not a positive number");
      }
    }
  }
  server.host = std::string(host);
  return server;
}

// ---------------------------------------------------------------------------
// Connection

Connection::Connection(int fd) noexcept : fd_(fd), generation_(fork_generation()) {}

Connection::~Connection() { ::close(fd_); }

void Connection::run(Pipeline& pipeline, const Limits& limits, std::string_view server) {
  answered_ = false;
  out_.clear();
  std::size_t sent = 0;         // bytes of out_ written
  std::size_t outstanding = 0;  // requests written (or in out_) and not finished
  bool producing = true;
  auto stall_at = Steady::now() + limits.stall;
  // The most a reply may hold in the buffer before it is complete.
  const std::size_t max_unread = limits.max_value + kMaxLine + 2;
  try {
    for (;;) {
      if (sent == out_.size()) {
        out_.clear();
        sent = 0;
        if (producing && outstanding < kMaxOutstanding) {
          const std::size_t n = pipeline.produce(out_, *this);
          if (n == 0) producing = false;
          outstanding += n;
        }
      }
      // Written at once where the socket takes it (a request is usually
      // answered after one send, one poll and one recv).
      if (sent < out_.size()) {
        const ssize_t n =
            ::send(fd_, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          sent += static_cast<std::size_t>(n);
        } else if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
          if (errno == EPIPE || errno == ECONNRESET) {
            throw Closed(fmt::format("memcached {}: the server closed the connection", server),
                         std::string(server), "CONNECTION_FAILURE");
          }
          fail(server, fmt::format("send failed: {}", std::strerror(errno)));
        }
      }
      // The replies complete in what has arrived.
      for (;;) {
        const std::string_view unread = std::string_view(in_).substr(start_);
        if (unread.empty()) break;
        std::size_t finished = 0;
        const std::size_t used = pipeline.consume(unread, limits.max_value, finished);
        if (finished > outstanding) {
          throw Malformed(fmt::format("memcached {}: more replies than requests", server),
                          std::string(server), "PROTOCOL_ERROR");
        }
        outstanding -= finished;
        start_ += used;
        if (finished > 0) stall_at = Steady::now() + limits.stall;
        if (used == 0) {
          if (unread.size() > max_unread) {
            throw Malformed(fmt::format("memcached {}: a reply longer than the largest item "
                                        "({} bytes) can make",
                                        server, limits.max_value),
                            std::string(server), "PROTOCOL_ERROR");
          }
          break;
        }
      }
      if (start_ == in_.size()) {
        in_.clear();
        start_ = 0;
      } else if (start_ > 0 && start_ * 2 >= in_.size()) {
        in_.erase(0, start_);
        start_ = 0;
      }
      if (!producing && outstanding == 0 && sent == out_.size()) {
        if (start_ < in_.size()) {
          throw Malformed(fmt::format("memcached {}: more replies than requests", server),
                          std::string(server), "PROTOCOL_ERROR");
        }
        break;
      }
      if (sent == out_.size() && producing && outstanding < kMaxOutstanding) continue;

      // Wait for the socket, by the nearer of the call's deadline and the
      // stall limit. The clock is read on every turn, so a server that
      // streams or drips is cut off by the deadline as one that stalls is.
      const auto now = Steady::now();
      const bool call_first = limits.call && *limits.call <= stall_at;
      const auto deadline = call_first ? *limits.call : stall_at;
      if (limits.stop.stop_requested()) {
        throw Timeout(
            fmt::format("memcached {}: the call was cancelled before the reply was read", server),
            std::string(server), true);
      }
      if (now >= deadline) {
        throw Timeout(
            fmt::format("memcached {}: {}", server,
                        call_first ? "the call's deadline passed before the reply was read"
                        : sent < out_.size() ? "timed out sending the request"
                                             : "timed out waiting for the reply"),
            std::string(server), call_first);
      }
      pollfd pfd{fd_, static_cast<short>(POLLIN | (sent < out_.size() ? POLLOUT : 0)), 0};
      int wait = millis_until(deadline, now);
      if (limits.stop.stop_possible()) wait = std::min(wait, 10);
      const int rc = ::poll(&pfd, 1, wait);
      if (rc < 0) {
        if (errno == EINTR) continue;
        fail(server, fmt::format("poll failed: {}", std::strerror(errno)));
      }
      if (rc == 0 || (pfd.revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const std::size_t size = in_.size();
      in_.resize(size + kReadChunk);
      const ssize_t n = ::recv(fd_, in_.data() + size, kReadChunk, MSG_DONTWAIT);
      in_.resize(size + (n > 0 ? static_cast<std::size_t>(n) : 0));
      if (n > 0) {
        answered_ = true;
      } else if (n == 0 || errno == ECONNRESET) {
        throw Closed(fmt::format("memcached {}: the server closed the connection", server),
                     std::string(server), "CONNECTION_FAILURE");
      } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
        fail(server, fmt::format("recv failed: {}", std::strerror(errno)));
      }
    }
  } catch (...) {
    broken_ = true;
    in_.clear();
    start_ = 0;
    throw;
  }
  // A big reply's buffer is not kept by an idle connection.
  if (in_.capacity() > 4 * kReadChunk) std::string().swap(in_);
  if (out_.capacity() > 4 * kReadChunk) std::string().swap(out_);
}

// ---------------------------------------------------------------------------
// StatsPipeline

std::size_t StatsPipeline::produce(std::string& out, Connection&) {
  if (sent_) return 0;
  sent_ = true;
  out.append(request_);
  return 1;
}

std::size_t StatsPipeline::consume(std::string_view unread, std::size_t, std::size_t& finished) {
  std::size_t used = 0;
  for (;;) {
    const std::string_view rest = unread.substr(used);
    const auto end = rest.find("\r\n");
    if (end == std::string_view::npos) {
      if (rest.size() > kMaxLine) throw Malformed("a stats line without end", {}, "PROTOCOL_ERROR");
      return used;
    }
    const std::string_view line = rest.substr(0, end);
    used += end + 2;
    seen_ += end + 2;
    if (seen_ > 64 * 1024) throw Malformed("a stats reply without end", {}, "PROTOCOL_ERROR");
    if (line == "END") {
      finished = 1;
      return used;
    }
    if (!line.starts_with("STAT ")) {
      throw Malformed(fmt::format("unexpected reply to stats: \"{}\"", line.substr(0, 60)), {},
                      line.starts_with("ERROR") ? "NOT_SUPPORTED" : "PROTOCOL_ERROR");
    }
    const std::string_view stat = line.substr(5);
    const auto space = stat.find(' ');
    on_stat_(stat.substr(0, space),
             space == std::string_view::npos ? std::string_view() : stat.substr(space + 1));
  }
}

}  // namespace dogpile::detail::wire
