// SPDX-License-Identifier: MIT
// dogpile/detail/function_ref.hpp — a non-owning reference to a callable.
//
// Lets the templated front end of CacheRegion hand typed callbacks to the
// compiled algorithm in lib/ without allocating. The referenced callable must
// outlive the FunctionRef (it is only ever a parameter).
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace dogpile::detail {

template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
           std::is_invocable_r_v<R, F&, Args...>) FunctionRef(F&& f)
  noexcept  // NOLINT(google-explicit-constructor): used as a parameter type
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, Args... args) -> R {
          return std::invoke(*static_cast<std::remove_reference_t<F>*>(object),
                             std::forward<Args>(args)...);
        }) {}

  /// A reference to `object`'s member function Method (no callable of its
  /// own to keep alive: `object` must outlive it).
  template <auto Method, class T>
  static FunctionRef to(T& object) noexcept {
    return FunctionRef(std::addressof(object), [](void* o, Args... args) -> R {
      return std::invoke(Method, *static_cast<T*>(o), std::forward<Args>(args)...);
    });
  }

  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  FunctionRef(void* object, R (*call)(void*, Args...)) noexcept : object_(object), call_(call) {}

  void* object_;
  R (*call_)(void*, Args...);
};

}  // namespace dogpile::detail
