// SPDX-License-Identifier: MIT
// The wire client's servers (health, first contact, the pool) and the client
// (placement, exchanges, the server clock); see wire_client.hpp.
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
#include "format/keys.hpp"
#include "transport/exptime.hpp"
#include "transport/journal.hpp"
#include "transport/wire_parts.hpp"

namespace dogpile::detail::wire {

// ---------------------------------------------------------------------------
// Server

Server::Server(RingServer address, const Config& config)
    : address_(std::move(address)),
      config_(config),
      name_(where(address_)),
      max_value_(config.max_item_size != 0 ? config.max_item_size : kDefaultItemSize),
      journal_(std::make_unique<Journal>(config.journal_max)) {}

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

void Server::failed(const std::string& why) noexcept {
  if (failures_.fetch_add(1, std::memory_order_acq_rel) + 1 < config_.failure_limit) return;
  try {
    std::lock_guard lock(mutex_);
    down_because_ = why;
  } catch (...) {  // the reason is lost, the state is not
  }
  const auto until = (Steady::now() + config_.retry_timeout).time_since_epoch().count();
  down_until_.store(std::max<Steady::rep>(until, 1), std::memory_order_release);
}

void Server::succeeded() noexcept {
  if (failures_.load(std::memory_order_relaxed) != 0) failures_.store(0, std::memory_order_relaxed);
  if (down_until_.load(std::memory_order_relaxed) != 0) {
    down_until_.store(0, std::memory_order_release);
  }
}

std::string Server::down_because() const {
  std::lock_guard lock(mutex_);
  return down_because_;
}

std::vector<std::vector<char>> Server::resolve() {
  if (address_.port == 0) {  // a unix socket
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (address_.host.size() >= sizeof addr.sun_path) fail(name_, "the socket path is too long");
    std::memcpy(addr.sun_path, address_.host.data(), address_.host.size());
    const auto* bytes = reinterpret_cast<const char*>(&addr);
    return {std::vector<char>(bytes, bytes + sizeof addr)};
  }
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
    if (rc != 0 && (errno == EINPROGRESS || errno == EAGAIN)) {
      pollfd pfd{fd, POLLOUT, 0};
      int ready = 0;
      for (;;) {
        const auto now = Steady::now();
        if (now >= deadline) break;
        ready = ::poll(&pfd, 1, millis_until(deadline, now));
        if (ready >= 0 || errno != EINTR) break;
      }
      if (ready > 0) {
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
    why = timed_out ? std::string("timed out") : std::string(std::strerror(errno));
    ::close(fd);
    fd = -1;
  }
  if (fd < 0) {
    if (cached) {  // the host may have moved: look it up again next time
      std::lock_guard lock(mutex_);
      addresses_.clear();
    }
    for (char& c : why) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const std::string message = fmt::format("cannot reach memcached at {} ({})", name_, why);
    if (timed_out) throw Timeout(message, name_);
    throw BackendError(message, name_, "CONNECTION_FAILURE");
  }
  if (!cached) {
    std::lock_guard lock(mutex_);
    addresses_ = std::move(addresses);
  }
  if (address_.port != 0) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (config_.keepalive) ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  }
  return fd;
}

void Server::first_contact(Connection& connection, const Limits& limits) {
  Limits first = limits;
  first.max_value = kDefaultItemSize;
  if (config_.meta) {
    LinesPipeline mn("mn\r\n", 1);
    connection.run(mn, first, name_);
    if (mn.got.front() != "MN") {
      connection.set_broken();
      throw NotMeta(fmt::format(
          "memcached {}: the server does not speak the meta protocol (memcached 1.6 or later): it "
          "answered \"{}\" to \"mn\"; use dogpile::MemcachedBackend for it",
          name_, mn.got.front().substr(0, 60)));
    }
  }
  if (config_.max_item_size == 0) {
    // Its item size limit, if it says (a proxy may not: then the default).
    std::size_t limit = 0;
    auto on_stat = [&](std::string_view name, std::string_view value) {
      if (name == "item_size_max" && !parse_number(value, limit)) limit = 0;
    };
    StatsPipeline stats("stats settings\r\n", on_stat);
    try {
      connection.run(stats, first, name_);
    } catch (const Malformed&) {
      // Not a memcached that says (a proxy, say): what follows is unknown,
      // so this connection goes; the default limit stands.
    } catch (const Closed&) {
    }
    if (limit != 0) max_value_.store(std::clamp(limit, std::size_t{1024}, kMaxItemSize));
  }
}

std::unique_ptr<Connection> Server::borrow(const Limits& limits, bool fresh) {
  if (!fresh) {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      auto connection = std::move(idle_.back());
      idle_.pop_back();
      connection->set_reused(true);
      return connection;
    }
  }
  const auto deadline = std::min(limits.call.value_or(Steady::time_point::max()),
                                 Steady::now() + config_.connect_timeout);
  auto connection = std::make_unique<Connection>(connect(deadline));
  if (!contacted_.load(std::memory_order_acquire)) {
    first_contact(*connection, limits);
    contacted_.store(true, std::memory_order_release);
    if (connection->broken()) connection = std::make_unique<Connection>(connect(deadline));
  }
  return connection;
}

std::unique_ptr<Connection> Server::take_idle() noexcept {
  std::lock_guard lock(mutex_);
  while (!idle_.empty()) {
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    if (connection->generation() == fork_generation()) return connection;
  }
  return nullptr;
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
  new (&replay_mutex) std::mutex;
  journal_->after_fork_in_child();
}

// ---------------------------------------------------------------------------
// Client

Client::Client(Config config, bool auto_eject, std::function<std::size_t(std::string_view)> place)
    : config_(std::move(config)),
      auto_eject_(auto_eject),
      place_(std::move(place)),
      all_(config_.servers),
      live_(config_.servers.size(), true),
      registration_(*this) {
  check_fleet(config_, auto_eject_);
  pool_size_ = config_.servers.size();
  servers_.reserve(pool_size_ + config_.gutter.size());
  for (const auto& s : config_.servers) servers_.push_back(std::make_unique<Server>(s, config_));
  for (const auto& s : config_.gutter) {
    servers_.push_back(std::make_unique<Server>(s, config_));
    servers_.back()->set_gutter();
  }
  if (!config_.gutter.empty()) gutter_ring_.emplace(config_.gutter);
  live_ring_ = std::make_shared<const KetamaRing>(config_.servers);
}

Client::~Client() {
  registration_.reset();
  if (replayer_.joinable()) {
    replayer_.request_stop();
    replayer_.join();
  }
}

std::size_t Client::route(std::string_view key, bool write) {
  const std::size_t home = home_of(key);
  if (!gutter_ring_) return home;
  Server& own = *servers_[home];
  const auto now = Steady::now();
  if (!own.down(now)) return home;
  const std::size_t gutter = pool_size_ + gutter_ring_->server_for(key);
  // The gutter down too: the key's own server, which fails at once (the
  // caller falls back to in-process protection).
  if (servers_[gutter]->down(now)) return home;
  // A write the key's own server misses: deleted there once it answers.
  if (write) keep(own, key);
  return gutter;
}

std::size_t Client::write_at(std::size_t server, std::string_view key) {
  if (server >= pool_size_) keep(*servers_[home_of(key)], key);
  return server;
}

bool Client::in_gutter(std::string_view key) { return route(key, false) >= pool_size_; }

bool Client::moves(const Server& server) const noexcept {
  if (!gutter_ring_ || server.gutter() || !server.down(Steady::now())) return false;
  for (std::size_t i = pool_size_; i < servers_.size(); ++i) {
    if (!servers_[i]->down(Steady::now())) return true;
  }
  return false;
}

void Client::keep(Server& server, std::string_view key) {
  switch (server.journal().keep(key)) {
    case Journal::Kept::full:
      counters_.dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    case Journal::Kept::already:
      return;
    case Journal::Kept::added:
      counters_.kept.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  std::lock_guard lock(replayer_mutex_);
  if (!replayer_.joinable()) {
    try {
      replayer_ = std::jthread([this](std::stop_token stop) { replayer_loop(stop); });
    } catch (const std::system_error&) {
      return;  // no thread: the key is replayed before this process's next request there
    }
  }
  replayer_wake_.notify_one();
}

void Client::replayer_loop(std::stop_token stop) {
  std::unique_lock lock(replayer_mutex_);
  while (!stop.stop_requested()) {
    if (pending() == 0) {
      replayer_wake_.wait(lock, stop, [&] { return pending() != 0; });
      continue;
    }
    lock.unlock();
    replay_pending(stop);
    lock.lock();
    replayer_wake_.wait_for(lock, stop, kReplayPause, [] { return false; });
  }
}

void Client::replay_pending(std::stop_token stop) {
  for (auto& server : servers_) {
    if (stop.stop_requested()) return;
    if (server->journal().size() == 0) continue;
    // A request's own replay of this server under way: it will tell.
    std::unique_lock busy(server->replay_mutex, std::try_to_lock);
    if (!busy.owns_lock()) continue;
    busy.unlock();
    Limits limits;
    limits.stall = config_.poll_timeout;
    limits.max_value = server->max_value();
    limits.call = Steady::now() + config_.connect_timeout + config_.poll_timeout;
    limits.stop = stop;  // the client going away ends the attempt
    std::unique_ptr<Connection> connection;
    try {
      connection = server->borrow(limits, true);
      replay(*server, *connection, limits);  // it answers: its keys go back to it
      server->give_back(std::move(connection));
    } catch (const Timeout& e) {
      // Its own time (a stop, or a replay that another request began since):
      // no word on the server.
      if (!e.the_call_s() && !stop.stop_requested()) server->failed(e.what());
    } catch (const BackendError& e) {
      if (!stop.stop_requested()) server->failed(e.what());
    } catch (const std::exception&) {  // memory: tried again on the next pass
    }
  }
}

std::size_t Client::pending() const noexcept {
  std::size_t n = 0;
  for (const auto& s : servers_) n += s->journal().size();
  return n;
}

FleetStats Client::fleet_stats() const noexcept {
  FleetStats out;
  out.gutter_requests = counters_.gutter_requests.load(std::memory_order_relaxed);
  out.journal_kept = counters_.kept.load(std::memory_order_relaxed);
  out.journal_replayed = counters_.replayed.load(std::memory_order_relaxed);
  out.journal_dropped = counters_.dropped.load(std::memory_order_relaxed);
  out.journal_pending = pending();
  out.loop_reads = counters_.loop_reads.load(std::memory_order_relaxed);
  return out;
}

void Client::replay(Server& server, Connection& connection, const Limits& limits) {
  // Another replay of this server under way: waited for, by the deadline.
  // (Polled: a timed lock is pthread_mutex_clocklock, which ThreadSanitizer
  // does not follow; a replay is rare and short.)
  std::unique_lock lock(server.replay_mutex, std::defer_lock);
  if (!limits.call) {
    lock.lock();
  } else {
    while (!lock.try_lock()) {
      if (Steady::now() >= *limits.call) {
        throw Timeout(fmt::format("memcached {}: the call's deadline passed while the writes the "
                                  "server missed were replayed",
                                  server.name()),
                      server.name(), true);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (server.journal().size() == 0) return;  // replayed while this request waited
  std::vector<std::string> keys = server.journal().take();
  try {
    ReplayPipeline deletes(keys, config_.meta);
    connection.run(deletes, limits, server.name());
  } catch (...) {
    const std::size_t lost = server.journal().put_back(std::move(keys));
    counters_.dropped.fetch_add(lost, std::memory_order_relaxed);
    throw;
  }
  // It answered: up again before its journal says it is empty (whoever
  // waits for that finds the server taking requests).
  server.succeeded();
  server.journal().replayed();
  counters_.replayed.fetch_add(keys.size(), std::memory_order_relaxed);
}

std::size_t Client::home_of(std::string_view key) {
  if (pool_size_ == 1) return 0;
  if (place_) return place_(key);
  if (!auto_eject_) return all_.server_for(key);
  const auto now = Steady::now();
  std::vector<bool> live(pool_size_);
  bool any = false;
  for (std::size_t i = 0; i < pool_size_; ++i) {
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

// ---------------------------------------------------------------------------
// The fleet options

bool fleet_option(std::string_view option, std::string_view name, std::string_view value,
                  Config& config) {
  auto refuse = [&](std::string_view why) {
    throw std::invalid_argument(fmt::format("option {}: {}", option, why));
  };
  if (name == "--GUTTER") {
    if (value.empty()) refuse("needs a value: host:port of a gutter server");
    config.gutter.push_back(parse_server(option, value, value.front() == '/'));
  } else if (name == "--GUTTER-TTL") {
    std::int64_t seconds = 0;
    // At most 30 days: memcached reads more as an absolute time.
    if (!parse_number(value, seconds) || seconds <= 0 || seconds > 2592000) {
      refuse("expected seconds, 1 to 2592000");
    }
    config.gutter_ttl = std::chrono::seconds(seconds);
  } else if (name == "--JOURNAL-MAX") {
    if (!parse_number(value, config.journal_max)) refuse("expected a number of keys");
  } else {
    return false;
  }
  return true;
}

void check_fleet(const Config& config, bool auto_eject) {
  if (config.gutter.empty()) return;
  if (auto_eject) {
    throw std::invalid_argument(
        "a gutter (--GUTTER) and auto-eject do not combine: with auto-eject, a dead server's keys "
        "move to the other servers of the pool");
  }
  for (const auto& g : config.gutter) {
    for (const auto& s : config.servers) {
      if (g.host == s.host && g.port == s.port) {
        throw std::invalid_argument(fmt::format(
            "--GUTTER={} is also a --SERVER: the gutter must be servers of its own", where(g)));
      }
    }
  }
}

Limits Client::limits(const Server& server, const Request& request) const noexcept {
  Limits limits;
  limits.call = request.deadline;
  limits.stop = request.stop;
  limits.stall = config_.poll_timeout;
  limits.max_value = server.max_value();
  return limits;
}

void Client::exchange(Server& server, Pipeline& pipeline, std::string_view what,
                      const Request& request, const Unanswered* unanswered) {
  const Limits limits = this->limits(server, request);
  const bool has_call_deadline = limits.call.has_value();
  if (has_call_deadline && *limits.call <= Steady::now()) {
    throw Timeout(
        fmt::format("{}: memcached {}: the call's deadline has passed", what, server.name()),
        server.name(), true);
  }
  if (!server.admit(Steady::now())) {
    if (unanswered != nullptr) {
      for (std::size_t i = 0; i < unanswered->count; ++i) keep(server, unanswered->key_of(i));
    }
    // The failure that marked it down names the server already.
    throw BackendError(fmt::format("{}; marked down, tried again every {} ms",
                                   server.down_because(), config_.retry_timeout.count()),
                       server.name(), "SERVER_MARKED_DOWN", moves(server));
  }
  if (server.gutter()) counters_.gutter_requests.fetch_add(1, std::memory_order_relaxed);
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Connection> connection;
    struct Return {
      Server& server;
      std::unique_ptr<Connection>& connection;
      ~Return() { server.give_back(std::move(connection)); }
    } give_back{server, connection};
    try {
      connection = server.borrow(limits, attempt > 0);
      if (server.journal().size() != 0) replay(server, *connection, limits);
      connection->run(pipeline, limits, server.name());
      server.succeeded();
      return;
    } catch (const NotMeta& e) {
      throw NotMeta(fmt::format("{}: {}", what, e.what()), server.name(), "NOT_META");
    } catch (const BackendError& e) {
      const bool timeout = dynamic_cast<const Timeout*>(&e) != nullptr;
      const bool refused = !timeout && dynamic_cast<const Closed*>(&e) == nullptr &&
                           dynamic_cast<const Malformed*>(&e) == nullptr &&
                           e.code() != "CONNECTION_FAILURE";
      // An idle connection the server closed meanwhile (a restart), before
      // any reply: the request never reached the server. Once more, on a
      // new connection.
      if (attempt == 0 && connection && connection->reused() && !connection->answered() &&
          dynamic_cast<const Closed*>(&e) != nullptr) {
        pipeline.restart();
        continue;
      }
      const bool the_call_s = timeout && static_cast<const Timeout&>(e).the_call_s();
      // A reply the caller refused (CLIENT_ERROR, SERVER_ERROR, a value it
      // cannot take) is the answer of a server that works.
      // What marks it down is kept to explain the requests it then refuses:
      // with the server's name, once.
      if (!refused && !the_call_s) {
        server.failed(e.server().empty() ? fmt::format("memcached {}: {}", server.name(), e.what())
                                         : std::string(e.what()));
      }
      if (refused) server.succeeded();
      // Writes with no answer (the server stalled, closed, or out of reach):
      // what they replaced may still be there.
      if (!refused && unanswered != nullptr) {
        for (std::size_t i = 0; i < unanswered->count; ++i) keep(server, unanswered->key_of(i));
      }
      // Errors of the pipeline's (a reply refused or out of step) name the
      // server here. A server out of reach, or an item over its limit, is
      // said first and whole, whatever the request was.
      const bool whole = e.code() == "CONNECTION_FAILURE" || e.code() == "ITEM_TOO_BIG";
      const std::string message =
          whole                ? std::string(e.what())
          : e.server().empty() ? fmt::format("{}: memcached {}: {}", what, server.name(), e.what())
                               : fmt::format("{}: {}", what, e.what());
      const bool moved = !refused && !the_call_s && moves(server);
      if (timeout) throw Timeout(message, server.name(), the_call_s, moved);
      throw BackendError(message, server.name(), e.code(), moved);
    }
  }
}

std::int64_t Client::stats_time(Server& server, const Request& request) {
  std::optional<std::int64_t> seconds;
  bool readable = true;
  auto on_stat = [&](std::string_view name, std::string_view value) {
    if (name != "time") return;
    std::int64_t t = 0;
    // A Unix time this side of the year 10,000.
    if (parse_number(value, t) && t > 0 && t < 253402300800) {
      seconds = t;
    } else {
      readable = false;
    }
  };
  StatsPipeline stats("stats\r\n", on_stat);
  exchange(server, stats, "stats", request);
  if (!readable) fail(server.name(), "stats: a time out of range", "PROTOCOL_ERROR");
  if (!seconds) fail(server.name(), "stats: no time in the reply", "PROTOCOL_ERROR");
  return *seconds;
}

ServerTime Client::server_time(std::string_view key, const Request& request) {
  check_backend_key("stats", key);
  const std::int64_t seconds = stats_time(server(server_for(key)), request);
  return ServerTime{TimePoint(std::chrono::seconds(seconds)), std::chrono::seconds(1)};
}

std::int64_t Client::exptime(std::size_t index, Ttl ttl, const Request& request) {
  // The gutter keeps a value for a short time at most: it stands in for a
  // server while it is down, and what it holds is not invalidated once the
  // server is back.
  if (index >= pool_size_)
    ttl = ttl <= Ttl::zero() ? config_.gutter_ttl : std::min(ttl, config_.gutter_ttl);
  if (!absolute_expiration(ttl)) return detail::exptime(ttl, 0);
  Server& s = server(index);
  const auto now = Steady::now();
  const auto read_at = s.clock_read_at.load(std::memory_order_acquire);
  if (read_at == 0 || now - Steady::time_point(Steady::duration(read_at)) > std::chrono::hours(1)) {
    try {
      const std::int64_t server_time = stats_time(s, request);
      s.clock_offset.store(server_time - std::time(nullptr), std::memory_order_relaxed);
      s.clock_read_at.store(std::max<Steady::rep>(now.time_since_epoch().count(), 1),
                            std::memory_order_release);
    } catch (const BackendError&) {
      // The request that follows will tell; until then, this host's clock.
    }
  }
  return detail::exptime(ttl, std::time(nullptr) + s.clock_offset.load(std::memory_order_relaxed));
}

void Client::after_fork_in_child() noexcept {
  for (auto& s : servers_) s->after_fork_in_child();
  new (&ring_mutex_) std::mutex;
  // The replayer is the parent's: the child starts its own at its next key
  // kept (what it inherited is replayed before its next request there).
  new (&replayer_mutex_) std::mutex;
  new (&replayer_wake_) std::condition_variable_any;
  new (&replayer_) std::jthread;
}

bool says_too_big(std::string_view message) noexcept {
  return message.find("too large") != std::string_view::npos ||
         message.find("too big") != std::string_view::npos;
}

void too_big(std::string_view op, std::string_view key, std::size_t size, const Server& server) {
  throw BackendError(
      fmt::format("memcached {} {}: the value is {} bytes with its envelope, over the item size "
                  "limit of {} bytes of memcached at {}; compress large values "
                  "(RegionOptions::compression.threshold) or start memcached with a larger "
                  "limit (-I, e.g. memcached -I 4m)",
                  op, key, size, server.max_value(), server.name()),
      server.name(), "ITEM_TOO_BIG");
}

}  // namespace dogpile::detail::wire
