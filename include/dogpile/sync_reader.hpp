// SPDX-License-Identifier: MIT
// dogpile/sync_reader.hpp — a Dogpile whose creator can lock readers out.
//
// `SyncReaderDogpile::acquire(creator)` returns a guard that holds a shared
// (reader) lock for its lifetime. Inside the creator, `acquire_write_lock()`
// waits until every current reader has released its guard and keeps new
// readers out until the write guard is released: the creator prepares the new
// resource while readers keep using the old one, then swaps it in alone.
// In-process only.
//
//   dogpile::SyncReaderDogpile lock(std::chrono::hours(1));
//   auto reading = lock.acquire([](dogpile::SyncReaderDogpile& self) {
//     auto file = create_expensive_datafile();
//     auto writing = self.acquire_write_lock();
//     replace_old_datafile_with(file);
//   });
//   read_datafile();
//
// A thread holding a ReadGuard must not call acquire() or acquire_write_lock()
// on the same object again: the write lock waits for that thread's own guard.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <utility>

#include "dogpile/lock.hpp"

namespace dogpile {

namespace detail {

// A reader/writer mutex that prefers writers: once a writer waits, new
// readers queue behind it, so a steady stream of readers cannot starve it.
class ReadWriteMutex {
 public:
  void lock_shared();
  void unlock_shared() noexcept;
  void lock();
  void unlock() noexcept;

  [[nodiscard]] std::size_t readers() const;
  [[nodiscard]] std::size_t waiting_readers() const;
  [[nodiscard]] std::size_t waiting_writers() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable readers_cv_;
  std::condition_variable writers_cv_;
  std::size_t readers_ = 0;
  std::size_t waiting_readers_ = 0;
  std::size_t waiting_writers_ = 0;
  bool writer_ = false;
};

}  // namespace detail

class SyncReaderDogpile {
 public:
  /// Holds the reader lock until destroyed or released. Move-only.
  class [[nodiscard]] ReadGuard {
   public:
    ReadGuard(ReadGuard&& other) noexcept
        : rw_(std::exchange(other.rw_, nullptr)), outcome_(other.outcome_) {}
    ReadGuard& operator=(ReadGuard&& other) noexcept {
      if (this != &other) {
        release();
        rw_ = std::exchange(other.rw_, nullptr);
        outcome_ = other.outcome_;
      }
      return *this;
    }
    ~ReadGuard() { release(); }
    /// How the acquire() call that made this guard was served.
    [[nodiscard]] Outcome outcome() const noexcept { return outcome_; }
    [[nodiscard]] bool owns_lock() const noexcept { return rw_ != nullptr; }
    void release() noexcept {
      if (rw_ != nullptr) std::exchange(rw_, nullptr)->unlock_shared();
    }

   private:
    friend class SyncReaderDogpile;
    ReadGuard(detail::ReadWriteMutex* rw, Outcome outcome) noexcept : rw_(rw), outcome_(outcome) {}
    detail::ReadWriteMutex* rw_;
    Outcome outcome_;
  };

  /// Holds the writer lock until destroyed or released. Move-only.
  class [[nodiscard]] WriteGuard {
   public:
    WriteGuard(WriteGuard&& other) noexcept : rw_(std::exchange(other.rw_, nullptr)) {}
    WriteGuard& operator=(WriteGuard&& other) noexcept {
      if (this != &other) {
        release();
        rw_ = std::exchange(other.rw_, nullptr);
      }
      return *this;
    }
    ~WriteGuard() { release(); }
    [[nodiscard]] bool owns_lock() const noexcept { return rw_ != nullptr; }
    void release() noexcept {
      if (rw_ != nullptr) std::exchange(rw_, nullptr)->unlock();
    }

   private:
    friend class SyncReaderDogpile;
    explicit WriteGuard(detail::ReadWriteMutex* rw) noexcept : rw_(rw) {}
    detail::ReadWriteMutex* rw_;
  };

  explicit SyncReaderDogpile(Expiration expiration = no_expiration, DogpileOptions options = {})
      : dogpile_(expiration, options) {}

  SyncReaderDogpile(const SyncReaderDogpile&) = delete;
  SyncReaderDogpile& operator=(const SyncReaderDogpile&) = delete;

  /// Runs the dogpile algorithm of Dogpile::acquire(creator) — `creator` is
  /// called as creator(*this) or creator() —, then takes the reader lock and
  /// returns it in a guard. Blocks while no value exists, and while a writer
  /// holds or waits for the write lock. Throws what `creator` throws (no lock
  /// is then held). Thread-safe.
  template <class Creator>
  requires std::invocable<Creator&, SyncReaderDogpile&> || std::invocable<Creator&> ReadGuard
  acquire(Creator&& creator) {
    Acquired acquired = dogpile_.acquire([&] {
      if constexpr (std::invocable<Creator&, SyncReaderDogpile&>) {
        std::invoke(creator, *this);
      } else {
        std::invoke(creator);
      }
    });
    rw_.lock_shared();
    return ReadGuard(&rw_, acquired.outcome());
  }

  /// Blocks until no reader holds a ReadGuard, then keeps new readers out until
  /// the returned guard is released. Meant for use inside the creator.
  /// Thread-safe; throws std::system_error only if the platform mutex fails.
  WriteGuard acquire_write_lock() {
    rw_.lock();
    return WriteGuard(&rw_);
  }

  [[nodiscard]] std::optional<TimePoint> created_at() const noexcept {
    return dogpile_.created_at();
  }
  [[nodiscard]] bool is_expired() const noexcept { return dogpile_.is_expired(); }

  /// Lock occupancy, for monitoring and tests. Thread-safe.
  [[nodiscard]] std::size_t readers() const { return rw_.readers(); }
  [[nodiscard]] std::size_t waiting_readers() const { return rw_.waiting_readers(); }
  [[nodiscard]] std::size_t waiting_writers() const { return rw_.waiting_writers(); }

 private:
  Dogpile<std::mutex> dogpile_;
  detail::ReadWriteMutex rw_;
};

}  // namespace dogpile
