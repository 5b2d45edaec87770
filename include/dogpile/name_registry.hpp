// SPDX-License-Identifier: MIT
// dogpile/name_registry.hpp — one shared object per key, only while it is in use.
//
// `NameRegistry<T, Args...>` hands out `std::shared_ptr<T>` by key. All
// concurrent users of a key share one object, built by the registry's factory
// on first use; the entry is removed when the last user releases it, so the
// registry holds only the keys in use right now, however many keys pass
// through it.
//
//   using Lock = dogpile::Dogpile<>;
//   dogpile::NameRegistry<Lock, dogpile::Duration> registry(
//       [](std::string_view, dogpile::Duration expiration) { return Lock(expiration); });
//   std::shared_ptr<Lock> lock = registry.get("user:42", std::chrono::minutes(5));
//
// The factory returns T by value (non-movable types such as Dogpile are built
// in place). Without a factory, objects are built as T(args...).
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace dogpile {

template <class T, class... Args>
class NameRegistry {
 public:
  /// Builds the object for a key: factory(key, args...) -> T.
  using Factory = std::function<T(std::string_view key, Args... args)>;

  /// Objects are built as T(args...); the key is not passed.
  NameRegistry() requires std::constructible_from<T, Args...>
      : NameRegistry([](std::string_view, Args... args) { return T(std::move(args)...); }) {}

  /// Throws std::invalid_argument if `factory` is empty.
  explicit NameRegistry(Factory factory) : state_(std::make_shared<State>(std::move(factory))) {
    if (!state_->factory) {
      throw std::invalid_argument("dogpile::NameRegistry: the factory must not be empty");
    }
  }

  /// Returns the object for `key`, building it with the factory if no one holds
  /// it now. Thread-safe. Blocks only briefly (a per-shard mutex), and while the
  /// factory runs for a key of the same shard. Throws what the factory throws,
  /// in which case nothing is registered. The factory must not call back into
  /// this registry.
  [[nodiscard]] std::shared_ptr<T> get(std::string_view key, Args... args) {
    Shard& shard = state_->shard_for(key);
    std::lock_guard lock(shard.mutex);
    auto it = shard.slots.find(key);
    if (it != shard.slots.end()) {
      if (auto alive = it->second.weak.lock()) return alive;
      // The last user released it and its deleter has not run yet: replace it.
      // The map key views the old node's string, so the entry is re-inserted.
      shard.slots.erase(it);
    }
    auto* node = new Node{std::string(key), state_->factory(key, std::move(args)...)};
    // If the control block cannot be allocated, the deleter runs unarmed and
    // only frees the node (the shard mutex is held here).
    std::shared_ptr<T> object(&node->value, Deleter{state_, node});
    std::get_deleter<Deleter>(object)->armed = true;
    shard.slots.emplace(std::string_view(node->key), Slot{node, object});
    return object;
  }

  /// Number of keys currently held by some user. Thread-safe.
  [[nodiscard]] std::size_t size() const {
    std::size_t n = 0;
    for (auto& shard : state_->shards) {
      std::lock_guard lock(shard.mutex);
      n += shard.slots.size();
    }
    return n;
  }

 private:
  struct Node {
    std::string key;
    T value;
  };
  struct Slot {
    const Node* node;
    std::weak_ptr<T> weak;
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string_view, Slot, Hash, std::equal_to<>> slots;
  };
  // Shared by the registry and every live object's deleter, so objects may
  // outlive the registry.
  struct State {
    explicit State(Factory f) : factory(std::move(f)) {}
    Shard& shard_for(std::string_view key) {
      // Fibonacci hashing: the top 4 bits of the mixed hash pick one of 16 shards
      // (the map's buckets use the low bits).
      const auto mixed = static_cast<std::uint64_t>(Hash{}(key)) * 0x9E3779B97F4A7C15ull;
      return shards[mixed >> 60];
    }
    Factory factory;
    std::array<Shard, 16> shards;
  };
  struct Deleter {
    std::shared_ptr<State> state;
    Node* node;
    bool armed = false;
    void operator()(T*) noexcept {
      if (armed) {
        Shard& shard = state->shard_for(node->key);
        std::lock_guard lock(shard.mutex);
        auto it = shard.slots.find(std::string_view(node->key));
        if (it != shard.slots.end() && it->second.node == node) shard.slots.erase(it);
      }
      delete node;  // outside the shard mutex: T's destructor may be slow
    }
  };

  std::shared_ptr<State> state_;
};

}  // namespace dogpile
