// SPDX-License-Identifier: MIT
// Backends that are only a server clock, or nothing at all (tests of the
// fleet clock and of the chores that keep it measured).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/errors.hpp"

namespace dogpile::test {

// A backend that stores nothing and has no server clock.
class NoStore : public dogpile::Backend {
 public:
  void read(std::span<dogpile::KeyRead>, const dogpile::LeaseRequest&, const dogpile::Request&,
            const Visit*) override {}
  void write(std::span<dogpile::KeyWrite>, const dogpile::Request&) override {}
  void erase(std::span<dogpile::KeyErase>, const dogpile::Request&) override {}
  std::unique_ptr<dogpile::DistributedLock> make_lock(std::string_view, dogpile::Ttl) override {
    return nullptr;
  }
};

// A server whose clock is `clock`, read in whole units of `resolution`
// (memcached's `stats` `time`: whole seconds).
class ClockServer final : public NoStore {
 public:
  ClockServer(const dogpile::ManualClock& clock, dogpile::Duration resolution)
      : clock_(clock), resolution_(resolution) {}
  std::atomic<bool> fail{false};
  std::atomic<int> samples{0};

  std::optional<dogpile::ServerTime> server_time(std::string_view,
                                                 const dogpile::Request&) override {
    samples.fetch_add(1);
    if (fail) throw dogpile::BackendError("server away");
    dogpile::TimePoint t = clock_.now();
    if (resolution_ > dogpile::Duration::zero()) {
      t = dogpile::TimePoint(t.time_since_epoch() - t.time_since_epoch() % resolution_);
    }
    return dogpile::ServerTime{t, resolution_};
  }

 private:
  const dogpile::ManualClock& clock_;
  dogpile::Duration resolution_;
};

}  // namespace dogpile::test
