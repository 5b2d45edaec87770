// SPDX-License-Identifier: MIT
// Test helpers: an instrumented mutex, an in-memory store with creation
// times, and a bounded wait on observable state (never a sleep).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "dogpile/clock.hpp"
#include "dogpile/lock.hpp"

namespace dogpile::test {

/// Spins (yielding) until `done()` holds; false if `limit` passes first. The
/// limit only turns a would-be hang into a failure: the tests never rely on it.
template <class Pred>
bool eventually(Pred done, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

/// A creator held until let go: `pass` marks it entered and returns once
/// the test opens the gate (bounded, so a bug shows as a failure, not a hang).
struct Gate {
  std::atomic<bool> entered{false};
  std::atomic<bool> open{false};
  void pass() {
    entered = true;
    eventually([&] { return open.load(); }, std::chrono::seconds(60));
  }
  std::string pass(std::string value) {
    pass();
    return value;
  }
  bool wait_entered() {
    return eventually([&] { return entered.load(); }, std::chrono::seconds(60));
  }
};

/// A std::mutex that counts what is done to it and how many threads are
/// inside lock() (blocked, or about to be).
class CountingMutex {
 public:
  void lock() {
    entering_.fetch_add(1);
    m_.lock();
    entering_.fetch_sub(1);
    locks_.fetch_add(1);
  }
  bool try_lock() {
    if (m_.try_lock()) {
      locks_.fetch_add(1);
      return true;
    }
    failed_tries_.fetch_add(1);
    return false;
  }
  void unlock() { m_.unlock(); }

  int blocked() const { return entering_.load(); }
  int locks() const { return locks_.load(); }
  int failed_tries() const { return failed_tries_.load(); }

 private:
  std::mutex m_;
  std::atomic<int> entering_{0};
  std::atomic<int> locks_{0};
  std::atomic<int> failed_tries_{0};
};

/// A thread-safe key -> (value, created_at) map standing in for a cache.
class MemoryStore {
 public:
  using Entry = ValueAndCreated<std::string>;

  std::optional<Entry> get(std::string_view key) const {
    gets_.fetch_add(1);
    std::lock_guard lock(m_);
    auto it = items_.find(key);
    if (it == items_.end()) return std::nullopt;
    return it->second;
  }
  void put(std::string_view key, std::string value, TimePoint created_at) {
    std::lock_guard lock(m_);
    items_.insert_or_assign(std::string(key), Entry{std::move(value), created_at});
  }
  void erase(std::string_view key) {
    std::lock_guard lock(m_);
    if (auto it = items_.find(key); it != items_.end()) items_.erase(it);
  }
  int gets() const { return gets_.load(); }

 private:
  mutable std::mutex m_;
  std::map<std::string, Entry, std::less<>> items_;
  mutable std::atomic<int> gets_{0};
};

}  // namespace dogpile::test

#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace dogpile::test {

/// A fresh directory under the system temp directory, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "dogpile-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace dogpile::test
