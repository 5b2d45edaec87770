// SPDX-License-Identifier: MIT
// CacheRegion: the public face of the engine (lib/engine.cpp).
#include "dogpile/region.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/engine.hpp"
#include "format/keys.hpp"

namespace dogpile {
namespace {

void validate(const RegionOptions& o) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("dogpile::CacheRegion: " + what);
  };
  if (o.expiration && *o.expiration <= Duration::zero()) {
    fail("expiration must be positive (or no_expiration)");
  }
  if (o.stale_grace < Duration::zero()) fail("stale_grace must not be negative");
  if (o.lock_timeout < std::chrono::seconds(2)) {
    fail(
        fmt::format("lock_timeout is {}s; it must be at least 2s (memcached counts a lock's "
                    "time to live in whole seconds)",
                    o.lock_timeout.count()));
  }
  if (o.max_creation && *o.max_creation <= Duration::zero()) {
    fail("max_creation must be positive (or nullopt: never)");
  }
  if (o.wait.first_poll <= Duration::zero()) fail("wait.first_poll must be positive");
  if (o.wait.max_poll < o.wait.first_poll) fail("wait.max_poll must be at least wait.first_poll");
  if (o.wait.max_interval < o.wait.max_poll) {
    fail("wait.max_interval must be at least wait.max_poll");
  }
  if (!(o.wait.growth > 0.0)) fail("wait.growth must be positive");
  if (o.wait.growth_knee <= Duration::zero()) fail("wait.growth_knee must be positive");
  if (o.wait.polls_per_creation < 1) fail("wait.polls_per_creation must be at least 1");
  if (o.wait.max_wait && *o.wait.max_wait < Duration::zero()) {
    fail("wait.max_wait must not be negative");
  }
  if (o.deadline && *o.deadline <= Duration::zero()) {
    fail("deadline must be positive (or nullopt: none)");
  }
  if (o.clock_sync && *o.clock_sync <= Duration::zero()) {
    fail("clock_sync must be positive (or nullopt: trust the local clock)");
  }
  if (o.early_recompute_beta && !(*o.early_recompute_beta > 0.0)) {
    fail("early_recompute_beta must be positive (or nullopt: off)");
  }
  if (o.invalidation_check && *o.invalidation_check <= Duration::zero()) {
    fail("invalidation_check must be positive (or nullopt: never)");
  }
  if (o.executor && !o.background_refresh) {
    fail("an executor is set but background_refresh is off");
  }
  if (o.compression.level < 1 || o.compression.level > 19) {
    fail(fmt::format("compression.level is {}; zstd levels run from 1 to 19", o.compression.level));
  }
  if (o.compression.max_size == 0) fail("compression.max_size must be positive");
  detail::validate_key_prefix(o.key_prefix);
}

const char* reason_text(WaitTimeout::Reason reason) {
  switch (reason) {
    case WaitTimeout::Reason::deadline:
      return "the call's deadline passed";
    case WaitTimeout::Reason::cancelled:
      return "the call was cancelled (its stop token)";
    case WaitTimeout::Reason::max_wait:
      return "WaitPolicy::max_wait ran out";
  }
  return "gave up";
}

std::string printable(std::string_view key) {
  std::string out;
  for (char c : key.substr(0, 80)) {
    const auto b = static_cast<unsigned char>(c);
    out += (b >= 0x20 && b < 0x7f && b != '\\') ? std::string(1, c) : fmt::format("\\x{:02x}", b);
  }
  if (key.size() > 80) out += "...";
  return out;
}

}  // namespace

WaitTimeout::WaitTimeout(Reason reason, std::string_view key)
    : std::runtime_error(
          fmt::format("dogpile: no value for key \"{}\": another caller is creating it and {}",
                      printable(key), reason_text(reason))),
      reason_(reason) {}

SteadyTime Deadline::on(const Clock& clock) const noexcept {
  const SteadyTime now = clock.steady_now();
  Duration left = Duration::max();
  if (within_) left = *within_;
  if (at_) left = *at_ - clock.now();
  if (steady_) {
    left = std::chrono::duration_cast<Duration>(*steady_ - std::chrono::steady_clock::now());
  }
  if (left <= Duration::zero()) return now;
  if (left > std::chrono::duration_cast<Duration>(SteadyTime::max() - now))
    return SteadyTime::max();
  return now + std::chrono::duration_cast<SteadyTime::duration>(left);
}

CacheRegion::CacheRegion(std::shared_ptr<Backend> backend, RegionOptions options) {
  if (!backend) throw std::invalid_argument("dogpile::CacheRegion: the backend must not be null");
  validate(options);
  engine_ = std::make_unique<detail::Engine>(std::move(backend), std::move(options));
}

CacheRegion::~CacheRegion() = default;

Outcome CacheRegion::run(const Call& call) { return engine_->run(call); }

void CacheRegion::start_call(const detail::Call& call, detail::Loop& loop,
                             std::function<void(std::exception_ptr, Outcome, bool)> done) {
  engine_->start(call, loop, std::move(done));
}

bool CacheRegion::get_bytes(std::string_view key, Decode decode, TimePoint* created_at, bool* fresh,
                            const Expiration* expiration) {
  return engine_->get(key, decode, created_at, fresh, expiration);
}

bool CacheRegion::set_bytes(std::string_view key, Encode encode, const Expiration* expiration) {
  return engine_->set(key, encode, expiration);
}

bool CacheRegion::remove(std::string_view key) { return engine_->remove(key); }

void CacheRegion::get_multi_bytes(std::span<const std::string_view> keys, DecodeAt decode) {
  engine_->get_multi(keys, decode);
}

bool CacheRegion::set_multi_bytes(std::span<const std::string_view> keys, EncodeAt encode) {
  return engine_->set_multi(keys, encode);
}

bool CacheRegion::remove_multi_bytes(std::span<const std::string_view> keys) {
  return engine_->remove_multi(keys);
}

void CacheRegion::invalidate(Invalidation kind) { engine_->invalidate(kind); }

bool CacheRegion::invalidate(std::string_view key, Invalidation kind) {
  return engine_->invalidate(key, kind);
}

void detail::check_created_count(std::size_t got, std::size_t wanted) {
  if (got != wanted) {
    throw std::invalid_argument(fmt::format(
        "dogpile: get_or_create_multi's creator returned {} values for {} keys", got, wanted));
  }
}

RegionStats CacheRegion::stats() const noexcept { return engine_->stats(); }
RegionMetrics CacheRegion::metrics() const noexcept { return engine_->metrics(); }
std::size_t CacheRegion::in_flight() const { return engine_->in_flight(); }
Duration CacheRegion::clock_offset() const noexcept { return engine_->clock_offset(); }

void CacheRegion::set_error_handler(ErrorHandler handler) {
  engine_->set_error_handler(std::move(handler));
}

const RegionOptions& CacheRegion::options() const noexcept { return engine_->options(); }
Backend& CacheRegion::backend() const noexcept { return engine_->backend(); }

std::string CacheRegion::backend_key(std::string_view key) const {
  return detail::map_key(engine_->options().key_prefix, key);
}

}  // namespace dogpile
