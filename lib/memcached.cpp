#include "dogpile/memcached.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <libmemcached/memcached.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <regex>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "deadline.hpp"
#include "exptime.hpp"
#include "dogpile/detail/keys.hpp"
#include "dogpile/detail/lock_item.hpp"
#include "fork.hpp"
#include "lock_token.hpp"

namespace dogpile {
namespace {

constexpr std::string_view kDefaultOptions =
    "--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000 --POLL-TIMEOUT=1000 "
    "--RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64";

// The pool's size from --POOL-MIN / --POOL-MAX (the last of each wins, as in
// libmemcached's own parser).
std::pair<std::uint32_t, std::uint32_t> pool_sizes(std::string_view options) {
  auto last = [&](std::string_view name, std::uint32_t fallback) {
    const auto at = options.rfind(name);
    if (at == std::string_view::npos) return fallback;
    std::uint32_t value = fallback;
    const char* begin = options.data() + at + name.size();
    std::from_chars(begin, options.data() + options.size(), value);
    return value;
  };
  const std::uint32_t max = std::max<std::uint32_t>(1, last("--POOL-MAX=", 64));
  return {std::min(last("--POOL-MIN=", 1), max), max};
}

// dogpile's defaults, then the caller's options. libmemcached's parser
// refuses leading or trailing white space, so it is trimmed.
std::string with_defaults(std::string_view config) {
  const auto first = config.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return std::string(kDefaultOptions);
  const auto last = config.find_last_not_of(" \t\r\n");
  return fmt::format("{} {}", kDefaultOptions, config.substr(first, last - first + 1));
}

time_t memcached_exptime(Ttl ttl) { return static_cast<time_t>(detail::exptime(ttl)); }

// libmemcached's messages start with the connection's address in memory and
// end with its source file and line ("(0x55..) CONNECTION FAILURE(...) ->
// ./src/libmemcached/io.cc:145"); both are noise in a log, and the address
// defeats de-duplication. They are cut.
std::string tidy(std::string text) {
  static const std::regex address(R"(\(0x[0-9a-fA-F]+\)\s*)");
  static const std::regex source(R"(\s*->\s*\S+:\d+\s*$)");
  text = std::regex_replace(text, address, "");
  text = std::regex_replace(text, source, "");
  return text;
}

std::string describe(memcached_st* mc, memcached_return_t rc) {
  std::string text = memcached_strerror(mc, rc);
  if (mc != nullptr && memcached_last_error(mc) == rc) {
    const char* detail = memcached_last_error_message(mc);
    if (detail != nullptr && text != detail) text.append(": ").append(tidy(detail));
  }
  return text;
}

// A result as a code, named alike on both transports where they overlap;
// others by libmemcached's text, spaces made underscores.
std::string code_of(memcached_st* mc, memcached_return_t rc) {
  switch (rc) {
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_SOCKET_CREATE_FAILURE:
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_WRITE_FAILURE:
    case MEMCACHED_ERRNO:
      return "CONNECTION_FAILURE";
    case MEMCACHED_HOST_LOOKUP_FAILURE:
      return "HOST_LOOKUP_FAILURE";
    case MEMCACHED_TIMEOUT:
      return "TIMEOUT";
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
      return "SERVER_MARKED_DOWN";
    case MEMCACHED_E2BIG:
      return "ITEM_TOO_BIG";
    case MEMCACHED_SERVER_ERROR:
      return "SERVER_ERROR";
    case MEMCACHED_CLIENT_ERROR:
      return "CLIENT_ERROR";
    case MEMCACHED_PROTOCOL_ERROR:
      return "PROTOCOL_ERROR";
    case MEMCACHED_NO_SERVERS:
      return "NO_SERVERS";
    case MEMCACHED_MEMORY_ALLOCATION_FAILURE:
      return "OUT_OF_MEMORY";
    default:
      break;
  }
  std::string code = memcached_strerror(mc, rc);
  for (char& c : code) c = c == ' ' ? '_' : c;
  return code;
}

// The server `key` lives on, "host:port"; empty if there is none.
std::string server_of(memcached_st* mc, std::string_view key) {
  if (mc == nullptr || key.empty()) return {};
  memcached_return_t rc;
  const memcached_instance_st* server = memcached_server_by_key(mc, key.data(), key.size(), &rc);
  if (server == nullptr) return {};
  return fmt::format("{}:{}", memcached_server_name(server), memcached_server_port(server));
}

// `placed_by`: the key that placed the request on its server, if not `key`
// (a lock item lives on its value's server).
[[noreturn]] void fail(std::string_view op, std::string_view key, memcached_st* mc,
                       memcached_return_t rc, std::string_view placed_by = {}) {
  std::string message = fmt::format("memcached {} {}: {}", op, key, describe(mc, rc));
  std::string code = code_of(mc, rc);
  std::string server = server_of(mc, placed_by.empty() ? key : placed_by);
  throw BackendError(message, std::move(server), std::move(code));
}

// Checks a parsed configuration for what dogpile cannot work with.
void validate(memcached_st* mc) {
  if (memcached_server_count(mc) == 0) {
    throw std::invalid_argument(
        "dogpile::MemcachedBackend: the options name no server; add --SERVER=host:port");
  }
  struct Rejected {
    memcached_behavior_t behavior;
    const char* option;
    const char* why;
  };
  static constexpr Rejected rejected[] = {
      {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, "--BINARY-PROTOCOL",
       "the lock's compare-and-delete needs the ASCII protocol"},
      {MEMCACHED_BEHAVIOR_USE_UDP, "--USE-UDP", "locks need replies over TCP"},
      {MEMCACHED_BEHAVIOR_NOREPLY, "--NOREPLY", "locks need the server's replies"},
      {MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, "--BUFFER-REQUESTS",
       "locks need each request's reply at once"},
  };
  for (const auto& r : rejected) {
    if (memcached_behavior_get(mc, r.behavior) != 0) {
      throw std::invalid_argument(
          fmt::format("dogpile::MemcachedBackend: {} is not supported: {}", r.option, r.why));
    }
  }
  memcached_return_t rc;
  const void* ns = memcached_callback_get(mc, MEMCACHED_CALLBACK_NAMESPACE, &rc);
  if (ns != nullptr && *static_cast<const char*>(ns) != '\0') {
    throw std::invalid_argument(
        "dogpile::MemcachedBackend: --NAMESPACE is not supported; use RegionOptions::key_prefix");
  }
}

// The local port of a socket, or 0.
in_port_t local_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in&>(addr).sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6&>(addr).sin6_port);
  return 0;
}

// In a forked child: closes the child's copies of the sockets whose local
// ports are `ports` (the parent's connections), without a word to the
// server — a polite `quit` would end the parent's connection too.
void close_inherited_sockets(const std::vector<in_port_t>& ports) {
  if (ports.empty()) return;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;  // they stay open, unused, until the child exits
  std::vector<int> to_close;
  const int own = ::dirfd(dir);
  while (const dirent* entry = ::readdir(dir)) {
    int fd = -1;
    const std::string_view name(entry->d_name);
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc() ||
        fd == own) {
      continue;
    }
    const in_port_t port = local_port(fd);
    if (port != 0 && std::find(ports.begin(), ports.end(), port) != ports.end()) {
      to_close.push_back(fd);
    }
  }
  ::closedir(dir);
  for (int fd : to_close) ::close(fd);
}

}  // namespace

// Connections: a pool of libmemcached handles cloned from one fully
// configured master (a handle cloned earlier would keep an older server
// distribution, and handles that disagree on where a key lives would split
// values from their locks). The pool is dogpile's own rather than
// libmemcachedutil's so that every handle ever made is known: a forked child
// must find and drop each of them.
struct MemcachedBackend::Impl : detail::ForkAware {
  // A pooled libmemcached handle, with a result buffer kept across requests
  // (a fresh hit then allocates nothing for it).
  struct Handle {
    memcached_st* mc = nullptr;
    memcached_result_st result{};
    std::uint64_t generation = 0;  // of the pool it was made for
  };

  Impl(std::string opts, const MemcachedBackend::Options& extra)
      : options(std::move(opts)), settings(extra), registration(*this) {
    if (extra.failure_limit == 0) {
      throw std::invalid_argument("dogpile::MemcachedBackend: failure_limit must be at least 1");
    }
    master = make_master();
    const auto [pool_min, pool_max] = pool_sizes(options);
    (void)pool_min;  // handles are made on demand
    max_connections = pool_max;
    poll_timeout_ms =
        static_cast<std::int32_t>(memcached_behavior_get(master, MEMCACHED_BEHAVIOR_POLL_TIMEOUT));
    connect_timeout_ms = static_cast<std::int32_t>(
        memcached_behavior_get(master, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT));
    retry_timeout =
        std::chrono::seconds(memcached_behavior_get(master, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT));
  }
  ~Impl() {
    registration.reset();
    for (Handle* h : all) {
      memcached_result_free(&h->result);
      memcached_free(h->mc);
      delete h;
    }
    memcached_free(master);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  memcached_st* make_master() const {
    memcached_st* mc = memcached(options.data(), options.size());
    if (mc == nullptr) {
      char error[512] = {};
      libmemcached_check_configuration(options.data(), options.size(), error, sizeof error);
      // libmemcached's parser says "syntax error, unexpected UNKNOWN_OPTION":
      // name the option it stumbled on (the first that fails on its own).
      std::string culprit;
      for (std::size_t at = 0; at < options.size() && culprit.empty();) {
        at = options.find_first_not_of(" \t\r\n", at);
        if (at == std::string::npos) break;
        const std::size_t end = std::min(options.find_first_of(" \t\r\n", at), options.size());
        const std::string token = options.substr(at, end - at);
        char ignored[512] = {};
        if (libmemcached_check_configuration(token.data(), token.size(), ignored, sizeof ignored) !=
            MEMCACHED_SUCCESS) {
          culprit = token;
        }
        at = end;
      }
      throw std::invalid_argument(
          culprit.empty()
              ? fmt::format("dogpile::MemcachedBackend: cannot parse options \"{}\": {}", options,
                            error)
              : fmt::format("dogpile::MemcachedBackend: option \"{}\" is not one libmemcached "
                            "knows, or its value is wrong (options \"{}\": {})",
                            culprit, options, error));
    }
    try {
      validate(mc);
    } catch (...) {
      memcached_free(mc);
      throw;
    }
    // Ketama unless the caller chose a distribution.
    if (options.find("--DISTRIBUTION") == std::string::npos) {
      memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    }
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, settings.failure_limit);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS,
                           settings.auto_eject ? 1 : 0);
    return mc;
  }

  // In the child: every handle's sockets are the parent's. Close the child's
  // copies, forget the handles (never freed: freeing sends `quit`), and
  // start with a new master and an empty pool.
  void after_fork_in_child() noexcept override {
    std::vector<in_port_t> ports;
    auto collect = [&](memcached_st* mc) {
      const std::uint32_t n = memcached_server_count(mc);
      for (std::uint32_t i = 0; i < n; ++i) {
        const in_port_t port =
            memcached_server_srcport(memcached_server_instance_by_position(mc, i));
        if (port != 0 && port != static_cast<in_port_t>(-1)) ports.push_back(port);
      }
    };
    collect(master);
    for (Handle* h : all) collect(h->mc);
    close_inherited_sockets(ports);
    new (&mutex) std::mutex;
    new (&available) std::condition_variable;
    new (&idle) std::vector<Handle*>();
    new (&all) std::vector<Handle*>();
    failed_at.store(0, std::memory_order_relaxed);
    try {
      master = make_master();
    } catch (...) {
      master = nullptr;  // cannot happen: the same options parsed in the parent
    }
  }

  // A handle borrowed for one operation. The request's deadline (the calling
  // region's, see request_deadline()) caps libmemcached's timeouts.
  class Connection {
   public:
    Connection(Impl& impl, std::string_view op, std::string_view key)
        : impl_(impl), exceptions_(std::uncaught_exceptions()) {
      const auto deadline = detail::request_deadline();
      handle_ = impl.borrow_idle();
      if (handle_ == nullptr) {
        const auto wait_until =
            std::min(deadline.value_or(detail::Steady::time_point::max()),
                     detail::Steady::now() + std::chrono::milliseconds(impl.poll_timeout_ms));
        handle_ = impl.borrow(wait_until);
        if (handle_ == nullptr) {
          throw BackendError(
              fmt::format("memcached {} {}: no connection free within the {}", op, key,
                          deadline && *deadline <= wait_until ? "call's deadline"
                                                              : "poll timeout (raise --POOL-MAX)"));
        }
      }
      if (deadline) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - detail::Steady::now())
                .count();
        if (left <= 0) {
          impl.give_back(handle_);
          throw BackendError(
              fmt::format("memcached {} {}: the call's deadline has passed", op, key));
        }
        if (left < impl.poll_timeout_ms) {
          capped_ = true;
          const auto ms = static_cast<std::uint64_t>(left);
          memcached_behavior_set(handle_->mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
          memcached_behavior_set(handle_->mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
                                 std::min<std::uint64_t>(ms, impl.connect_timeout_ms));
        }
      }
    }
    ~Connection() {
      // Leaving by an exception: the operation failed (the server may have
      // been ejected from this handle's ring).
      if (impl_.settings.auto_eject && std::uncaught_exceptions() > exceptions_) {
        impl_.note_failure();
      }
      if (capped_) {
        memcached_behavior_set(handle_->mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT,
                               static_cast<std::uint64_t>(impl_.poll_timeout_ms));
        memcached_behavior_set(handle_->mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT,
                               static_cast<std::uint64_t>(impl_.connect_timeout_ms));
      }
      impl_.give_back(handle_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    memcached_st* get() const noexcept { return handle_->mc; }
    memcached_result_st* result() const noexcept { return &handle_->result; }

   private:
    Impl& impl_;
    int exceptions_;
    Handle* handle_ = nullptr;
    bool capped_ = false;
  };

  // auto-eject that comes back: libmemcached 1.1 ejects a failed server from
  // a handle's ring and never takes it back, even after --RETRY-TIMEOUT (a
  // restarted server stays out for good). So after a failure, once the retry
  // interval has passed, the pool starts over with handles cloned from the
  // master (which never serves a request, so its ring has every server): a
  // server that is back takes its keys back; one still down fails once more
  // and is ejected again, until the next interval.
  void note_failure() noexcept {
    const auto now = detail::Steady::now().time_since_epoch().count();
    detail::Steady::rep none = 0;
    failed_at.compare_exchange_strong(none, std::max<detail::Steady::rep>(now, 1));
  }

  void renew_if_due_locked() {
    const auto at = failed_at.load(std::memory_order_relaxed);
    if (at == 0) return;
    const auto due = detail::Steady::time_point(detail::Steady::duration(at)) + retry_timeout;
    if (detail::Steady::now() < due) return;
    failed_at.store(0, std::memory_order_relaxed);
    ++generation;
    for (Handle* h : idle) free_locked(h);
    idle.clear();
  }

  void free_locked(Handle* h) {
    std::erase(all, h);
    memcached_result_free(&h->result);
    memcached_free(h->mc);
    delete h;
  }

  // An idle handle, or one made now if the pool may grow; nullptr if the
  // caller must wait. The common case: a mutex, no clock.
  Handle* borrow_idle() {
    std::lock_guard lock(mutex);
    return take_locked();
  }

  Handle* take_locked() {
    if (settings.auto_eject) renew_if_due_locked();
    if (!idle.empty()) {
      Handle* h = idle.back();
      idle.pop_back();
      return h;
    }
    if (all.size() < max_connections) {
      auto h = std::make_unique<Handle>();
      h->mc = memcached_clone(nullptr, master);
      if (h->mc == nullptr) throw std::bad_alloc();
      // libmemcached 1.1's clone keeps ketama but not its weighting: it would
      // place keys by unweighted ketama (other points, other servers) unless
      // told again.
      if (memcached_behavior_get(master, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED) != 0) {
        memcached_behavior_set(h->mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
      }
      memcached_result_create(h->mc, &h->result);
      h->generation = generation;
      all.push_back(h.get());
      return h.release();
    }
    return nullptr;
  }

  Handle* borrow(detail::Steady::time_point until) {
    std::unique_lock lock(mutex);
    for (;;) {
      if (Handle* h = take_locked()) return h;
      if (available.wait_until(lock, until) == std::cv_status::timeout && idle.empty()) {
        return nullptr;
      }
    }
  }

  void give_back(Handle* h) {
    {
      std::lock_guard lock(mutex);
      if (h->generation == generation) {
        idle.push_back(h);
      } else {
        free_locked(h);  // made before the pool started over
      }
    }
    available.notify_one();
  }

  // One multi-key `gets` of `keys`, all placed by `master_key` (one server,
  // one request), or each by its own key when `master_key` is empty; calls
  // `found(index, result)` for each item returned.
  template <class Found>
  void gets_many(memcached_st* mc, std::string_view op, std::string_view master_key,
                 std::span<const std::string_view> keys, Found found) {
    std::vector<const char*> key_ptrs;
    std::vector<size_t> key_lengths;
    std::unordered_multimap<std::string_view, std::size_t> index;
    key_ptrs.reserve(keys.size());
    key_lengths.reserve(keys.size());
    index.reserve(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      key_ptrs.push_back(keys[i].data());
      key_lengths.push_back(keys[i].size());
      index.emplace(keys[i], i);
    }
    memcached_return_t rc =
        master_key.empty()
            ? memcached_mget(mc, key_ptrs.data(), key_lengths.data(), key_ptrs.size())
            : memcached_mget_by_key(mc, master_key.data(), master_key.size(), key_ptrs.data(),
                                    key_lengths.data(), key_ptrs.size());
    if (rc != MEMCACHED_SUCCESS) fail(op, keys.front(), mc, rc, master_key);
    while (memcached_result_st* r = memcached_fetch_result(mc, nullptr, &rc)) {
      std::string_view key(memcached_result_key_value(r), memcached_result_key_length(r));
      auto [first, last] = index.equal_range(key);
      for (auto it = first; it != last; ++it) found(it->second, r);
      memcached_result_free(r);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
      fail(op, keys.front(), mc, rc, master_key);
    }
  }

  // Groups `slots` by the server that holds each key: one entry per server,
  // listing the slots' indices.
  std::vector<std::vector<std::size_t>> by_server(memcached_st* mc, std::span<LeaseSlot> slots) {
    std::vector<std::pair<const memcached_instance_st*, std::vector<std::size_t>>> groups;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      memcached_return_t rc;
      const auto* server =
          memcached_server_by_key(mc, slots[i].key.data(), slots[i].key.size(), &rc);
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const auto& g) { return g.first == server; });
      if (it == groups.end()) {
        groups.emplace_back(server, std::vector<std::size_t>{i});
      } else {
        it->second.push_back(i);
      }
    }
    std::vector<std::vector<std::size_t>> out;
    out.reserve(groups.size());
    for (auto& g : groups) out.push_back(std::move(g.second));
    return out;
  }

  bool add_by_key(std::string_view master_key, std::string_view key, std::string_view data,
                  std::uint32_t flags, Ttl ttl) {
    Connection conn(*this, "add", key);
    const memcached_return_t rc =
        memcached_add_by_key(conn.get(), master_key.data(), master_key.size(), key.data(),
                             key.size(), data.data(), data.size(), memcached_exptime(ttl), flags);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) return false;
    fail("add", key, conn.get(), rc, master_key);
  }

  // `cas` of `key` (placed by `master_key`); false if the version changed or
  // the item is gone.
  bool cas_by_key(memcached_st* mc, std::string_view op, std::string_view master_key,
                  std::string_view key, std::string_view data, std::uint32_t flags, time_t exptime,
                  Cas version) {
    const memcached_return_t rc =
        memcached_cas_by_key(mc, master_key.data(), master_key.size(), key.data(), key.size(),
                             data.data(), data.size(), exptime, flags, version);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND || rc == MEMCACHED_NOTSTORED) {
      return false;
    }
    fail(op, key, mc, rc, master_key);
  }

  // The version of `lock`'s item if that item is still this holder's
  // (`gets k#L`, on the value's server).
  std::optional<Cas> owned_version(memcached_st* mc, MemcachedLock& lock, std::string_view op) {
    std::optional<Cas> version;
    const std::string_view keys[] = {lock.lock_key_};
    gets_many(mc, op, lock.value_key_, keys, [&](std::size_t, memcached_result_st* r) {
      const auto item = detail::decode_lock_item(
          std::string_view(memcached_result_value(r), memcached_result_length(r)),
          memcached_result_flags(r), detail::key_check(lock.lock_key_));
      if (item && item->token == lock.token_) version = memcached_result_cas(r);
    });
    return version;
  }

  // After confirm read `lock`'s item (or found none): remembers its version,
  // if it is this holder's, so that the release is one `cas`.
  static void note_confirmed(MemcachedLock& lock, const Item* item, Cas version) {
    const auto held = item != nullptr ? detail::decode_lock_item(item->data, item->flags,
                                                                 detail::key_check(lock.lock_key_))
                                      : std::nullopt;
    lock.lock_version_ = held && held->token == lock.token_ ? version : 0;
  }

  std::string options;
  MemcachedBackend::Options settings;
  memcached_st* master = nullptr;  // configured once; only ever cloned
  std::mutex mutex;
  std::condition_variable available;
  std::vector<Handle*> idle;
  std::vector<Handle*> all;  // every handle made, borrowed or idle
  std::size_t max_connections = 64;
  std::int32_t poll_timeout_ms = 1000;
  std::int32_t connect_timeout_ms = 1000;
  std::chrono::seconds retry_timeout{2};
  std::atomic<detail::Steady::rep> failed_at{0};  // auto-eject: the first failure since renewal
  std::uint64_t generation = 0;                   // of the pool (under mutex)
  detail::ForkRegistration registration;
};

MemcachedBackend::MemcachedBackend(std::string_view config)
    : MemcachedBackend(Options{std::string(config)}) {}

MemcachedBackend::MemcachedBackend(Options options)
    : impl_(std::make_shared<Impl>(with_defaults(options.config), options)) {}

MemcachedBackend::~MemcachedBackend() = default;

const std::string& MemcachedBackend::options() const noexcept { return impl_->options; }

std::optional<Item> MemcachedBackend::get(std::string_view key) {
  Impl::Connection conn(*impl_, "get", key);
  size_t length = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc;
  char* value = memcached_get(conn.get(), key.data(), key.size(), &length, &flags, &rc);
  if (rc == MEMCACHED_SUCCESS) {
    Item item{value != nullptr ? std::string(value, length) : std::string(), flags};
    std::free(value);
    return item;
  }
  std::free(value);
  if (rc == MEMCACHED_NOTFOUND) return std::nullopt;
  fail("get", key, conn.get(), rc);
}

bool MemcachedBackend::get_view(std::string_view key,
                                detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  Impl::Connection conn(*impl_, "get", key);
  size_t length = 0;
  std::uint32_t flags = 0;
  memcached_return_t rc;
  std::unique_ptr<char, decltype(&std::free)> value(
      memcached_get(conn.get(), key.data(), key.size(), &length, &flags, &rc), &std::free);
  if (rc == MEMCACHED_SUCCESS) {
    visit(value ? std::string_view(value.get(), length) : std::string_view(), flags);
    return true;
  }
  if (rc == MEMCACHED_NOTFOUND) return false;
  fail("get", key, conn.get(), rc);
}

void MemcachedBackend::set(std::string_view key, const Item& item, Ttl ttl) {
  Impl::Connection conn(*impl_, "set", key);
  const memcached_return_t rc = memcached_set(conn.get(), key.data(), key.size(), item.data.data(),
                                              item.data.size(), memcached_exptime(ttl), item.flags);
  if (rc != MEMCACHED_SUCCESS) fail("set", key, conn.get(), rc);
}

bool MemcachedBackend::add(std::string_view key, const Item& item, Ttl ttl) {
  return impl_->add_by_key(key, key, item.data, item.flags, ttl);
}

bool MemcachedBackend::remove(std::string_view key) {
  Impl::Connection conn(*impl_, "delete", key);
  const memcached_return_t rc = memcached_delete(conn.get(), key.data(), key.size(), 0);
  if (rc == MEMCACHED_SUCCESS) return true;
  if (rc == MEMCACHED_NOTFOUND) return false;
  fail("delete", key, conn.get(), rc);
}

std::vector<std::optional<Item>> MemcachedBackend::get_multi(
    std::span<const std::string_view> keys) {
  std::vector<std::optional<Item>> items(keys.size());
  if (keys.empty()) return items;
  Impl::Connection conn(*impl_, "get_multi", keys.front());
  impl_->gets_many(conn.get(), "get_multi", {}, keys, [&](std::size_t i, memcached_result_st* r) {
    items[i] = Item{std::string(memcached_result_value(r), memcached_result_length(r)),
                    memcached_result_flags(r)};
  });
  return items;
}

std::unique_ptr<DistributedLock> MemcachedBackend::make_lock(std::string_view key, Ttl ttl) {
  return std::unique_ptr<DistributedLock>(
      new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(key), ttl, LockInfo{}));
}

std::optional<Item> MemcachedBackend::gets(std::string_view key, Cas& cas) {
  Impl::Connection conn(*impl_, "gets", key);
  std::optional<Item> item;
  cas = 0;
  const std::string_view keys[] = {key};
  impl_->gets_many(conn.get(), "gets", {}, keys, [&](std::size_t, memcached_result_st* r) {
    item = Item{std::string(memcached_result_value(r), memcached_result_length(r)),
                memcached_result_flags(r)};
    cas = memcached_result_cas(r);
  });
  return item;
}

bool MemcachedBackend::cas(std::string_view key, const Item& item, Ttl ttl, Cas version) {
  Impl::Connection conn(*impl_, "cas", key);
  return impl_->cas_by_key(conn.get(), "cas", key, key, item.data, item.flags,
                           memcached_exptime(ttl), version);
}

// --- Lease operations ------------------------------------------------------
// read_view: `gets k`; read: `gets k...` (one per server); claim: `add k#L`
// per key, on the value's server; confirm and poll: `gets k k#L ...`, one per
// server; store: `add` or `cas` per key; a lock's release: one `cas` with
// expiration -1 against the version that confirm saw.

bool MemcachedBackend::read_view(LeaseSlot& slot, const LeaseRequest&,
                                 detail::FunctionRef<void(std::string_view, std::uint32_t)> visit) {
  Impl::Connection conn(*impl_, "get", slot.key);
  slot.lease = LeaseState::unknown;
  slot.cas = 0;
  const char* keys[] = {slot.key.data()};
  const size_t lengths[] = {slot.key.size()};
  memcached_return_t rc = memcached_mget(conn.get(), keys, lengths, 1);
  if (rc != MEMCACHED_SUCCESS) fail("get", slot.key, conn.get(), rc);
  bool found = false;
  while (memcached_result_st* r = memcached_fetch_result(conn.get(), conn.result(), &rc)) {
    if (!found) {  // a reply naming the key asked for (the envelope's check does the rest)
      found = true;
      slot.cas = memcached_result_cas(r);
      visit(std::string_view(memcached_result_value(r), memcached_result_length(r)),
            memcached_result_flags(r));
    }
  }
  if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
    fail("get", slot.key, conn.get(), rc);
  }
  return found;
}

void MemcachedBackend::read(std::span<LeaseSlot> slots, const LeaseRequest&) {
  if (slots.empty()) return;
  std::vector<std::string_view> keys;
  keys.reserve(slots.size());
  for (auto& slot : slots) {
    keys.push_back(slot.key);
    slot.item.reset();
    slot.cas = 0;
    slot.lease = LeaseState::unknown;
  }
  Impl::Connection conn(*impl_, "get_multi", keys.front());
  impl_->gets_many(conn.get(), "get_multi", {}, keys, [&](std::size_t i, memcached_result_st* r) {
    slots[i].item = Item{std::string(memcached_result_value(r), memcached_result_length(r)),
                         memcached_result_flags(r)};
    slots[i].cas = memcached_result_cas(r);
  });
}

void MemcachedBackend::claim(std::span<LeaseSlot> slots, const LeaseRequest& request) {
  for (auto& slot : slots) {
    auto lock = std::unique_ptr<MemcachedLock>(new MemcachedLock(
        MemcachedLock::Mapped{}, impl_, std::string(slot.key), request.ttl, request.info));
    if (lock->try_lock()) {
      slot.lock = std::move(lock);
      slot.lease = LeaseState::won;
    } else {
      slot.lease = LeaseState::held;
    }
  }
}

// `gets k k#L` for each server's share of `slots`; fills each slot's item and
// version, and calls `lock_seen(slot, lock item or nullptr, its version)`.
template <class LockSeen>
static void read_with_locks(MemcachedBackend::Impl& impl, std::span<LeaseSlot> slots,
                            std::string_view op, LockSeen lock_seen) {
  if (slots.empty()) return;
  MemcachedBackend::Impl::Connection conn(impl, op, slots.front().key);
  for (const auto& group : impl.by_server(conn.get(), slots)) {
    std::vector<std::string> lock_keys;
    std::vector<std::string_view> keys;
    lock_keys.reserve(group.size());
    keys.reserve(group.size() * 2);
    for (std::size_t i : group) lock_keys.push_back(detail::lock_key_for(slots[i].key));
    for (std::size_t j = 0; j < group.size(); ++j) {
      keys.push_back(slots[group[j]].key);
      keys.push_back(lock_keys[j]);
    }
    std::vector<std::optional<Item>> locks(group.size());
    std::vector<Cas> lock_versions(group.size(), 0);
    for (std::size_t i : group) {
      slots[i].item.reset();
      slots[i].cas = 0;
    }
    impl.gets_many(conn.get(), op, slots[group.front()].key, keys,
                   [&](std::size_t k, memcached_result_st* r) {
                     Item item{std::string(memcached_result_value(r), memcached_result_length(r)),
                               memcached_result_flags(r)};
                     const std::size_t j = k / 2;
                     if (k % 2 == 0) {
                       slots[group[j]].item = std::move(item);
                       slots[group[j]].cas = memcached_result_cas(r);
                     } else {
                       locks[j] = std::move(item);
                       lock_versions[j] = memcached_result_cas(r);
                     }
                   });
    for (std::size_t j = 0; j < group.size(); ++j) {
      lock_seen(slots[group[j]], lock_keys[j], locks[j] ? &*locks[j] : nullptr, lock_versions[j]);
    }
  }
}

void MemcachedBackend::confirm(std::span<LeaseSlot> slots) {
  read_with_locks(*impl_, slots, "confirm",
                  [](LeaseSlot& slot, const std::string&, const Item* lock, Cas version) {
                    slot.fence = slot.item ? Fence{Fence::Kind::version, slot.cas}
                                           : Fence{Fence::Kind::absent, 0};
                    if (auto* held = dynamic_cast<MemcachedLock*>(slot.lock.get())) {
                      Impl::note_confirmed(*held, lock, version);
                    }
                  });
}

void MemcachedBackend::poll(std::span<LeaseSlot> slots, const LeaseRequest&) {
  read_with_locks(*impl_, slots, "poll",
                  [](LeaseSlot& slot, const std::string& lock_key, const Item* lock, Cas) {
                    if (lock == nullptr) {
                      slot.lease = LeaseState::free;
                      return;
                    }
                    slot.lease = LeaseState::held;
                    slot.holder = {};
                    if (auto info = detail::decode_lock_item(lock->data, lock->flags,
                                                             detail::key_check(lock_key))) {
                      slot.holder = LockInfo{info->started_at, info->expected, info->clock_error};
                    }
                  });
}

void MemcachedBackend::store(std::span<LeaseSlot> slots) {
  for (auto& slot : slots) {
    if (slot.value == nullptr) continue;
    const Item& item = *slot.value;
    switch (slot.fence.kind) {
      case Fence::Kind::absent:
        slot.stored = impl_->add_by_key(slot.key, slot.key, item.data, item.flags, slot.ttl);
        break;
      case Fence::Kind::version: {
        Impl::Connection conn(*impl_, "cas", slot.key);
        slot.stored =
            impl_->cas_by_key(conn.get(), "cas", slot.key, slot.key, item.data, item.flags,
                              memcached_exptime(slot.ttl), slot.fence.version);
        break;
      }
      case Fence::Kind::none:
        set(slot.key, item, slot.ttl);
        slot.stored = true;
        break;
    }
  }
}

// The server's `stats` `time`, read on a connection of its own (libmemcached
// has no call for one server's stats on a pooled handle). The time is taken
// around the request alone, not the connect.
std::optional<ServerTime> MemcachedBackend::server_time(std::string_view key) {
  std::string host;
  in_port_t port = 0;
  {
    Impl::Connection conn(*impl_, "stats", key);
    memcached_return_t rc;
    const auto* server = memcached_server_by_key(conn.get(), key.data(), key.size(), &rc);
    if (server == nullptr) fail("stats", key, conn.get(), rc);
    host = memcached_server_name(server);
    port = memcached_server_port(server);
  }
  const auto fail_with = [&](std::string_view why) -> BackendError {
    return BackendError(fmt::format("memcached stats on {}:{}: {}", host, port, why));
  };
  int fd = -1;
  if (port == 0) {  // a unix socket
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (host.size() >= sizeof addr.sun_path) throw fail_with("socket path too long");
    std::memcpy(addr.sun_path, host.data(), host.size());
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      fd = -1;
    }
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const std::string service = std::to_string(port);
    if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0 || found == nullptr) {
      throw fail_with("cannot resolve the host");
    }
    for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
      fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(found);
  }
  if (fd < 0) throw fail_with(std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(impl_->poll_timeout_ms);
  static constexpr std::string_view request = "stats\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    throw fail_with("send failed");
  }
  std::string reply;
  char buffer[4096];
  while (reply.find("END\r\n") == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      throw fail_with("timed out");
    }
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) throw fail_with("connection closed");
    reply.append(buffer, static_cast<std::size_t>(n));
    if (reply.size() > (1 << 20)) throw fail_with("reply too long");
  }
  const auto at = reply.find("STAT time ");
  if (at == std::string::npos) throw fail_with("no time in the reply");
  std::int64_t seconds = 0;
  const char* begin = reply.data() + at + 10;
  if (std::from_chars(begin, reply.data() + reply.size(), seconds).ec != std::errc()) {
    throw fail_with("unreadable time");
  }
  return ServerTime{TimePoint(std::chrono::seconds(seconds)), std::chrono::seconds(1)};
}

// --- MemcachedLock -----------------------------------------------------------

MemcachedLock::MemcachedLock(MemcachedBackend& backend, std::string_view key, Ttl ttl)
    : MemcachedLock(Mapped{}, backend.impl_, detail::map_key("", key), ttl, LockInfo{}) {}

MemcachedLock::MemcachedLock(Mapped, std::shared_ptr<MemcachedBackend::Impl> impl,
                             std::string value_key, Ttl ttl, LockInfo info)
    : impl_(std::move(impl)),
      value_key_(std::move(value_key)),
      lock_key_(detail::lock_key_for(value_key_)),
      ttl_(ttl),
      info_(info) {}

MemcachedLock::~MemcachedLock() { release_if_held(); }

bool MemcachedLock::try_acquire() {
  const auto item =
      detail::new_lock_item(lock_key_, info_.started_at, info_.expected, info_.clock_error);
  std::string bytes = detail::encode_lock_item(item);
  if (!impl_->add_by_key(value_key_, lock_key_, bytes, detail::kLockFlags, ttl_)) return false;
  token_ = item.token;
  bytes_ = std::move(bytes);
  lock_version_ = 0;
  held_ = true;
  return true;
}

bool MemcachedLock::release_acquired() {
  if (!held_) return false;
  // A request that throws leaves the lock held here: it may be tried again.
  MemcachedBackend::Impl::Connection conn(*impl_, "release lock", lock_key_);
  // One `cas` when the lock's version is known (extensions touch, which
  // keeps it): it fails only if the lock expired or was taken over.
  Cas version = lock_version_;
  if (version == 0) {
    const auto owned = impl_->owned_version(conn.get(), *this, "release lock");
    if (!owned) {
      held_ = false;
      return false;
    }
    version = *owned;
  }
  const bool released = impl_->cas_by_key(conn.get(), "release lock", value_key_, lock_key_, bytes_,
                                          detail::kLockFlags, time_t{-1}, version);
  held_ = false;
  lock_version_ = 0;
  return released;
}

bool MemcachedLock::extend() {
  if (!held_) return false;
  MemcachedBackend::Impl::Connection conn(*impl_, "extend lock", lock_key_);
  if (!impl_->owned_version(conn.get(), *this, "extend lock")) return false;
  // `touch` sets a new time to live and keeps the version (memcached 1.6).
  const memcached_return_t rc =
      memcached_touch_by_key(conn.get(), value_key_.data(), value_key_.size(), lock_key_.data(),
                             lock_key_.size(), memcached_exptime(ttl_));
  if (rc == MEMCACHED_SUCCESS) return true;
  if (rc == MEMCACHED_NOTFOUND) return false;
  fail("extend lock", lock_key_, conn.get(), rc, value_key_);
}

}  // namespace dogpile
