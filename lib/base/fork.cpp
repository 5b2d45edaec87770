// SPDX-License-Identifier: MIT
#include "base/fork.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <new>
#include <vector>

namespace dogpile::detail {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<ForkAware*> objects;
  std::atomic<std::uint64_t> generation{0};

  Registry() { ::pthread_atfork(&prepare, &parent, &child); }

  // Held across fork(), so that the child sees a whole registry.
  static void prepare() { instance().mutex.lock(); }
  static void parent() { instance().mutex.unlock(); }
  static void child() {
    Registry& r = instance();
    r.generation.fetch_add(1, std::memory_order_relaxed);
    for (ForkAware* object : r.objects) object->after_fork_in_child();
    // The forking thread locked it in prepare(); it is the child's only thread.
    new (&r.mutex) std::mutex;
  }

  static Registry& instance() {
    static Registry* const registry = new Registry;  // never destroyed: fork may outlive statics
    return *registry;
  }
};

}  // namespace

ForkRegistration::ForkRegistration(ForkAware& object) : object_(&object) {
  Registry& r = Registry::instance();
  std::lock_guard lock(r.mutex);
  r.objects.push_back(object_);
}

void ForkRegistration::reset() noexcept {
  if (object_ == nullptr) return;
  Registry& r = Registry::instance();
  std::lock_guard lock(r.mutex);
  r.objects.erase(std::remove(r.objects.begin(), r.objects.end(), object_), r.objects.end());
  object_ = nullptr;
}

std::uint64_t fork_generation() noexcept {
  return Registry::instance().generation.load(std::memory_order_relaxed);
}

}  // namespace dogpile::detail
