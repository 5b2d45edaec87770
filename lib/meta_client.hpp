// The meta transport's client (internal): servers placed by the ketama ring,
// one health state per server shared by every connection to it, a pool of
// connections per server, and requests bounded by a deadline as a whole (a
// server that drips its reply a byte at a time cannot hold a call past it).
//
// POSIX sockets and poll(2): every request is synchronous on a borrowed
// connection, so an event loop would add a thread hop and nothing else.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/detail/function_ref.hpp"
#include "fork.hpp"
#include "ketama.hpp"
#include "meta_protocol.hpp"

namespace dogpile::detail::meta {

using Steady = std::chrono::steady_clock;

/// What the option string says (libmemcached's syntax, the options this
/// transport honours).
struct Config {
  std::vector<RingServer> servers;
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds poll_timeout{1000};
  std::chrono::milliseconds retry_timeout{2000};
  std::size_t pool_max = 64;  // connections per server
  bool keepalive = false;
};

/// Parses `options` (e.g. "--SERVER=10.0.0.1:11211/?2 --POLL-TIMEOUT=200"):
/// --SERVER=host[:port][/?weight] (also host:port:weight), --CONNECT-TIMEOUT=ms,
/// --POLL-TIMEOUT=ms, --RETRY-TIMEOUT=s, --POOL-MIN=n (accepted: connections
/// open on demand), --POOL-MAX=n, --TCP-KEEPALIVE, and the options that only
/// restate what this transport always does (--TCP-NODELAY, --SUPPORT-CAS,
/// --VERIFY-KEY, --DISTRIBUTION=consistent). Anything else is refused:
/// std::invalid_argument naming the option and why.
[[nodiscard]] Config parse_options(std::string_view options);

/// A server that does not speak the meta protocol: not a failure of the
/// server (it is not marked down), a wrong choice of transport.
class NotMeta : public BackendError {
 public:
  using BackendError::BackendError;
};

/// A request that ran out of time (its deadline, or the connect timeout).
class Timeout : public BackendError {
 public:
  using BackendError::BackendError;
};

/// The server closed the connection (or reset it).
class Closed : public BackendError {
 public:
  using BackendError::BackendError;
};

/// One connection to one server. Not thread-safe: a caller borrows it.
class Connection {
 public:
  explicit Connection(int fd) noexcept;
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Sends all of `bytes` by `deadline`. Throws BackendError naming `server`
  /// (the connection is then broken).
  void send(std::string_view bytes, Steady::time_point deadline, std::string_view server);
  /// The next reply, read by `deadline`; its views are valid until the next
  /// call. Throws BackendError on a timeout, a closed connection or a reply
  /// that does not parse (the connection is then broken).
  const Reply& receive(Steady::time_point deadline, std::string_view server);
  /// The next line, without its "\r\n".
  std::string receive_line(Steady::time_point deadline, std::string_view server);
  /// The text up to and including "END\r\n" (a `stats` reply).
  std::string receive_until_end(Steady::time_point deadline, std::string_view server);

  [[nodiscard]] bool broken() const noexcept { return broken_; }
  void set_broken() noexcept { broken_ = true; }
  /// The fork generation the connection was opened in: in a child, the
  /// socket is the parent's too and must not be used.
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }
  /// Whether it was taken from the idle pool (not opened for this request).
  [[nodiscard]] bool reused() const noexcept { return reused_; }
  void set_reused(bool reused) noexcept { reused_ = reused; }

 private:
  void fill(Steady::time_point deadline, std::string_view server);
  int fd_;
  std::uint64_t generation_;
  bool broken_ = false;
  bool reused_ = false;
  std::string in_;
  std::size_t start_ = 0;  // unread data begins here
  Reply reply_;
};

/// One memcached server: its address, its health (one state shared by every
/// connection to it) and its idle connections.
class Server {
 public:
  Server(RingServer address, const Config& config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const RingServer& address() const noexcept { return address_; }

  /// Marked down, and not due for a retry at `now`.
  [[nodiscard]] bool down(Steady::time_point now) const noexcept;
  /// Whether a request may go to it now: up; or due for a retry, and this
  /// caller is the one that probes it (the others still skip it).
  [[nodiscard]] bool admit(Steady::time_point now) noexcept;
  /// A request failed for the server's sake (refused, timed out, closed,
  /// garbage): skipped for retry_timeout from now.
  void failed() noexcept;
  void succeeded() noexcept;

  /// A connection (idle, unless `fresh`; or opened now: connect, and at the
  /// server's first contact the check that it speaks the meta protocol, by
  /// `deadline`). Throws BackendError.
  std::unique_ptr<Connection> borrow(Steady::time_point deadline, bool fresh = false);
  /// Returns a connection; a broken one, or one from before a fork, is
  /// closed instead.
  void give_back(std::unique_ptr<Connection> connection) noexcept;

  /// In a forked child: the idle connections are the parent's sockets.
  void after_fork_in_child() noexcept;

 private:
  int connect(Steady::time_point deadline);
  std::vector<std::vector<char>> resolve();
  void check_meta(Connection& connection, Steady::time_point deadline);

  const RingServer address_;
  const Config& config_;
  const std::string name_;
  std::atomic<Steady::rep> down_until_{0};  // 0: up
  std::atomic<bool> meta_checked_{false};
  std::mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_;
  // The host's addresses (sockaddr bytes), resolved at the first connect and
  // again when none of them answers.
  std::vector<std::vector<char>> addresses_;
};

/// Every server of the option string, and where keys live.
class Client : ForkAware {
 public:
  Client(Config config, bool auto_eject);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// The index of the server that holds `key`: on the ring of every server,
  /// or (with auto-eject) of those not marked down.
  [[nodiscard]] std::size_t server_for(std::string_view key);
  [[nodiscard]] Server& server(std::size_t index) noexcept { return *servers_[index]; }
  [[nodiscard]] std::size_t size() const noexcept { return servers_.size(); }
  [[nodiscard]] const Config& config() const noexcept { return config_; }

  /// A request's deadline: the calling region call's (request_deadline()),
  /// or poll_timeout from now, whichever is first; and whether it is the
  /// call's (running out of it is then no failure of the server).
  struct Deadline {
    Steady::time_point at;
    bool the_call_s = false;
  };
  [[nodiscard]] Deadline deadline() const noexcept;

  /// Sends `request` to `server` on one borrowed connection and hands its
  /// replies to `on_reply` in order: `replies` of them, or (0) every reply
  /// up to the `MN` that ends the request (MN itself is not handed on). A
  /// server marked down fails at once. Throws BackendError naming `what`, or
  /// what on_reply throws (the connection is closed then: replies may be
  /// left unread).
  void exchange(Server& server, std::string_view request, std::size_t replies,
                FunctionRef<void(const Reply&)> on_reply, std::string_view what);

  /// The `time` of `server`'s `stats`, in seconds since the epoch.
  [[nodiscard]] std::int64_t stats_time(Server& server);

  void after_fork_in_child() noexcept override;

 private:
  Config config_;
  const bool auto_eject_;
  std::vector<std::unique_ptr<Server>> servers_;
  KetamaRing all_;
  // Auto-eject: the ring of the servers up when it was built, rebuilt when
  // that set changes.
  std::mutex ring_mutex_;
  std::vector<bool> live_;
  std::shared_ptr<const KetamaRing> live_ring_;
  ForkRegistration registration_;
};

}  // namespace dogpile::detail::meta
