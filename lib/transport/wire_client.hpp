// SPDX-License-Identifier: MIT
// The client both memcached transports speak through (internal): servers
// placed by the ketama ring, one health state per server shared by every
// connection to it, a pool of connections per server, and pipelines whose
// time and memory are bounded whatever a server sends.
//
// A request is a Pipeline: requests written in chunks while replies are read
// (a batch of any size, with a bounded number of requests unanswered), read
// by the call's deadline and by the poll timeout since the last reply
// completed, checked after every read, never buffering more than the largest
// reply a server can legitimately send (its largest item plus a header). A
// connection goes back to the pool only when every reply it was sent has
// been read and nothing else has arrived; any failure closes it.
//
// POSIX sockets and poll(2): a request is synchronous on a borrowed
// connection. The meta and classic dialects differ only in their Pipelines
// (memcached_meta.cpp, memcached.cpp) and their first words to a server.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/fork.hpp"
#include "dogpile/backend.hpp"
#include "dogpile/detail/function_ref.hpp"
#include "transport/ketama.hpp"

namespace dogpile::detail::wire {

using Steady = std::chrono::steady_clock;

/// memcached's default item size limit (-I): the largest value a server is
/// assumed to hold when it does not say.
inline constexpr std::size_t kDefaultItemSize = std::size_t{1} << 20;
/// memcached's own ceiling for -I.
inline constexpr std::size_t kMaxItemSize = std::size_t{1} << 30;

/// What a transport's options say.
struct Config {
  std::vector<RingServer> servers;  // port 0: host is a unix socket's path
  std::chrono::milliseconds connect_timeout{1000};
  std::chrono::milliseconds poll_timeout{1000};
  std::chrono::milliseconds retry_timeout{2000};
  std::size_t pool_max = 64;  // idle connections kept per server
  bool keepalive = false;
  /// Consecutive failures that mark a server down.
  std::uint32_t failure_limit = 1;
  /// The largest value a server may send; 0: what it says at first contact
  /// (`stats settings` item_size_max, at most 1 GiB), else 1 MiB.
  std::size_t max_item_size = 0;
  /// The meta dialect: a server's first contact checks it answers `mn`.
  bool meta = false;
  /// The gutter (--GUTTER): servers that take a key's requests while its
  /// own server is marked down, placed on a ring of their own.
  std::vector<RingServer> gutter;
  /// The longest time to live of what is written to the gutter
  /// (--GUTTER-TTL, seconds): a value that never expires is given this too.
  std::chrono::seconds gutter_ttl{10};
  /// Keys kept per server for replay (--JOURNAL-MAX; journal.hpp).
  std::size_t journal_max = 10000;
};

/// Takes one of the options both transports read alike: --GUTTER=host:port
/// (several allowed), --GUTTER-TTL=seconds, --JOURNAL-MAX=keys. Returns
/// false for any other name; throws std::invalid_argument naming `option`
/// for a value it refuses.
bool fleet_option(std::string_view option, std::string_view name, std::string_view value,
                  Config& config);
/// Checks the fleet options against the rest: a gutter server is none of
/// the pool's, and not with auto-eject (its keys move to other servers
/// instead). Throws std::invalid_argument.
void check_fleet(const Config& config, bool auto_eject);

/// A --SERVER's value: host[:port][/?weight] or host:port:weight (an IPv6
/// address in brackets); with `socket`, a unix socket's path[/?weight]
/// (--SOCKET). Throws std::invalid_argument naming `option` and the fault.
[[nodiscard]] RingServer parse_server(std::string_view option, std::string_view value,
                                      bool socket = false);

/// Checks a --SERVER's host: a name or an IPv4 address ([A-Za-z0-9.-_]), an
/// IPv6 address (hex digits, ':' and '.'), or a unix socket's absolute path
/// (printable, no spaces). Throws std::invalid_argument naming `option`.
void check_host(std::string_view option, std::string_view host, bool socket_path);

/// A server that does not speak the meta protocol: not a failure of the
/// server (it is not marked down), a wrong choice of transport.
class NotMeta : public BackendError {
 public:
  using BackendError::BackendError;
};

/// A request that ran out of time: the call's deadline (no failure of the
/// server), or the server's own timeouts.
class Timeout : public BackendError {
 public:
  Timeout(const std::string& what, std::string server, bool the_call_s = false, bool moved = false)
      : BackendError(what, std::move(server), "TIMEOUT", moved), the_call_s_(the_call_s) {}
  [[nodiscard]] bool the_call_s() const noexcept { return the_call_s_; }

 private:
  bool the_call_s_;
};

/// The server closed the connection (or reset it).
class Closed : public BackendError {
 public:
  using BackendError::BackendError;
};

/// A reply that is not the protocol's, or not an answer to what was asked:
/// the connection is out of step.
class Malformed : public BackendError {
 public:
  using BackendError::BackendError;
};

class Connection;
class Journal;

/// One exchange on one connection: requests written as they are made,
/// replies read as they arrive. Implementations know the dialect.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  /// Appends the next requests to `out` (about a chunk's worth: the runner
  /// writes them while it reads); returns how many it appended, 0 once
  /// there are none left.
  virtual std::size_t produce(std::string& out, Connection& connection) = 0;
  /// Reads the replies complete at the front of `unread`: returns the bytes
  /// they took (0: none is complete yet) and adds the requests they finish
  /// to `finished`. `max_value` bounds any value a reply declares. Throws
  /// Malformed for a reply that is not an answer to what was sent, or
  /// BackendError for one the caller refuses.
  virtual std::size_t consume(std::string_view unread, std::size_t max_value,
                              std::size_t& finished) = 0;
  /// Starts over, for a new connection: nothing was answered on the first.
  virtual void restart() noexcept {}
};

/// How long an exchange may take.
struct Limits {
  /// The call's deadline: running out of it is no failure of the server.
  std::optional<Steady::time_point> call;
  /// The call's cancellation: checked on every turn (waits are cut to
  /// 10 ms while it may be requested); no failure of the server either.
  std::stop_token stop;
  /// A reply must complete within this of the last (or of the start).
  std::chrono::milliseconds stall{1000};
  /// The largest value a reply may declare.
  std::size_t max_value = kDefaultItemSize;
};

/// One connection to one server. Not thread-safe: a caller borrows it.
class Connection {
 public:
  explicit Connection(int fd) noexcept;
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Runs `pipeline` to its end: every request written, every reply read.
  /// Throws Timeout (the call's deadline, or no reply for `limits.stall`),
  /// Closed, Malformed or what the pipeline throws; the connection is then
  /// broken. Bytes left over after the last reply are Malformed too.
  void run(Pipeline& pipeline, const Limits& limits, std::string_view server);

  /// Opaque tokens for `n` requests: the first of them (then +1, +2, ...).
  /// They never repeat on a connection (until 2^32 requests).
  std::uint32_t take_opaques(std::size_t n) noexcept {
    const std::uint32_t first = next_opaque_;
    next_opaque_ += static_cast<std::uint32_t>(n);
    return first;
  }

  [[nodiscard]] bool broken() const noexcept { return broken_; }
  void set_broken() noexcept { broken_ = true; }
  /// The socket (an event loop's channel reads and writes it itself).
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// The fork generation the connection was opened in: in a child, the
  /// socket is the parent's too and must not be used.
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }
  /// Whether it was taken from the idle pool (not opened for this request).
  [[nodiscard]] bool reused() const noexcept { return reused_; }
  void set_reused(bool reused) noexcept { reused_ = reused; }
  /// Whether any reply byte arrived during the last run().
  [[nodiscard]] bool answered() const noexcept { return answered_; }

 private:
  int fd_;
  std::uint64_t generation_;
  bool broken_ = false;
  bool reused_ = false;
  bool answered_ = false;
  std::uint32_t next_opaque_ = 1;
  std::string in_;
  std::size_t start_ = 0;  // unread data begins here
  std::string out_;
};

/// One memcached server: its address, its health (one state shared by every
/// connection to it), what it said at first contact, and its idle
/// connections.
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
  /// A request failed for the server's sake (refused, stalled, closed,
  /// garbage): after failure_limit of them in a row it is skipped for the
  /// retry interval. `why` is kept for the errors of the skipped requests.
  void failed(const std::string& why) noexcept;
  void succeeded() noexcept;
  /// Why it was last marked down.
  [[nodiscard]] std::string down_because() const;

  /// The largest value it may send (its item size limit, once known).
  [[nodiscard]] std::size_t max_value() const noexcept {
    return max_value_.load(std::memory_order_relaxed);
  }

  /// Its clock: (server - this host) in seconds, and when it was read
  /// (steady ticks; 0: never).
  std::atomic<std::int64_t> clock_offset{0};
  std::atomic<Steady::rep> clock_read_at{0};

  /// A connection (idle, unless `fresh`; or opened now, by `deadline`: at
  /// the server's first contact, checked to speak the dialect, and asked
  /// its item size limit). Throws BackendError.
  std::unique_ptr<Connection> borrow(const Limits& limits, bool fresh = false);
  /// Returns a connection; a broken one, or one from before a fork, is
  /// closed instead.
  void give_back(std::unique_ptr<Connection> connection) noexcept;
  /// An idle connection from the pool, or null (never a new one: opening
  /// one blocks).
  std::unique_ptr<Connection> take_idle() noexcept;

  /// In a forked child: the idle connections are the parent's sockets.
  void after_fork_in_child() noexcept;

  /// The keys it missed while away, deleted there before its next request.
  [[nodiscard]] Journal& journal() noexcept { return *journal_; }
  /// Held while its journal is replayed: a request waits for the replay
  /// (until its deadline).
  std::mutex replay_mutex;
  /// One of the gutter's servers.
  [[nodiscard]] bool gutter() const noexcept { return gutter_; }
  void set_gutter() noexcept { gutter_ = true; }

 private:
  int connect(Steady::time_point deadline);
  std::vector<std::vector<char>> resolve();
  void first_contact(Connection& connection, const Limits& limits);

  const RingServer address_;
  const Config& config_;
  const std::string name_;
  std::atomic<Steady::rep> down_until_{0};  // 0: up
  std::atomic<std::uint32_t> failures_{0};  // in a row
  std::atomic<bool> contacted_{false};
  std::atomic<std::size_t> max_value_;
  mutable std::mutex mutex_;
  std::string down_because_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::unique_ptr<Journal> journal_;
  bool gutter_ = false;
  // The host's addresses (sockaddr bytes), resolved at the first connect and
  // again when none of them answers.
  std::vector<std::vector<char>> addresses_;
};

/// What the gutter and the journals did (Backend::fleet_stats).
struct FleetCounters {
  std::atomic<std::uint64_t> gutter_requests{0};
  std::atomic<std::uint64_t> kept{0};
  std::atomic<std::uint64_t> replayed{0};
  std::atomic<std::uint64_t> dropped{0};
  std::atomic<std::uint64_t> loop_reads{0};
};

/// A request's keys that a failure without an answer leaves unknown: kept
/// in the server's journal (writes: the server may still hold what they
/// replaced).
struct Unanswered {
  std::size_t count = 0;
  FunctionRef<std::string_view(std::size_t)> key_of;
};

/// Every server of the option string, and where keys live.
class Client : ForkAware {
 public:
  /// `place`, if given, says where a key lives instead of the ketama ring
  /// (a distribution libmemcached computes); not with auto-eject.
  Client(Config config, bool auto_eject,
         std::function<std::size_t(std::string_view)> place = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// The index of the server that holds `key`: on the ring of every server,
  /// or (with auto-eject) of those not marked down. With a gutter, while
  /// that server is marked down (and not due for its retry), the gutter
  /// server of the key instead, if that one is not marked down too.
  [[nodiscard]] std::size_t server_for(std::string_view key) { return route(key, false); }
  /// The same for a write: one that goes to the gutter is kept in the
  /// journal of the key's own server.
  [[nodiscard]] std::size_t server_for_write(std::string_view key) { return route(key, true); }
  /// A write of `key` that must go to `server` (where its lease or lock was
  /// granted): `server`, its key kept in the journal of the key's own server
  /// if `server` is the gutter's.
  [[nodiscard]] std::size_t write_at(std::size_t server, std::string_view key);
  /// Whether `key`'s requests go to the gutter now.
  [[nodiscard]] bool in_gutter(std::string_view key);
  [[nodiscard]] Server& server(std::size_t index) noexcept { return *servers_[index]; }
  [[nodiscard]] std::size_t size() const noexcept { return servers_.size(); }
  [[nodiscard]] const Config& config() const noexcept { return config_; }

  /// Runs `pipeline` on a connection to `server`, after its journal's
  /// replay if it has one. A server marked down fails at once, naming why; a
  /// pooled connection the server closed while idle is retried once on a new
  /// one; a failure for the server's sake (not a refusal of the caller's,
  /// not the call's deadline) marks it down. A failure with no answer keeps
  /// the `unanswered` keys in the server's journal. Throws BackendError
  /// naming `what` and the server.
  void exchange(Server& server, Pipeline& pipeline, std::string_view what, const Request& request,
                const Unanswered* unanswered = nullptr);

  /// The `time` of `server`'s `stats`, in seconds since the epoch.
  [[nodiscard]] std::int64_t stats_time(Server& server, const Request& request);
  /// The clock of the server that holds `key` (Backend::server_time):
  /// its `stats` `time`, to the second.
  [[nodiscard]] ServerTime server_time(std::string_view key, const Request& request);

  /// The exptime to send server `index` for a value's `ttl` (exptime.hpp):
  /// beyond 30 days, on that server's clock, read by `stats` when first
  /// needed and again each hour (if it cannot be read, this host's clock).
  [[nodiscard]] std::int64_t exptime(std::size_t index, Ttl ttl, const Request& request);

  void after_fork_in_child() noexcept override;

  /// Servers of the pool (the gutter's follow them).
  [[nodiscard]] std::size_t pool_size() const noexcept { return pool_size_; }
  [[nodiscard]] const FleetCounters& counters() const noexcept { return counters_; }
  /// Keys waiting in every journal.
  [[nodiscard]] std::size_t pending() const noexcept;
  /// The counters, as Backend::fleet_stats says them.
  [[nodiscard]] FleetStats fleet_stats() const noexcept;
  /// How long a request of `request` to `server` may take, and the most it
  /// may read.
  [[nodiscard]] Limits limits(const Server& server, const Request& request) const noexcept;
  /// Whether `server`'s keys go to the gutter now (BackendError::moved).
  [[nodiscard]] bool moves(const Server& server) const noexcept;
  /// Counts a read made by an event loop's channel.
  void count_loop_read() noexcept { counters_.loop_reads.fetch_add(1, std::memory_order_relaxed); }

 private:
  [[nodiscard]] std::size_t home_of(std::string_view key);
  [[nodiscard]] std::size_t route(std::string_view key, bool write);
  // Keeps `key` in `server`'s journal, and wakes the replayer.
  void keep(Server& server, std::string_view key);
  // Deletes what `server` missed, on `connection`, before the request.
  void replay(Server& server, Connection& connection, const Limits& limits);
  // The replayer's loop: while a journal waits, tries its server every
  // kReplayPause (whether or not it is marked down) and replays it as soon
  // as it answers, which marks it up again.
  void replayer_loop(std::stop_token stop);
  void replay_pending(std::stop_token stop);

  Config config_;
  std::size_t pool_size_ = 0;
  std::optional<KetamaRing> gutter_ring_;
  FleetCounters counters_;
  // The replayer: a thread started at the first key kept, asleep while no
  // journal waits; stopped and joined by the destructor.
  std::mutex replayer_mutex_;
  std::condition_variable_any replayer_wake_;
  std::jthread replayer_;
  const bool auto_eject_;
  std::function<std::size_t(std::string_view)> place_;
  std::vector<std::unique_ptr<Server>> servers_;
  KetamaRing all_;
  // Auto-eject: the ring of the servers up when it was built, rebuilt when
  // that set changes.
  std::mutex ring_mutex_;
  std::vector<bool> live_;
  std::shared_ptr<const KetamaRing> live_ring_;
  ForkRegistration registration_;
};

/// How often the replayer tries a server whose journal waits.
inline constexpr std::chrono::milliseconds kReplayPause{100};

/// The requests of a batch grouped by server: (server index, the indices of
/// its requests, in order), `server_of(i)` saying where request i goes.
template <class ServerOf>
std::vector<std::pair<std::size_t, std::vector<std::size_t>>> by_server(std::size_t n,
                                                                        ServerOf server_of) {
  std::vector<std::pair<std::size_t, std::vector<std::size_t>>> groups;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t server = server_of(i);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const auto& g) { return g.first == server; });
    if (it == groups.end()) {
      groups.emplace_back(server, std::vector<std::size_t>{});
      it = std::prev(groups.end());
    }
    it->second.push_back(i);
  }
  return groups;
}

/// Reads the `STAT <name> <value>` lines of a `stats` reply up to `END`
/// (bounded: lines of at most 4 KB, 64 KB in all); `on_stat` sees each.
class StatsPipeline final : public Pipeline {
 public:
  /// `on_stat` is referred to, not copied: it must outlive the pipeline.
  StatsPipeline(std::string_view request,
                FunctionRef<void(std::string_view name, std::string_view value)> on_stat) noexcept
      : request_(request), on_stat_(on_stat) {}
  std::size_t produce(std::string& out, Connection&) override;
  std::size_t consume(std::string_view unread, std::size_t max_value,
                      std::size_t& finished) override;
  void restart() noexcept override {
    sent_ = false;
    seen_ = 0;
  }

 private:
  std::string_view request_;
  FunctionRef<void(std::string_view, std::string_view)> on_stat_;
  bool sent_ = false;
  std::size_t seen_ = 0;
};

/// Whether a SERVER_ERROR's text says the item is over the item size limit
/// (memcached: "object too large for cache"; others: "too big").
[[nodiscard]] bool says_too_big(std::string_view message) noexcept;

/// A store of `size` bytes that `server` refused as over its item size
/// limit: an error (ITEM_TOO_BIG) that names the size, the limit and the two
/// ways out.
[[noreturn]] void too_big(std::string_view op, std::string_view key, std::size_t size,
                          const Server& server);

}  // namespace dogpile::detail::wire
