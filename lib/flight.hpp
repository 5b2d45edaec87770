// In-process flights: the threads of one process that need the same key share
// one piece of work (internal).
//
// The first caller to join a key's flight leads it; later callers follow and
// block until the leader completes it with an item (the envelope it stored or
// found), an exception (its creator's), or abandons it (they then start over).
// A completed flight leaves the table before its followers are woken, so a
// caller that arrives afterwards starts a new one: it never receives the
// result, or the exception, of work it did not wait for.
#pragma once

#include <array>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "dogpile/backend.hpp"

namespace dogpile::detail {

class Flight {
 public:
  struct Result {
    std::shared_ptr<const Item> item;  // null with no error: abandoned
    std::exception_ptr error;
  };

  /// Blocks until the leader completes the flight.
  Result wait() {
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [&] { return done_; });
    return result_;
  }

  void complete(Result result) {
    {
      std::lock_guard lock(mutex_);
      result_ = std::move(result);
      done_ = true;
    }
    done_cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Result result_;
};

class FlightTable {
 public:
  class Lead;

  /// Joins the flight for `key`: leads a new one (the Lead is set) or follows
  /// the one in progress.
  std::pair<std::shared_ptr<Flight>, std::optional<Lead>> join(const std::string& key);

  /// Leads a new flight for `key`, or returns nullopt if one is in progress.
  std::optional<Lead> try_lead(const std::string& key);

  /// Flights in progress. For tests.
  [[nodiscard]] std::size_t size() const;

  /// Completes a flight when the leader is done; abandons it if the leader
  /// leaves without completing it (its followers then start over).
  class Lead {
   public:
    Lead(FlightTable& table, std::string key, std::shared_ptr<Flight> flight)
        : table_(&table), key_(std::move(key)), flight_(std::move(flight)) {}
    Lead(Lead&& other) noexcept
        : table_(std::exchange(other.table_, nullptr)),
          key_(std::move(other.key_)),
          flight_(std::move(other.flight_)) {}
    Lead& operator=(Lead&& other) noexcept {
      if (this != &other) {
        finish({});
        table_ = std::exchange(other.table_, nullptr);
        key_ = std::move(other.key_);
        flight_ = std::move(other.flight_);
      }
      return *this;
    }
    ~Lead() { finish({}); }

    void publish(std::shared_ptr<const Item> item) { finish({std::move(item), nullptr}); }
    void fail(std::exception_ptr error) { finish({nullptr, std::move(error)}); }

   private:
    void finish(Flight::Result result) noexcept;

    FlightTable* table_;  // null once finished
    std::string key_;
    std::shared_ptr<Flight> flight_;
  };

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights;
  };
  Shard& shard_for(std::string_view key) noexcept;
  std::array<Shard, 16> shards_;
};

}  // namespace dogpile::detail
