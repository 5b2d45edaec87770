// SPDX-License-Identifier: MIT
// In-process flights: the threads of one process that need the same key share
// one piece of work (internal).
//
// The first caller to join a key's flight leads it; later callers follow and
// block until the leader completes it with an item (the envelope it stored or
// found), an exception (its creator's), or abandons it (they then start over)
// — or until their own deadline passes. A completed flight leaves the table
// before its followers are woken, so a caller that arrives afterwards starts
// a new one: it never receives the result, or the exception, of work it did
// not wait for. A flight can also be detached from outside (its creator was
// declared hung): its followers start over, and the leader's late result
// goes nowhere.
#pragma once

#include <array>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dogpile/backend.hpp"
#include "dogpile/clock.hpp"
#include "dogpile/detail/loop.hpp"

namespace dogpile::detail {

class Flight {
 public:
  explicit Flight(std::string key) : key_(std::move(key)) {}
  [[nodiscard]] const std::string& key() const noexcept { return key_; }

  struct Result {
    std::shared_ptr<const Item> item;  // null with no error: abandoned
    std::exception_ptr error;
  };

  /// Blocks until the flight is completed (its result), or until `deadline`
  /// passes on `clock` or `stop` is requested (nullopt).
  std::optional<Result> wait(const Clock& clock, SteadyTime deadline, std::stop_token stop);

  /// A caller that follows the flight on an event loop, without a thread.
  /// Its own deadline or stop may end its wait first (its side of that race
  /// is its own): a waiter is claimed, then run, or neither.
  class Waiter {
   public:
    virtual ~Waiter() = default;
    /// The flight's result, if the waiter still waits (true); false if its
    /// wait ended already: then nothing of it is touched but its release.
    virtual bool claim(const Result& result) = 0;
    /// What follows, on its loop in a turn of its own; once, after a claim.
    virtual void run() = 0;
    /// Posts `fn` to its loop; only between a claim and its run (its loop
    /// lives until then).
    virtual void post(std::function<void()> fn) = 0;
  };
  /// Wakes `waiter` when the flight completes (at once if it has: claimed,
  /// its run posted). Waiters alike (`runs_on`: Loop::runs_on) are woken in
  /// one post, in the order they came.
  void on_complete(std::shared_ptr<Waiter> waiter, const void* runs_on);
  struct Waiting {
    std::shared_ptr<Waiter> waiter;
    const void* runs_on;
  };

  /// Completes the flight and wakes its followers; false (and nothing
  /// changes) if it was completed already.
  bool complete(Result result);

 private:
  std::mutex mutex_;
  std::condition_variable_any done_cv_;
  bool done_ = false;
  Result result_;
  std::vector<Waiting> then_;
  const std::string key_;  // its key in the table
};

class FlightTable {
 public:
  class Lead;

  /// Joins the flight for `key`: leads a new one (the Lead is set) or follows
  /// the one in progress.
  std::pair<std::shared_ptr<Flight>, std::optional<Lead>> join(const std::string& key);

  /// Leads a new flight for `key`, or returns nullopt if one is in progress.
  std::optional<Lead> try_lead(const std::string& key);

  /// Removes `flight` from the table (if it is still there) and abandons it:
  /// its followers start over. The leader's later result is dropped.
  void detach(const std::string& key, const std::shared_ptr<Flight>& flight);

  /// Flights in progress.
  [[nodiscard]] std::size_t size() const;

  /// In a forked child: forgets every flight (their leaders and followers
  /// are threads of the parent). Single-threaded use only.
  void reset_after_fork() noexcept;

  /// Completes a flight when the leader is done; abandons it if the leader
  /// leaves without completing it (its followers then start over).
  class Lead {
   public:
    Lead(FlightTable& table, std::shared_ptr<Flight> flight)
        : table_(&table), flight_(std::move(flight)) {}
    Lead(Lead&& other) noexcept
        : table_(std::exchange(other.table_, nullptr)), flight_(std::move(other.flight_)) {}
    Lead& operator=(Lead&& other) noexcept {
      if (this != &other) {
        finish({});
        table_ = std::exchange(other.table_, nullptr);
        flight_ = std::move(other.flight_);
      }
      return *this;
    }
    ~Lead() { finish({}); }

    void publish(std::shared_ptr<const Item> item) { finish({std::move(item), nullptr}); }
    void fail(std::exception_ptr error) { finish({nullptr, std::move(error)}); }
    /// Abandons the flight now: its followers start over.
    void abandon() { finish({}); }

    [[nodiscard]] const std::shared_ptr<Flight>& flight() const noexcept { return flight_; }

   private:
    void finish(Flight::Result result) noexcept;

    FlightTable* table_;  // null once finished
    std::shared_ptr<Flight> flight_;
  };

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights;
  };
  Shard& shard_for(std::string_view key) noexcept;
  void erase(const std::string& key, const std::shared_ptr<Flight>& flight) noexcept;
  std::array<Shard, 16> shards_;
};

}  // namespace dogpile::detail
