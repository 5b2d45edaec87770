// SPDX-License-Identifier: MIT
// FileLock: mutual exclusion between threads and between real processes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dogpile/file_lock.hpp"
#include "dogpile/lock.hpp"
#include "dogpile/name_registry.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using dogpile::FileLock;
using dogpile::test::eventually;
using dogpile::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Waits for a forked child; returns its exit status, or -1 if it did not exit normally.
int wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool write_byte(int fd) {
  const char c = 'x';
  return ::write(fd, &c, 1) == 1;
}
bool read_byte(int fd) {
  char c = 0;
  return ::read(fd, &c, 1) == 1;
}

}  // namespace

TEST_SUITE_BEGIN("file-lock");

TEST_CASE("lock files are named by a hash of the key, inside the directory") {
  TempDir dir;
  const std::vector<std::string> keys = {
      "report", "../../etc/passwd",     std::string("a\0b", 3), "with space\r\n",
      "",       std::string(10000, 'k')};
  std::set<fs::path> paths;
  for (const auto& key : keys) {
    const fs::path p = FileLock::path_for(key, dir.path());
    CHECK(p.parent_path() == dir.path());
    CHECK(p.filename().string().size() == 64 + 5);
    CHECK(p.extension() == ".lock");
    paths.insert(p);
    FileLock lock(key, dir.path());
    CHECK(fs::exists(lock.path()));
  }
  CHECK(paths.size() == keys.size());
  CHECK(FileLock::path_for("report", dir.path()) == FileLock::path_for("report", dir.path()));
}

TEST_CASE("the lock directory is created when missing") {
  TempDir dir;
  const fs::path nested = dir.path() / "locks";
  FileLock lock("k", nested);
  CHECK(fs::is_directory(nested));
}

TEST_CASE("an unusable lock directory is a clear error") {
  TempDir dir;
  std::ofstream(dir.path() / "file") << "not a directory";
  CHECK_THROWS_AS(FileLock("k", dir.path() / "file"), std::system_error);
}

TEST_CASE("two FileLocks for one key exclude each other in one process") {
  TempDir dir;
  FileLock a("k", dir.path());
  FileLock b("k", dir.path());
  FileLock other("other", dir.path());
  REQUIRE(a.try_lock());
  CHECK_FALSE(b.try_lock());
  CHECK(other.try_lock());
  other.unlock();
  a.unlock();
  CHECK(b.try_lock());
  b.unlock();
}

TEST_CASE("threads sharing one FileLock exclude each other") {
  TempDir dir;
  FileLock lock("k", dir.path());
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 500; ++i) {
          lock.lock();
          if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
          std::this_thread::yield();
          inside.fetch_sub(1);
          lock.unlock();
        }
      });
    }
  }
  CHECK(overlaps == 0);
}

TEST_CASE("a FileLock held by one process excludes another until released") {
  TempDir dir;
  FileLock lock("shared", dir.path());
  int to_child[2];
  int to_parent[2];
  REQUIRE(::pipe(to_child) == 0);
  REQUIRE(::pipe(to_parent) == 0);
  lock.lock();

  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child opens its own lock file description, as another process would.
    int code = 0;
    try {
      FileLock mine("shared", dir.path());
      if (mine.try_lock()) code = 10;  // must be held by the parent
      if (!write_byte(to_parent[1])) code = 11;
      if (!read_byte(to_child[0])) code = 12;  // the parent has released it
      if (!mine.try_lock()) code = 13;
      mine.unlock();
    } catch (...) {
      code = 14;
    }
    ::_exit(code);
  }
  REQUIRE(read_byte(to_parent[0]));
  lock.unlock();
  REQUIRE(write_byte(to_child[1]));
  CHECK(wait_child(pid) == 0);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) ::close(fd);
}

TEST_SUITE_END();
