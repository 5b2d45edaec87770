// SPDX-License-Identifier: MIT
// A deliberately broken memcached, for the hostile-server tests: it speaks
// just enough of both protocols to be taken for memcached (`mn`, `stats`,
// `stats settings`, and ordinary replies to writes), and answers reads the
// way it is told to misbehave. Listens on a free loopback port; each
// connection is served by a thread of its own until the server is destroyed.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace dogpile::test {

class HostileServer {
 public:
  enum class Reply {
    honest,           ///< a miss: EN / END (to check the setup)
    stream,           ///< a value declared 1 TiB long, then bytes as fast as they go
    stream_endless,   ///< a status line that never ends, streamed
    drip,             ///< a well-formed 1 KB value, one byte every 20 ms
    stall_mid_value,  ///< a value's header and half its bytes, then silence
    truncated,        ///< half a reply, then the connection closed
    reset,            ///< the connection reset (RST) instead of a reply
    out_of_order,     ///< a reply for another request (meta: another opaque;
                      ///< classic: another key)
    extra_replies,    ///< the right reply, and a second one after it
    garbage,          ///< bytes that are no protocol at all
    server_error,     ///< SERVER_ERROR out of memory (a refusal, not a fault)
  };

  /// `stats_time`: what it says its `stats` `time` is (empty: the truth).
  explicit HostileServer(Reply reply, std::string stats_time = {});
  ~HostileServer();
  HostileServer(const HostileServer&) = delete;
  HostileServer& operator=(const HostileServer&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  /// "--SERVER=127.0.0.1:<port>".
  [[nodiscard]] std::string options() const;
  /// Bytes sent so far (the streaming replies send a lot).
  [[nodiscard]] std::size_t bytes_sent() const noexcept { return sent_.load(); }
  /// Reads it was asked (mg, get, gets).
  [[nodiscard]] int reads() const noexcept { return reads_.load(); }
  /// Requests of any kind but the first contact's (`mn`, `stats settings`).
  [[nodiscard]] int requests() const noexcept { return requests_.load(); }

  [[nodiscard]] static const char* name(Reply reply) noexcept;

 private:
  void serve(int fd);

  const Reply reply_;
  const std::string stats_time_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> sent_{0};
  std::atomic<int> reads_{0};
  std::atomic<int> requests_{0};
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // joined by the destructor
};

}  // namespace dogpile::test
