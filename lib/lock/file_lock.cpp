// SPDX-License-Identifier: MIT
#include "dogpile/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "format/sha256.hpp"

namespace dogpile {
namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "dogpile::FileLock: " + what);
}

// flock(2), retried when a signal interrupts it. Returns 0 or an errno value.
int flock_retrying(int fd, int operation) noexcept {
  while (::flock(fd, operation) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

}  // namespace

FileLock::FileLock(std::string_view key, const std::filesystem::path& directory)
    : path_(path_for(key, directory)) {
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    throw_errno(errno, "cannot create lock directory " + directory.string());
  }
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) throw_errno(errno, "cannot open lock file " + path_.string());
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing also drops a lock still held
}

void FileLock::lock() {
  threads_.lock();
  if (int err = flock_retrying(fd_, LOCK_EX); err != 0) {
    threads_.unlock();
    throw_errno(err, "flock(LOCK_EX) failed on " + path_.string());
  }
}

bool FileLock::try_lock() {
  if (!threads_.try_lock()) return false;
  const int err = flock_retrying(fd_, LOCK_EX | LOCK_NB);
  if (err == 0) return true;
  threads_.unlock();
  if (err == EWOULDBLOCK) return false;
  throw_errno(err, "flock(LOCK_EX|LOCK_NB) failed on " + path_.string());
}

void FileLock::unlock() noexcept {
  // LOCK_UN on a valid descriptor cannot fail for a reason the caller could
  // act on; the file lock is also dropped when the descriptor is closed.
  (void)flock_retrying(fd_, LOCK_UN);
  threads_.unlock();
}

std::filesystem::path FileLock::default_directory() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) base = "/tmp";
  return base / "dogpile-locks";
}

std::filesystem::path FileLock::path_for(std::string_view key,
                                         const std::filesystem::path& directory) {
  return directory / (detail::sha256_hex(key) + ".lock");
}

}  // namespace dogpile
