// SPDX-License-Identifier: MIT
// dogpile/lock.hpp — the dogpile lock: one caller regenerates, the rest carry on.
//
// A `Dogpile` guards a value-creation function. While no value exists, callers
// block until one has been created (by exactly one of them). Once a value
// exists and has expired, exactly one caller runs the creator while all the
// others return at once with the previous ("stale") value.
//
// Three forms, as in the original design:
//
//   // 1. Rudimentary: the Dogpile tracks the creation time itself.
//   dogpile::Dogpile<> lock(std::chrono::hours(1));
//   lock.acquire([&] { resource = build_resource(); });
//   use(resource);
//
//   // 2. Value function: the value lives in a cache; `value_fn` returns it or
//   //    throws dogpile::NeedRegeneration (or returns std::nullopt).
//   dogpile::Dogpile<> cached_lock(std::chrono::hours(1), {.init = true});
//   std::string v = cached_lock.acquire(create_and_store, read_from_cache);
//
//   // 3. Value and creation time both come from the cache (one Dogpile per key).
//   dogpile::Dogpile<> per_key(std::chrono::hours(1));
//   std::string w = per_key.acquire_with_created(
//       [&] { return cache.put_with_created(key, make()); },  // ValueAndCreated<std::string>
//       [&] { return cache.get_with_created(key); });         // std::optional of it
//
// Types: NeedRegeneration, Lockable, ValueAndCreated,
// DogpileOptions, Acquired, Dogpile.
//
// The algorithm (every form):
//   fresh value          -> return it; the mutex is not touched.
//   expired value exists -> try_lock(); on failure return the stale value at once;
//                           on success re-read, create if still expired, unlock.
//   no usable value      -> lock() (blocks), re-read (another caller may have
//                           created it meanwhile), create only if still needed, unlock.
// Creator exceptions propagate to the caller; the mutex is always released.
#pragma once

#include <atomic>
#include <concepts>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "dogpile/clock.hpp"
#include "dogpile/outcome.hpp"

namespace dogpile {

/// Thrown by a value function when no value is available, so the creator must run.
class NeedRegeneration : public std::exception {
 public:
  [[nodiscard]] const char* what() const noexcept override {
    return "dogpile: no value available, regeneration needed";
  }
};

/// What a Dogpile can lock: std::mutex, dogpile::FileLock, dogpile::MemcachedLock,
/// or any user type with these three members. `unlock()` must not throw.
template <class M>
concept Lockable = requires(M& m) {
  m.lock();
  { m.try_lock() } -> std::convertible_to<bool>;
  m.unlock();
};

/// A value with the time it was created, for `acquire_with_created`.
/// `std::pair<T, TimePoint>` and `std::tuple<T, TimePoint>` are accepted as well.
template <class T>
struct ValueAndCreated {
  T value;
  TimePoint created_at;
};

struct DogpileOptions {
  /// The seed's `init=True`: treat the value as created now, so the first access
  /// does not force a creation (a value function decides instead).
  bool init = false;
  /// Source of "now"; nullptr means dogpile::system_clock(). Must outlive the Dogpile.
  const Clock* clock = nullptr;
};

/// Returned by `Dogpile::acquire(creator)`: the seed's `with` block. The Dogpile
/// holds nothing for its duration; it reports how the call was served.
class Acquired {
 public:
  constexpr explicit Acquired(Outcome outcome) noexcept : outcome_(outcome) {}
  [[nodiscard]] constexpr Outcome outcome() const noexcept { return outcome_; }
  /// True if this caller ran the creator.
  [[nodiscard]] constexpr bool created() const noexcept { return outcome_ == Outcome::created; }

 private:
  Outcome outcome_;
};

namespace detail {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// What acquire_with_created accepts from its callables: a value and its
// creation time, as ValueAndCreated<T> (or any struct with `value` and
// `created_at`), std::pair<T, TimePoint> or std::tuple<T, TimePoint>.
template <class R>
concept tuple_of_value_and_created = requires {
  requires std::tuple_size<R>::value == 2;
  requires std::convertible_to<std::tuple_element_t<1, R>, TimePoint>;
};
template <class R>
concept value_and_created_like = tuple_of_value_and_created<R> || requires(R& r) {
  r.value;
  { r.created_at } -> std::convertible_to<TimePoint>;
};

// Pointer to the first element of a two-element value (pair, tuple, or an
// aggregate such as ValueAndCreated); used only to name its type.
template <class R>
auto first_element_ptr(R& r) {
  auto& [value, created_at] = r;
  return &value;
}

template <class R>
using value_type_of_t =
    std::remove_cvref_t<std::remove_pointer_t<decltype(first_element_ptr(std::declval<R&>()))>>;

template <class T, class R>
ValueAndCreated<T> split_value_and_created(R&& r) {
  auto&& [value, created_at] = std::forward<R>(r);
  return ValueAndCreated<T>{T(std::move(value)), TimePoint(created_at)};
}

// Calls a value function; "no value" (NeedRegeneration or std::nullopt) becomes nullopt.
// A function returning std::optional<R> signals absence with nullopt; one returning R
// throws NeedRegeneration.
template <class R, class Fn>
std::optional<R> read_value(Fn& fn) {
  using Result = std::remove_cvref_t<std::invoke_result_t<Fn&>>;
  if constexpr (std::same_as<Result, std::optional<R>>) {
    return std::invoke(fn);
  } else {
    static_assert(std::convertible_to<std::invoke_result_t<Fn&>, R>,
                  "dogpile: the value function must return the creator's value type, or "
                  "std::optional of it");
    try {
      return std::optional<R>(std::invoke(fn));
    } catch (const NeedRegeneration&) {
      return std::nullopt;
    }
  }
}

template <class Mutex>
class UnlockOnExit {
 public:
  explicit UnlockOnExit(Mutex& m) noexcept : m_(m) {}
  UnlockOnExit(const UnlockOnExit&) = delete;
  UnlockOnExit& operator=(const UnlockOnExit&) = delete;
  ~UnlockOnExit() { m_.unlock(); }

 private:
  Mutex& m_;
};

}  // namespace detail

/// The dogpile lock. Thread-safe: every member may be called concurrently.
/// Not copyable or movable (it owns its mutex).
template <Lockable Mutex = std::mutex>
class Dogpile {
 public:
  /// `mutex_args` construct the Mutex, e.g. `Dogpile<FileLock>(1h, {}, key)`.
  /// Throws whatever the Mutex constructor throws.
  template <class... MutexArgs>
  requires std::constructible_from<Mutex, MutexArgs...>
  explicit Dogpile(Expiration expiration = no_expiration, DogpileOptions options = {},
                   MutexArgs&&... mutex_args)
      : expiration_(expiration),
        clock_(options.clock != nullptr ? options.clock : &system_clock()),
        mutex_(std::forward<MutexArgs>(mutex_args)...),
        created_at_(options.init ? clock_->now().time_since_epoch().count() : kNoValue) {}

  Dogpile(const Dogpile&) = delete;
  Dogpile& operator=(const Dogpile&) = delete;

  /// Form 1. Runs `creator()` if there is no value yet (blocking other callers
  /// until it is done) or if the value has expired (one caller runs it, the
  /// others return at once). The Dogpile records the creation time itself.
  /// Blocks only while no value exists. Throws what `creator` throws.
  template <std::invocable Creator>
  Acquired acquire(Creator&& creator) {
    using Unit = std::monostate;
    auto read = [this]() -> std::optional<ValueAndCreated<Unit>> {
      auto stamp = recorded_created_at();
      if (!stamp) return std::nullopt;
      return ValueAndCreated<Unit>{Unit{}, *stamp};
    };
    auto create = [&] {
      std::invoke(creator);
      return ValueAndCreated<Unit>{Unit{}, record_creation()};
    };
    Outcome outcome{};
    run<Unit>(read, create, &outcome);
    return Acquired(outcome);
  }

  /// Form 2. `creator()` makes and stores the value and returns it; `value_fn()`
  /// returns the stored value, or signals that there is none (throws
  /// NeedRegeneration, or returns std::nullopt if it returns std::optional<T>).
  /// Expiry is judged from the creation time this Dogpile recorded.
  /// `value_fn` is called once per access on the fresh path, and never right
  /// after this caller created the value. `outcome`, if given, receives how
  /// the call was served. Throws what `creator` or `value_fn` throw.
  template <std::invocable Creator, std::invocable ValueFn>
  requires(!std::is_void_v<std::invoke_result_t<Creator&>>)
      std::remove_cvref_t<std::invoke_result_t<Creator&>> acquire(Creator&& creator,
                                                                  ValueFn&& value_fn,
                                                                  Outcome* outcome = nullptr) {
    using T = std::remove_cvref_t<std::invoke_result_t<Creator&>>;
    auto read = [&]() -> std::optional<ValueAndCreated<T>> {
      // The stamp is read before the value: a creation racing with this read
      // can only make a new value look stale, never an old one look fresh.
      auto stamp = recorded_created_at();
      if (!stamp) return std::nullopt;
      auto value = detail::read_value<T>(value_fn);
      if (!value) return std::nullopt;
      return ValueAndCreated<T>{std::move(*value), *stamp};
    };
    auto create = [&] {
      T value = std::invoke(creator);
      return ValueAndCreated<T>{std::move(value), record_creation()};
    };
    return run<T>(read, create, outcome);
  }

  /// Form 3. `creator()` and `value_and_created_fn()` both return the value
  /// with its creation time (ValueAndCreated<T>, std::pair or std::tuple);
  /// `value_and_created_fn` may also return std::optional of that, or throw
  /// NeedRegeneration, when there is no value. Expiry is judged from the
  /// returned creation time. Throws what the callables throw.
  template <std::invocable Creator, std::invocable ValueAndCreatedFn>
  requires detail::value_and_created_like<std::remove_cvref_t<std::invoke_result_t<Creator&>>>
  auto acquire_with_created(Creator&& creator, ValueAndCreatedFn&& value_and_created_fn,
                            Outcome* outcome = nullptr)
      -> detail::value_type_of_t<std::remove_cvref_t<std::invoke_result_t<Creator&>>> {
    using R = std::remove_cvref_t<std::invoke_result_t<Creator&>>;
    using T = detail::value_type_of_t<R>;
    auto read = [&]() -> std::optional<ValueAndCreated<T>> {
      auto result = detail::read_value<R>(value_and_created_fn);
      if (!result) return std::nullopt;
      return detail::split_value_and_created<T>(std::move(*result));
    };
    auto create = [&] {
      auto made = detail::split_value_and_created<T>(std::invoke(creator));
      record_creation(made.created_at);
      return made;
    };
    return run<T>(read, create, outcome);
  }

  /// When the value was last created through this Dogpile (or when it was
  /// constructed with `init`); nullopt if never. Never blocks.
  [[nodiscard]] std::optional<TimePoint> created_at() const noexcept {
    return recorded_created_at();
  }

  /// True if a creation has been recorded.
  [[nodiscard]] bool has_value() const noexcept { return recorded_created_at().has_value(); }

  /// True if no creation is recorded, or the recorded one is older than the
  /// expiration. Never blocks.
  [[nodiscard]] bool is_expired() const noexcept {
    auto stamp = recorded_created_at();
    return !stamp || expired(*stamp, clock_->now());
  }

  [[nodiscard]] const Expiration& expiration() const noexcept { return expiration_; }
  [[nodiscard]] const Clock& clock() const noexcept { return *clock_; }
  /// The underlying mutex (for inspection; locking it by hand blocks creators).
  [[nodiscard]] Mutex& mutex() noexcept { return mutex_; }

 private:
  static constexpr Duration::rep kNoValue = std::numeric_limits<Duration::rep>::min();

  [[nodiscard]] bool expired(TimePoint created_at, TimePoint now) const noexcept {
    return expiration_.has_value() && now - created_at > *expiration_;
  }

  [[nodiscard]] std::optional<TimePoint> recorded_created_at() const noexcept {
    const auto ticks = created_at_.load(std::memory_order_acquire);
    if (ticks == kNoValue) return std::nullopt;
    return TimePoint(Duration(ticks));
  }

  TimePoint record_creation(TimePoint at) noexcept {
    created_at_.store(at.time_since_epoch().count(), std::memory_order_release);
    return at;
  }
  TimePoint record_creation() noexcept { return record_creation(clock_->now()); }

  // The algorithm. `read()` returns the current value and its creation time,
  // or nullopt when there is none; `create()` makes a new one.
  template <class T, class Read, class Create>
  T run(Read& read, Create& create, Outcome* outcome) {
    auto report = [outcome](Outcome o) {
      if (outcome != nullptr) *outcome = o;
    };
    std::optional<ValueAndCreated<T>> current = read();
    if (current && !expired(current->created_at, clock_->now())) {
      report(Outcome::fresh);
      return std::move(current->value);
    }
    if (current) {
      if (!mutex_.try_lock()) {
        report(Outcome::stale);
        return std::move(current->value);
      }
    } else {
      mutex_.lock();
    }
    detail::UnlockOnExit<Mutex> unlock(mutex_);
    if (auto again = read(); again && !expired(again->created_at, clock_->now())) {
      report(current ? Outcome::fresh : Outcome::waited);
      return std::move(again->value);
    }
    auto made = create();
    report(Outcome::created);
    return std::move(made.value);
  }

  const Expiration expiration_;
  const Clock* const clock_;
  Mutex mutex_;
  std::atomic<Duration::rep> created_at_;
};

}  // namespace dogpile
