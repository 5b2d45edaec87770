// SPDX-License-Identifier: MIT
// dogpile/file_lock.hpp — a lock shared by the processes of one host.
//
// `FileLock` locks a file with flock(2). The file is named after the SHA-256 of
// the key (any bytes are fine) in a lock directory, so every process that
// builds a FileLock for the same key and directory contends for the same lock.
// It is also safe to share one FileLock between threads. Use it as the Mutex
// of a Dogpile to hold a herd back across processes:
//
//   dogpile::Dogpile<dogpile::FileLock> lock(std::chrono::minutes(5), {}, "report:2026");
//
// Lock files are left in place when unlocked (removing them would race with
// other processes opening them); the directory holds one small file per key.
#pragma once

#include <filesystem>
#include <mutex>
#include <string_view>

namespace dogpile {

class FileLock {
 public:
  /// Opens (creating if needed) the lock file for `key` in `directory`, which is
  /// created with mode 0700 if missing. Throws std::system_error with the path
  /// if the directory or file cannot be created or opened.
  explicit FileLock(std::string_view key,
                    const std::filesystem::path& directory = default_directory());
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  /// Blocks until this thread holds the lock against every other thread and
  /// process. Throws std::system_error if flock(2) fails.
  void lock();
  /// Takes the lock if it is free; never blocks. Throws std::system_error if
  /// flock(2) fails for a reason other than the lock being held.
  [[nodiscard]] bool try_lock();
  /// Releases the lock. Must be called by the thread that holds it. Never throws.
  void unlock() noexcept;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

  /// `$TMPDIR/dogpile-locks` (or `/tmp/dogpile-locks`).
  [[nodiscard]] static std::filesystem::path default_directory();
  /// The lock file used for `key` in `directory`: `<sha256(key) hex>.lock`.
  [[nodiscard]] static std::filesystem::path path_for(std::string_view key,
                                                      const std::filesystem::path& directory);

 private:
  // flock(2) locks belong to the open file description, which all threads of
  // this process share through fd_; the mutex orders those threads.
  std::mutex threads_;
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace dogpile
