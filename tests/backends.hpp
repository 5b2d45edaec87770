// SPDX-License-Identifier: MIT
// Backends for unit tests: the conformance fixture for MemoryBackend, and a
// FaultyBackend that fails on command (a stand-in for a server that is down).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/memory.hpp"

namespace dogpile::test {

struct MemoryFixture {
  static constexpr bool kVersions = true;
  static constexpr bool kServerLeases = false;
  ManualClock clock;
  std::shared_ptr<MemoryBackend> backend =
      std::make_shared<MemoryBackend>(MemoryBackend::Options{.clock = &clock});
  std::shared_ptr<Backend> other() { return backend; }  // one store, so one client suffices
  void advance(Duration d) { clock.advance(d); }
};

/// A backend as small as a user may write one: the required operations only
/// (read, write, erase, make_lock), over a MemoryBackend, without versions.
/// Everything else, the lease operations included, is the Backend's default
/// composition.
class MinimalBackend final : public Backend {
 public:
  explicit MinimalBackend(std::shared_ptr<MemoryBackend> inner) : inner_(std::move(inner)) {}
  void read(std::span<KeyRead> keys, const LeaseRequest&, const Request& request,
            const Visit* visit) override {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      keys[i].item = inner_->get(keys[i].key, request);
      keys[i].cas = 0;  // no versions
      if (visit != nullptr && keys[i].item) {
        (*visit)(i, keys[i].item->data, keys[i].item->flags);
        keys[i].item.reset();
      }
    }
  }
  void write(std::span<KeyWrite> items, const Request& request) override {
    inner_->write(items, request);
  }
  void erase(std::span<KeyErase> keys, const Request& request) override {
    inner_->erase(keys, request);
  }
  std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override {
    return inner_->make_lock(key, ttl);
  }

 private:
  std::shared_ptr<MemoryBackend> inner_;
};

struct MinimalFixture {
  static constexpr bool kVersions = false;
  static constexpr bool kServerLeases = false;
  ManualClock clock;
  std::shared_ptr<MemoryBackend> store =
      std::make_shared<MemoryBackend>(MemoryBackend::Options{.clock = &clock});
  std::shared_ptr<Backend> backend = std::make_shared<MinimalBackend>(store);
  std::shared_ptr<Backend> other() { return backend; }
  void advance(Duration d) { clock.advance(d); }
};

/// Forwards to a MemoryBackend, or throws BackendError for the operations
/// switched to fail (a stand-in for a server that is down). It implements the
/// required operations only, so the region reaches it through the Backend's
/// default lease operations.
class FaultyBackend final : public Backend {
 public:
  explicit FaultyBackend(std::shared_ptr<MemoryBackend> inner) : inner_(std::move(inner)) {}

  std::atomic<bool> fail_get{false};      // read (get, gets, get_multi)
  std::atomic<bool> fail_store{false};    // write (set, add, cas, set_multi)
  std::atomic<bool> fail_lock{false};     // taking a lock
  std::atomic<bool> fail_remove{false};   // erase (remove, remove_multi)
  std::atomic<bool> fail_release{false};  // releasing a lock (the request is lost)
  void fail_everything(bool on) {
    fail_get = fail_store = fail_lock = fail_remove = fail_release = on;
  }
  std::atomic<int> failures{0};
  /// Runs (once, then cleared) when a lock of this backend is tried: lets a
  /// test act as another process between a caller's read and its lock.
  std::function<void()> before_lock;

  void read(std::span<KeyRead> keys, const LeaseRequest& lease, const Request& request,
            const Visit* visit) override {
    check(fail_get, keys.size() == 1 ? "get" : "get_multi");
    inner_->read(keys, lease, request, visit);
  }
  void write(std::span<KeyWrite> items, const Request& request) override {
    const auto kind = items.size() == 1 ? items[0].fence.kind : Fence::Kind::none;
    check(fail_store, items.size() > 1               ? "set_multi"
                      : kind == Fence::Kind::absent  ? "add"
                      : kind == Fence::Kind::version ? "cas"
                                                     : "set");
    inner_->write(items, request);
  }
  void erase(std::span<KeyErase> keys, const Request& request) override {
    check(fail_remove, "remove");
    inner_->erase(keys, request);
  }
  std::unique_ptr<DistributedLock> make_lock(std::string_view key, Ttl ttl) override {
    return std::make_unique<Lock>(*this, inner_->make_lock(key, ttl));
  }

 private:
  class Lock final : public DistributedLock {
   public:
    Lock(FaultyBackend& owner, std::unique_ptr<DistributedLock> inner)
        : owner_(owner), inner_(std::move(inner)) {}
    ~Lock() override {
      if (owner_.fail_release && held()) {
        // A release lost on the network: the lock stays in the store until it
        // expires (the inner lock would release it when destroyed).
        std::lock_guard lock(owner_.graveyard_mutex_);
        owner_.graveyard_.push_back(std::move(inner_));
      }
      release_if_held();
    }
    bool extend(const Request& request) override { return inner_->extend(request); }
    Ttl ttl() const noexcept override { return inner_->ttl(); }

   protected:
    bool try_acquire(const Request& request) override {
      if (auto hook = std::exchange(owner_.before_lock, nullptr)) hook();
      owner_.check(owner_.fail_lock, "lock");
      return inner_->try_lock(request);
    }
    bool release_acquired(const Request& request) override {
      if (owner_.fail_release || !inner_) {
        owner_.failures.fetch_add(1);
        throw BackendError("injected failure: release");
      }
      return inner_->release(request);
    }

   private:
    FaultyBackend& owner_;
    std::unique_ptr<DistributedLock> inner_;
  };

  void check(const std::atomic<bool>& flag, const char* op) {
    if (flag) {
      failures.fetch_add(1);
      throw BackendError(std::string("injected failure: ") + op);
    }
  }
  std::shared_ptr<MemoryBackend> inner_;
  std::mutex graveyard_mutex_;
  std::vector<std::unique_ptr<DistributedLock>> graveyard_;
};

}  // namespace dogpile::test
