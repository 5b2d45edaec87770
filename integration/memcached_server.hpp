// SPDX-License-Identifier: MIT
// A real memcached for integration tests: started on 127.0.0.1 at a free port
// it picks, stopped (or killed, paused, restarted) by the test. Also a raw
// text-protocol client, to read the server's own `stats` and to write bytes
// that dogpile would never write.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dogpile {
class Backend;
}

namespace dogpile::test {

/// A port that was free a moment ago on 127.0.0.1 (the kernel's choice).
[[nodiscard]] int free_port();

/// The transport the memcached suites run on: MemcachedMetaBackend when the
/// environment says DOGPILE_TEST_TRANSPORT=meta, else MemcachedBackend. CTest
/// runs those suites once for each.
enum class Transport { classic, meta };
[[nodiscard]] Transport transport();
/// A backend of the suite's transport for a memcached option string.
[[nodiscard]] std::shared_ptr<Backend> memcached(std::string_view options, bool auto_eject = false);

class MemcachedServer {
 public:
  struct Options {
    int memory_mb = 64;
    /// -I: the largest item the server accepts (memcached's default is 1 MiB).
    std::string max_item_size;
  };

  /// Starts memcached and waits until it accepts connections. Throws
  /// std::runtime_error (saying why) if it cannot.
  MemcachedServer();
  explicit MemcachedServer(Options options);
  /// Kills the server if it runs.
  ~MemcachedServer();
  MemcachedServer(const MemcachedServer&) = delete;
  MemcachedServer& operator=(const MemcachedServer&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// "--SERVER=127.0.0.1:<port>", for MemcachedBackend.
  [[nodiscard]] std::string options() const;

  void stop();     ///< SIGTERM, then reaps it
  void kill();     ///< SIGKILL, then reaps it
  void pause();    ///< SIGSTOP: the server stalls with its sockets open
  void resume();   ///< SIGCONT
  void restart();  ///< starts it again on the same port (after stop or kill)

  /// The server's `stats`, as numbers (non-numeric fields are left out).
  [[nodiscard]] std::map<std::string, std::int64_t> stats() const;
  /// Sends `request` as is on a new connection and returns the reply up to
  /// and including the line that ends it ("END", "STORED", "ERROR", ...).
  [[nodiscard]] std::string raw(std::string_view request) const;
  /// Stores `data` under `key` with `flags` through the text protocol.
  void raw_set(std::string_view key, std::string_view data, std::uint32_t flags, int ttl = 0) const;

  /// Path of the memcached binary, or empty if there is none.
  [[nodiscard]] static std::string binary();

 private:
  void start();

  Options options_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// A backend of the suite's transport for `server`.
[[nodiscard]] std::shared_ptr<Backend> backend_for(const MemcachedServer& server);

/// A TCP connection to 127.0.0.1:`port` (TCP_NODELAY), or -1.
int connect_loopback(int port);

/// Milliseconds since some fixed point, for measuring waits.
inline double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

/// The process's peak resident memory (kB, VmHWM) since the last
/// reset_peak_rss() (or its start).
[[nodiscard]] long peak_rss_kb();
/// Starts the peak anew from what is resident now.
void reset_peak_rss();

/// p-th percentile (0-100) of `values` (copied and sorted); 0 if empty.
double percentile(std::vector<double> values, double p);

}  // namespace dogpile::test
