#include "dogpile/memcached.hpp"

#include <fmt/format.h>
#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/util.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "dogpile/detail/keys.hpp"
#include "lock_token.hpp"

namespace dogpile {
namespace {

constexpr std::string_view kDefaultOptions =
    "--SUPPORT-CAS --VERIFY-KEY --TCP-NODELAY --CONNECT-TIMEOUT=1000 --POLL-TIMEOUT=1000 "
    "--RETRY-TIMEOUT=2 --POOL-MIN=1 --POOL-MAX=64";

// memcached reads an expiration above 30 days as an absolute Unix time.
constexpr std::chrono::seconds kMaxRelativeExpiration = std::chrono::hours(24 * 30);

// The pool's size from --POOL-MIN / --POOL-MAX (the last of each wins, as in
// libmemcached's own parser, which only memcached_pool() applies).
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

time_t memcached_exptime(Ttl ttl) {
  if (ttl <= Ttl::zero()) return 0;
  if (ttl > kMaxRelativeExpiration) return std::time(nullptr) + static_cast<time_t>(ttl.count());
  return static_cast<time_t>(ttl.count());
}

std::string describe(memcached_st* mc, memcached_return_t rc) {
  std::string text = memcached_strerror(mc, rc);
  if (mc != nullptr && memcached_last_error(mc) == rc) {
    const char* detail = memcached_last_error_message(mc);
    if (detail != nullptr && text != detail) text.append(": ").append(detail);
  }
  return text;
}

[[noreturn]] void fail(std::string_view op, std::string_view key, memcached_st* mc,
                       memcached_return_t rc) {
  throw BackendError(fmt::format("memcached {} {}: {}", op, key, describe(mc, rc)));
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

}  // namespace

struct MemcachedBackend::Impl {
  // The master connection is configured completely (the option string,
  // then what it cannot say) before the pool clones it: a connection cloned
  // earlier keeps the distribution it was cloned with, and connections that
  // disagree on which server holds a key would split values and locks.
  Impl(std::string opts, const MemcachedBackend::Options& extra) : options(std::move(opts)) {
    if (extra.failure_limit == 0) {
      throw std::invalid_argument("dogpile::MemcachedBackend: failure_limit must be at least 1");
    }
    master = memcached(options.data(), options.size());
    if (master == nullptr) {
      char error[512] = {};
      libmemcached_check_configuration(options.data(), options.size(), error, sizeof error);
      throw std::invalid_argument(fmt::format(
          "dogpile::MemcachedBackend: cannot parse options \"{}\": {}", options, error));
    }
    try {
      validate(master);
      // Ketama unless the caller chose a distribution.
      if (options.find("--DISTRIBUTION") == std::string::npos) {
        memcached_behavior_set(master, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
      }
      memcached_behavior_set(master, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, extra.failure_limit);
      memcached_behavior_set(master, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS,
                             extra.auto_eject ? 1 : 0);
      const auto [pool_min, pool_max] = pool_sizes(options);
      pool = memcached_pool_create(master, pool_min, pool_max);
      if (pool == nullptr) {
        throw std::invalid_argument(
            fmt::format("dogpile::MemcachedBackend: cannot create a pool of {} to {} connections",
                        pool_min, pool_max));
      }
    } catch (...) {
      memcached_free(master);
      throw;
    }
    const std::uint64_t poll_ms = memcached_behavior_get(master, MEMCACHED_BEHAVIOR_POLL_TIMEOUT);
    fetch_timeout =
        timespec{static_cast<time_t>(poll_ms / 1000), static_cast<long>(poll_ms % 1000) * 1000000L};
  }
  ~Impl() {
    memcached_pool_destroy(pool);  // returns the master, which stays ours
    memcached_free(master);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // A connection borrowed from the pool for one operation.
  class Connection {
   public:
    Connection(Impl& impl, std::string_view op, std::string_view key) : impl_(impl) {
      timespec wait = impl.fetch_timeout;
      memcached_return_t rc;
      mc_ = memcached_pool_fetch(impl.pool, &wait, &rc);
      if (mc_ == nullptr) fail(op, key, nullptr, rc);
    }
    ~Connection() { memcached_pool_release(impl_.pool, mc_); }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    memcached_st* get() const noexcept { return mc_; }

   private:
    Impl& impl_;
    memcached_st* mc_;
  };

  // `gets` of one key placed by `master`; nullopt if absent.
  struct Fetched {
    std::string value;
    std::uint64_t cas;
  };
  std::optional<Fetched> gets(memcached_st* mc, std::string_view op, std::string_view master,
                              std::string_view key) {
    const char* keys[] = {key.data()};
    const size_t lengths[] = {key.size()};
    memcached_return_t rc =
        memcached_mget_by_key(mc, master.data(), master.size(), keys, lengths, 1);
    if (rc != MEMCACHED_SUCCESS) fail(op, key, mc, rc);
    std::optional<Fetched> found;
    while (memcached_result_st* r = memcached_fetch_result(mc, nullptr, &rc)) {
      found = Fetched{std::string(memcached_result_value(r), memcached_result_length(r)),
                      memcached_result_cas(r)};
      memcached_result_free(r);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
      fail(op, key, mc, rc);
    }
    return found;
  }

  // Replaces the lock under `key` with the same token and expiration
  // `exptime` if it still holds `token`; -1 deletes it.
  bool cas_if_owned(std::string_view op, std::string_view master, std::string_view key,
                    std::string_view token, time_t exptime) {
    Connection conn(*this, op, key);
    auto found = gets(conn.get(), op, master, key);
    if (!found || found->value != token || found->cas == 0) return false;
    const memcached_return_t rc =
        memcached_cas_by_key(conn.get(), master.data(), master.size(), key.data(), key.size(),
                             token.data(), token.size(), exptime, 0, found->cas);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND || rc == MEMCACHED_NOTSTORED) {
      return false;  // taken or gone between the gets and the cas
    }
    fail(op, key, conn.get(), rc);
  }

  bool add_by_key(std::string_view master, std::string_view key, std::string_view data,
                  std::uint32_t flags, Ttl ttl) {
    Connection conn(*this, "add", key);
    const memcached_return_t rc =
        memcached_add_by_key(conn.get(), master.data(), master.size(), key.data(), key.size(),
                             data.data(), data.size(), memcached_exptime(ttl), flags);
    if (rc == MEMCACHED_SUCCESS) return true;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) return false;
    fail("add", key, conn.get(), rc);
  }

  std::string options;
  memcached_st* master = nullptr;
  memcached_pool_st* pool = nullptr;
  timespec fetch_timeout{1, 0};
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
  Impl::Connection conn(*impl_, "get_multi", keys.front());
  memcached_return_t rc =
      memcached_mget(conn.get(), key_ptrs.data(), key_lengths.data(), key_ptrs.size());
  if (rc != MEMCACHED_SUCCESS) fail("get_multi", keys.front(), conn.get(), rc);
  while (memcached_result_st* r = memcached_fetch_result(conn.get(), nullptr, &rc)) {
    std::string_view key(memcached_result_key_value(r), memcached_result_key_length(r));
    auto [first, last] = index.equal_range(key);
    for (auto it = first; it != last; ++it) {
      items[it->second] = Item{std::string(memcached_result_value(r), memcached_result_length(r)),
                               memcached_result_flags(r)};
    }
    memcached_result_free(r);
  }
  if (rc != MEMCACHED_END && rc != MEMCACHED_NOTFOUND && rc != MEMCACHED_SUCCESS) {
    fail("get_multi", keys.front(), conn.get(), rc);
  }
  return items;
}

std::unique_ptr<DistributedLock> MemcachedBackend::make_lock(std::string_view key, Ttl ttl) {
  return std::unique_ptr<DistributedLock>(
      new MemcachedLock(MemcachedLock::Mapped{}, impl_, std::string(key), ttl));
}

MemcachedLock::MemcachedLock(MemcachedBackend& backend, std::string_view key, Ttl ttl)
    : MemcachedLock(Mapped{}, backend.impl_, detail::map_key("", key), ttl) {}

MemcachedLock::MemcachedLock(Mapped, std::shared_ptr<MemcachedBackend::Impl> impl,
                             std::string value_key, Ttl ttl)
    : impl_(std::move(impl)),
      value_key_(std::move(value_key)),
      lock_key_(detail::lock_key_for(value_key_)),
      ttl_(ttl) {}

MemcachedLock::~MemcachedLock() { release_if_held(); }

bool MemcachedLock::try_acquire() {
  std::string token = detail::new_lock_token();
  if (!impl_->add_by_key(value_key_, lock_key_, token, 0, ttl_)) return false;
  token_ = std::move(token);
  return true;
}

bool MemcachedLock::release_acquired() {
  if (token_.empty()) return false;
  const std::string token = std::exchange(token_, {});
  return impl_->cas_if_owned("release lock", value_key_, lock_key_, token, time_t{-1});
}

bool MemcachedLock::extend() {
  if (token_.empty()) return false;
  return impl_->cas_if_owned("extend lock", value_key_, lock_key_, token_, memcached_exptime(ttl_));
}

}  // namespace dogpile
