// SPDX-License-Identifier: MIT
// Forked worker processes and memory they share with the test, for tests of
// several processes against one memcached. Workers report through shared
// memory and their exit code; they never touch doctest's state.
#pragma once

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

namespace dogpile::test {

/// One T in anonymous shared memory, visible to processes forked after it.
/// T must be usable from several processes at once (std::atomic of lock-free
/// types, plain data written by one process and read after it exits).
template <class T>
class Shared {
 public:
  Shared() {
    void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    value_ = new (p) T();
  }
  ~Shared() {
    value_->~T();
    ::munmap(value_, sizeof(T));
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  T* operator->() const noexcept { return value_; }
  T& operator*() const noexcept { return *value_; }

 private:
  T* value_;
};

/// Forks a process that runs `body()` and exits with its result (1 if it
/// throws). Returns its pid.
template <class Body>
pid_t fork_worker(Body body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 1;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker %d: %s\n", static_cast<int>(::getpid()), e.what());
    } catch (...) {
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return pid;
}

/// Waits for `pid`; its exit code, or 128 + signal if a signal ended it.
inline int wait_worker(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// Waits for `pid` at most `limit` (spinning, not sleeping); if it is still
/// running then, kills it and returns -2 (a hang).
inline int wait_worker_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (done < 0) return -1;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -2;
    }
    std::this_thread::yield();
  }
}

/// Runs `body(i)` in `n` forked processes; returns their exit codes.
template <class Body>
std::vector<int> run_workers(int n, Body body) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) pids.push_back(fork_worker([&, i] { return body(i); }));
  std::vector<int> codes;
  for (pid_t pid : pids) codes.push_back(wait_worker(pid));
  return codes;
}

}  // namespace dogpile::test
