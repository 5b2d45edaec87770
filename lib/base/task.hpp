// SPDX-License-Identifier: MIT
// A coroutine that returns a T (internal): lazily started, awaited by one
// caller, which it resumes when done (symmetric transfer: a chain of
// finished tasks does not grow the stack); an exception it throws reaches
// its awaiter. run_here() runs a task whose awaits all complete at once (a
// synchronous driver's) to its end on this thread.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace dogpile::detail {

template <class T = void>
class Task;

namespace task_parts {

struct PromiseBase {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  std::exception_ptr error;

  std::suspend_always initial_suspend() const noexcept { return {}; }
  struct Final {
    [[nodiscard]] bool await_ready() const noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> done) const noexcept {
      return done.promise().continuation;
    }
    void await_resume() const noexcept {}
  };
  Final final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { error = std::current_exception(); }
};

template <class T>
struct Promise : PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept;
  template <class U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  T take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace task_parts

template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = task_parts::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      if (handle_) handle_.destroy();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (handle_) handle_.destroy();
  }

  // Awaited: starts the task; the awaiter resumes when it is done.
  struct Awaiter {
    Handle handle;
    [[nodiscard]] bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) const noexcept {
      handle.promise().continuation = awaiting;
      return handle;
    }
    T await_resume() const { return handle.promise().take(); }
  };
  Awaiter operator co_await() && noexcept { return Awaiter{handle_}; }

  /// Runs the task to its end here. Every await in it must complete at
  /// once (std::logic_error if one suspended: the task then is destroyed
  /// where it stopped, which only a synchronous driver rules out).
  T run_here() && {
    handle_.resume();
    if (!handle_.done()) throw std::logic_error("a task run in place suspended");
    return handle_.promise().take();
  }

  /// Starts the task; `on_done` is resumed when it ends (the handle then
  /// gives its result through result()).
  void start(std::coroutine_handle<> on_done) {
    handle_.promise().continuation = on_done;
    handle_.resume();
  }
  [[nodiscard]] bool done() const noexcept { return handle_.done(); }
  T result() { return handle_.promise().take(); }

 private:
  friend promise_type;
  explicit Task(Handle handle) noexcept : handle_(handle) {}
  Handle handle_;
};

namespace task_parts {
template <class T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace task_parts

}  // namespace dogpile::detail
