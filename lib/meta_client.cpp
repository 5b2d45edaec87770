#include "meta_client.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

#include "deadline.hpp"
#include "dogpile/backend.hpp"

namespace dogpile::detail::meta {
namespace {

// A reply that needs more than this without ending is not memcached's (the
// item size limit is at most 1 GB; dogpile's values are far smaller).
constexpr std::size_t kMaxBuffered = std::size_t{1} << 30;

template <class T>
bool number(std::string_view text, T& out) noexcept {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

[[noreturn]] void refuse(std::string_view option, std::string_view why) {
  throw std::invalid_argument(fmt::format("MemcachedMetaBackend: option {}: {}", option, why));
}

RingServer parse_server(std::string_view option, std::string_view value) {
  RingServer server;
  // host[:port][/?weight] (libmemcached) or host:port:weight
  if (const auto slash = value.find("/?"); slash != std::string_view::npos) {
    if (!number(value.substr(slash + 2), server.weight) || server.weight == 0) {
      refuse(option, "the weight is not a positive number");
    }
    value = value.substr(0, slash);
  }
  std::string_view host = value;
  std::string_view rest;
  if (!value.empty() && value.front() == '[') {  // [v6 address]:port
    const auto close = value.find(']');
    if (close == std::string_view::npos) refuse(option, "unclosed '['");
    host = value.substr(1, close - 1);
    rest = value.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') refuse(option, "expected ':' after ']'");
    if (!rest.empty()) rest.remove_prefix(1);
  } else if (const auto colon = value.find(':'); colon != std::string_view::npos) {
    host = value.substr(0, colon);
    rest = value.substr(colon + 1);
  }
  if (host.empty()) refuse(option, "no host");
  if (!rest.empty()) {
    const auto colon = rest.find(':');
    if (!number(rest.substr(0, colon), server.port) || server.port == 0) {
      refuse(option, "the port is not a number from 1 to 65535");
    }
    if (colon != std::string_view::npos) {
      if (!number(rest.substr(colon + 1), server.weight) || server.weight == 0) {
        refuse(option, "the weight is not a positive number");
      }
    }
  }
  if (host.front() == '/') refuse(option, "unix sockets are not supported by this transport");
  server.host = std::string(host);
  return server;
}

std::chrono::milliseconds millis(std::string_view option, std::string_view value) {
  std::int64_t v = 0;
  if (!number(value, v) || v <= 0) refuse(option, "expected a positive number");
  return std::chrono::milliseconds(v);
}

std::string where(const RingServer& s) {
  return s.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", s.host, s.port)
                                               : fmt::format("{}:{}", s.host, s.port);
}

[[noreturn]] void fail(std::string_view server, std::string_view why,
                       const char* code = "CONNECTION_FAILURE") {
  throw BackendError(fmt::format("memcached {}: {}", server, why), std::string(server), code);
}

int millis_until(Steady::time_point deadline) noexcept {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Steady::now()).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 1 << 30));
}

// Waits until `fd` is ready for `events` or `deadline` passes.
bool wait_for(int fd, short events, Steady::time_point deadline) noexcept {
  for (;;) {
    pollfd pfd{fd, events, 0};
    const int ms = millis_until(deadline);
    const int rc = ::poll(&pfd, 1, ms);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// options

Config parse_options(std::string_view options) {
  Config config;
  std::size_t at = 0;
  while (at < options.size()) {
    while (at < options.size() && (options[at] == ' ' || options[at] == '\t' ||
                                   options[at] == '\n' || options[at] == '\r')) {
      ++at;
    }
    if (at >= options.size()) break;
    std::size_t end = at;
    while (end < options.size() && options[end] != ' ' && options[end] != '\t' &&
           options[end] != '\n' && options[end] != '\r') {
      ++end;
    }
    const std::string_view option = options.substr(at, end - at);
    at = end;
    const auto eq = option.find('=');
    const std::string_view name = option.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : option.substr(eq + 1);
    const bool has_value = eq != std::string_view::npos;
    auto needs_value = [&] {
      if (!has_value || value.empty()) refuse(option, "needs a value");
    };
    if (name == "--SERVER") {
      needs_value();
      config.servers.push_back(parse_server(option, value));
    } else if (name == "--CONNECT-TIMEOUT") {
      needs_value();
      config.connect_timeout = millis(option, value);
    } else if (name == "--POLL-TIMEOUT") {
      needs_value();
      config.poll_timeout = millis(option, value);
    } else if (name == "--RETRY-TIMEOUT") {
      needs_value();
      std::int64_t seconds = 0;
      if (!number(value, seconds) || seconds <= 0) refuse(option, "expected seconds, at least 1");
      config.retry_timeout = std::chrono::seconds(seconds);
    } else if (name == "--POOL-MAX") {
      needs_value();
      if (!number(value, config.pool_max) || config.pool_max == 0) {
        refuse(option, "expected a positive number");
      }
    } else if (name == "--POOL-MIN") {
      needs_value();
      std::size_t ignored = 0;
      if (!number(value, ignored)) refuse(option, "expected a number");
    } else if (name == "--TCP-KEEPALIVE" && !has_value) {
      config.keepalive = true;
    } else if ((name == "--TCP-NODELAY" || name == "--SUPPORT-CAS" || name == "--VERIFY-KEY") &&
               !has_value) {
      // What this transport always does.
    } else if (name == "--DISTRIBUTION") {
      if (value != "consistent" && value != "ketama") {
        refuse(option, "this transport places keys by ketama only (--DISTRIBUTION=consistent)");
      }
    } else if (name == "--BINARY-PROTOCOL" || name == "--USE-UDP" || name == "--NOREPLY" ||
               name == "--BUFFER-REQUESTS") {
      refuse(option, "dogpile's leases depend on the text meta protocol's replies");
    } else if (name == "--NAMESPACE") {
      refuse(option, "use RegionOptions::key_prefix instead");
    } else if (name == "--SOCKET") {
      refuse(option, "unix sockets are not supported by this transport");
    } else {
      refuse(option, "not an option this transport honours");
    }
  }
  if (config.servers.empty()) {
    throw std::invalid_argument("MemcachedMetaBackend: the options name no --SERVER");
  }
  if (config.servers.size() > 1024) {
    throw std::invalid_argument("MemcachedMetaBackend: more than 1024 servers");
  }
  return config;
}

// ---------------------------------------------------------------------------
// Connection

Connection::Connection(int fd) noexcept : fd_(fd), generation_(fork_generation()) {}

Connection::~Connection() { ::close(fd_); }

void Connection::send(std::string_view bytes, Steady::time_point deadline,
                      std::string_view server) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      broken_ = true;
      throw Closed(fmt::format("memcached {}: the server closed the connection", server),
                   std::string(server), "CONNECTION_FAILURE");
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_for(fd_, POLLOUT, deadline)) continue;
      broken_ = true;
      throw Timeout(fmt::format("memcached {}: timed out sending the request", server),
                    std::string(server), "TIMEOUT");
    }
    broken_ = true;
    fail(server, fmt::format("send failed: {}", std::strerror(errno)));
  }
}

void Connection::fill(Steady::time_point deadline, std::string_view server) {
  if (start_ > 0 && start_ * 2 >= in_.size()) {
    in_.erase(0, start_);
    start_ = 0;
  }
  if (in_.size() - start_ > kMaxBuffered) {
    broken_ = true;
    fail(server, "reply too long", "PROTOCOL_ERROR");
  }
  // A reply is rarely there yet when asked for: wait first, then read (two
  // system calls, not three).
  char buffer[16384];
  for (;;) {
    if (!wait_for(fd_, POLLIN, deadline)) {
      broken_ = true;
      throw Timeout(fmt::format("memcached {}: timed out waiting for the reply", server),
                    std::string(server), "TIMEOUT");
    }
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0) {
      in_.append(buffer, static_cast<std::size_t>(n));
      return;
    }
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      broken_ = true;
      throw Closed(fmt::format("memcached {}: the server closed the connection", server),
                   std::string(server), "CONNECTION_FAILURE");
    }
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    broken_ = true;
    fail(server, fmt::format("recv failed: {}", std::strerror(errno)));
  }
}

const Reply& Connection::receive(Steady::time_point deadline, std::string_view server) {
  for (;;) {
    std::size_t consumed = 0;
    const std::string_view unread = std::string_view(in_).substr(start_);
    switch (parse_reply(unread, reply_, consumed)) {
      case Parse::ok:
        start_ += consumed;
        return reply_;
      case Parse::malformed:
        broken_ = true;
        fail(server,
             fmt::format("not a meta protocol reply: \"{}\"",
                         unread.substr(0, std::min<std::size_t>(unread.find('\r'), 60))),
             "PROTOCOL_ERROR");
      case Parse::more:
        fill(deadline, server);
        break;
    }
  }
}

std::string Connection::receive_line(Steady::time_point deadline, std::string_view server) {
  for (;;) {
    const std::string_view unread = std::string_view(in_).substr(start_);
    if (const auto end = unread.find("\r\n"); end != std::string_view::npos) {
      std::string out(unread.substr(0, end));
      start_ += end + 2;
      return out;
    }
    if (unread.size() > 4096) {
      broken_ = true;
      fail(server, "a reply line without end", "PROTOCOL_ERROR");
    }
    fill(deadline, server);
  }
}

std::string Connection::receive_until_end(Steady::time_point deadline, std::string_view server) {
  for (;;) {
    const std::string_view unread = std::string_view(in_).substr(start_);
    if (const auto end = unread.find("END\r\n"); end != std::string_view::npos) {
      std::string out(unread.substr(0, end + 5));
      start_ += end + 5;
      return out;
    }
    if (unread.starts_with("ERROR") || unread.size() > (1 << 20)) {
      broken_ = true;
      fail(server, "unexpected reply to stats", "PROTOCOL_ERROR");
    }
    fill(deadline, server);
  }
}

// ---------------------------------------------------------------------------
// Server

Server::Server(RingServer address, const Config& config)
    : address_(std::move(address)), config_(config), name_(where(address_)) {}

Server::~Server() = default;

bool Server::down(Steady::time_point now) const noexcept {
  const auto until = down_until_.load(std::memory_order_acquire);
  return until != 0 && now.time_since_epoch().count() < until;
}

bool Server::admit(Steady::time_point now) noexcept {
  auto until = down_until_.load(std::memory_order_acquire);
  if (until == 0) return true;
  if (now.time_since_epoch().count() < until) return false;
  // Due for a retry: one caller probes; the others skip it for another period.
  const auto next = (now + config_.retry_timeout).time_since_epoch().count();
  return down_until_.compare_exchange_strong(until, next, std::memory_order_acq_rel);
}

void Server::failed() noexcept {
  const auto until = (Steady::now() + config_.retry_timeout).time_since_epoch().count();
  down_until_.store(std::max<Steady::rep>(until, 1), std::memory_order_release);
}

void Server::succeeded() noexcept {
  if (down_until_.load(std::memory_order_relaxed) != 0) {
    down_until_.store(0, std::memory_order_release);
  }
}

std::vector<std::vector<char>> Server::resolve() {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(address_.port);
  if (const int rc = ::getaddrinfo(address_.host.c_str(), service.c_str(), &hints, &found);
      rc != 0 || found == nullptr) {
    fail(name_, fmt::format("cannot resolve the host: {}", ::gai_strerror(rc)));
  }
  std::vector<std::vector<char>> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const auto* bytes = reinterpret_cast<const char*>(a->ai_addr);
    out.emplace_back(bytes, bytes + a->ai_addrlen);
  }
  ::freeaddrinfo(found);
  return out;
}

int Server::connect(Steady::time_point deadline) {
  deadline = std::min(deadline, Steady::now() + config_.connect_timeout);
  std::vector<std::vector<char>> addresses;
  {
    std::lock_guard lock(mutex_);
    addresses = addresses_;
  }
  // Host names are resolved once (an address needs no lookup); the lookup
  // itself is the system resolver's, not bounded by the deadline.
  const bool cached = !addresses.empty();
  if (!cached) addresses = resolve();
  std::string why = "no address";
  bool timed_out = false;
  int fd = -1;
  for (const auto& address : addresses) {
    const auto* sa = reinterpret_cast<const sockaddr*>(address.data());
    fd = ::socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, sa, static_cast<socklen_t>(address.size()));
    if (rc != 0 && errno == EINPROGRESS) {
      if (wait_for(fd, POLLOUT, deadline)) {
        int error = 0;
        socklen_t length = sizeof error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        rc = error == 0 ? 0 : -1;
        errno = error;
      } else {
        errno = ETIMEDOUT;
      }
    }
    if (rc == 0) break;
    timed_out = errno == ETIMEDOUT;
    why = timed_out ? "connect timed out" : std::strerror(errno);
    ::close(fd);
    fd = -1;
  }
  if (fd < 0) {
    if (cached) {  // the host may have moved: look it up again next time
      std::lock_guard lock(mutex_);
      addresses_.clear();
    }
    if (timed_out) {
      throw Timeout(fmt::format("memcached {}: cannot connect: {}", name_, why), name_, "TIMEOUT");
    }
    fail(name_, fmt::format("cannot connect: {}", why));
  }
  if (!cached) {
    std::lock_guard lock(mutex_);
    addresses_ = std::move(addresses);
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (config_.keepalive) ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  return fd;
}

void Server::check_meta(Connection& connection, Steady::time_point deadline) {
  connection.send("mn\r\n", deadline, name_);
  const std::string line = connection.receive_line(deadline, name_);
  if (line != "MN") {
    connection.set_broken();
    throw NotMeta(fmt::format(
        "memcached {}: the server does not speak the meta protocol (memcached 1.6 or later): it "
        "answered \"{}\" to \"mn\"; use dogpile::MemcachedBackend for it",
        name_, line.substr(0, 60)));
  }
}

std::unique_ptr<Connection> Server::borrow(Steady::time_point deadline, bool fresh) {
  if (!fresh) {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto connection = std::move(idle_.back());
      idle_.pop_back();
      connection->set_reused(true);
      return connection;
    }
  }
  auto connection = std::make_unique<Connection>(connect(deadline));
  if (!meta_checked_.load(std::memory_order_acquire)) {
    check_meta(*connection, deadline);
    meta_checked_.store(true, std::memory_order_release);
  }
  return connection;
}

void Server::give_back(std::unique_ptr<Connection> connection) noexcept {
  if (!connection || connection->broken() || connection->generation() != fork_generation()) {
    return;  // closed
  }
  std::lock_guard lock(mutex_);
  if (idle_.size() < config_.pool_max) idle_.push_back(std::move(connection));
}

void Server::after_fork_in_child() noexcept {
  // The idle sockets are shared with the parent; closing this process's copy
  // leaves the parent's connection intact.
  new (&idle_) std::vector<std::unique_ptr<Connection>>();
  new (&mutex_) std::mutex;
}

// ---------------------------------------------------------------------------
// Client

Client::Client(Config config, bool auto_eject)
    : config_(std::move(config)),
      auto_eject_(auto_eject),
      all_(config_.servers),
      live_(config_.servers.size(), true),
      registration_(*this) {
  servers_.reserve(config_.servers.size());
  for (const auto& s : config_.servers) servers_.push_back(std::make_unique<Server>(s, config_));
  live_ring_ = std::make_shared<const KetamaRing>(config_.servers);
}

Client::~Client() { registration_.reset(); }

std::size_t Client::server_for(std::string_view key) {
  if (servers_.size() == 1) return 0;
  if (!auto_eject_) return all_.server_for(key);
  const auto now = Steady::now();
  std::vector<bool> live(servers_.size());
  bool any = false;
  for (std::size_t i = 0; i < servers_.size(); ++i) {
    live[i] = !servers_[i]->down(now);
    any = any || live[i];
  }
  if (!any) return all_.server_for(key);  // all down: fail on the key's own server
  std::shared_ptr<const KetamaRing> ring;
  {
    std::lock_guard lock(ring_mutex_);
    if (live != live_) {
      live_ = live;
      std::unique_ptr<bool[]> as_bool(new bool[live.size()]);
      for (std::size_t i = 0; i < live.size(); ++i) as_bool[i] = live[i];
      live_ring_ = std::make_shared<const KetamaRing>(
          config_.servers, std::span<const bool>(as_bool.get(), live.size()));
    }
    ring = live_ring_;
  }
  return ring->server_for(key);
}

Client::Deadline Client::deadline() const noexcept {
  const auto own = Steady::now() + config_.poll_timeout;
  const auto call = request_deadline();
  if (call && *call < own) return {*call, true};
  return {own, false};
}

// A request to `server` failed. A timeout of the call's own deadline is not
// the server's failure; any other failure marks it down for the retry
// interval.
[[noreturn]] static void failed(Server& server, const BackendError& e, bool timeout,
                                bool the_call_s, std::string_view what) {
  if (!(timeout && the_call_s)) server.failed();
  const std::string code = e.code().empty() ? std::string(timeout ? "TIMEOUT" : "") : e.code();
  if (timeout) throw Timeout(fmt::format("{}: {}", what, e.what()), server.name(), code);
  throw BackendError(fmt::format("{}: {}", what, e.what()), server.name(), code);
}

void Client::exchange(Server& server, std::string_view request, std::size_t replies,
                      FunctionRef<void(const Reply&)> on_reply, std::string_view what) {
  const auto [deadline, the_call_s] = this->deadline();
  if (the_call_s && deadline <= Steady::now()) {
    throw Timeout(
        fmt::format("{}: memcached {}: the call's deadline has passed", what, server.name()),
        server.name(), "TIMEOUT");
  }
  if (!server.admit(Steady::now())) {
    fail(server.name(),
         fmt::format("{}: the server is marked down after a failure (retried "
                     "every {} ms)",
                     what, config_.retry_timeout.count()),
         "SERVER_MARKED_DOWN");
  }
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Connection> connection;
    struct Return {
      Server& server;
      std::unique_ptr<Connection>& connection;
      ~Return() { server.give_back(std::move(connection)); }
    } give_back{server, connection};
    std::size_t seen = 0;
    bool from_callback = false;  // on_reply threw: not the server's failure
    try {
      connection = server.borrow(deadline, attempt > 0);
      connection->send(request, deadline, server.name());
      for (;;) {
        if (replies != 0 && seen == replies) break;
        const Reply* reply = nullptr;
        try {
          reply = &connection->receive(deadline, server.name());
        } catch (const BackendError&) {
          throw;
        } catch (...) {
          connection->set_broken();  // a reply half read
          throw;
        }
        if (replies == 0 && reply->code == Code::mn) break;
        ++seen;
        try {
          on_reply(*reply);
        } catch (...) {
          connection->set_broken();  // replies may be left unread
          from_callback = true;
          throw;
        }
      }
      server.succeeded();
      return;
    } catch (const NotMeta& e) {
      throw NotMeta(fmt::format("{}: {}", what, e.what()));
    } catch (const Closed& e) {
      if (from_callback) throw;
      // An idle connection the server closed meanwhile (a restart), before
      // any reply: the request never reached the server. Once more, on a
      // new connection.
      if (attempt == 0 && seen == 0 && connection && connection->reused()) continue;
      failed(server, e, false, the_call_s, what);
    } catch (const Timeout& e) {
      if (from_callback) throw;
      failed(server, e, true, the_call_s, what);
    } catch (const BackendError& e) {
      if (from_callback) {
        // The reply was refused (CLIENT_ERROR, SERVER_ERROR, out of
        // step): the server that sent it is named.
        if (!e.server().empty()) throw;
        throw BackendError(e.what(), server.name(), e.code());
      }
      failed(server, e, false, the_call_s, what);
    }
  }
}

std::int64_t Client::stats_time(Server& server) {
  const auto deadline = this->deadline().at;
  if (!server.admit(Steady::now()))
    fail(server.name(), "stats: the server is marked down", "SERVER_MARKED_DOWN");
  std::unique_ptr<Connection> connection;
  std::string text;
  try {
    connection = server.borrow(deadline);
    connection->send("stats\r\n", deadline, server.name());
    text = connection->receive_until_end(deadline, server.name());
  } catch (const NotMeta&) {
    throw;
  } catch (const BackendError&) {
    server.failed();
    if (connection) server.give_back(std::move(connection));
    throw;
  }
  server.give_back(std::move(connection));
  const auto at = text.find("STAT time ");
  std::int64_t seconds = 0;
  if (at == std::string::npos) fail(server.name(), "stats: no time in the reply", "PROTOCOL_ERROR");
  const char* begin = text.data() + at + 10;
  if (std::from_chars(begin, text.data() + text.size(), seconds).ec != std::errc()) {
    fail(server.name(), "stats: unreadable time", "PROTOCOL_ERROR");
  }
  return seconds;
}

void Client::after_fork_in_child() noexcept {
  for (auto& s : servers_) s->after_fork_in_child();
  new (&ring_mutex_) std::mutex;
}

}  // namespace dogpile::detail::meta
