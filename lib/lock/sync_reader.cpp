// SPDX-License-Identifier: MIT
#include "dogpile/sync_reader.hpp"

namespace dogpile::detail {

void ReadWriteMutex::lock_shared() {
  std::unique_lock lock(mutex_);
  ++waiting_readers_;
  readers_cv_.wait(lock, [this] { return !writer_ && waiting_writers_ == 0; });
  --waiting_readers_;
  ++readers_;
}

void ReadWriteMutex::unlock_shared() noexcept {
  std::lock_guard lock(mutex_);
  if (--readers_ == 0 && waiting_writers_ > 0) writers_cv_.notify_one();
}

void ReadWriteMutex::lock() {
  std::unique_lock lock(mutex_);
  ++waiting_writers_;
  writers_cv_.wait(lock, [this] { return !writer_ && readers_ == 0; });
  --waiting_writers_;
  writer_ = true;
}

void ReadWriteMutex::unlock() noexcept {
  std::lock_guard lock(mutex_);
  writer_ = false;
  if (waiting_writers_ > 0) {
    writers_cv_.notify_one();
  } else {
    readers_cv_.notify_all();
  }
}

std::size_t ReadWriteMutex::readers() const {
  std::lock_guard lock(mutex_);
  return readers_;
}

std::size_t ReadWriteMutex::waiting_readers() const {
  std::lock_guard lock(mutex_);
  return waiting_readers_;
}

std::size_t ReadWriteMutex::waiting_writers() const {
  std::lock_guard lock(mutex_);
  return waiting_writers_;
}

}  // namespace dogpile::detail
