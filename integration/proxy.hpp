// SPDX-License-Identifier: MIT
// A memcached text-protocol proxy on a loopback port, for counting requests
// on the wire and for playing a misbehaving server (rewriting what passes
// through). It understands enough of the protocol to find where each request
// and each reply ends: command lines, the data blocks of storage commands and
// of VALUE and VA replies.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dogpile::test {

class Proxy {
 public:
  /// Rewrites a request's command line (without "\r\n"); identity by default.
  using RewriteRequest = std::function<std::string(const std::string& line)>;
  /// Rewrites a reply's line (a VALUE/VA header or a status line).
  using RewriteReply = std::function<std::string(const std::string& line)>;

  /// Listens on a free loopback port and forwards to 127.0.0.1:`upstream`.
  explicit Proxy(int upstream, RewriteRequest request = {}, RewriteReply reply = {});
  /// Stops listening and closes every connection.
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  /// "--SERVER=127.0.0.1:<port>", for MemcachedBackend.
  [[nodiscard]] std::string options() const;

  /// Requests forwarded so far, by command word ("gets", "add", "cas", "mg"...),
  /// and all of them (but `stats`, `version` and `quit`).
  [[nodiscard]] std::map<std::string, int> counts() const;
  [[nodiscard]] int requests() const;
  /// Round trips: bursts of requests sent before the reply to the first of
  /// them (a pipeline of meta requests is one). The meta transport's
  /// handshake (a connection's first `mn`) is not counted, nor is it a request.
  [[nodiscard]] int round_trips() const;
  /// Keys asked for by retrieval commands so far (a `gets a b` counts 2).
  [[nodiscard]] int keys_read() const;
  void reset_counts();

 private:
  void accept_loop();
  void serve(int client);
  void count(const std::string& command, int keys, bool starts_round_trip);

  int upstream_;
  RewriteRequest rewrite_request_;
  RewriteReply rewrite_reply_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::map<std::string, int> counts_;
  int keys_read_ = 0;
  int round_trips_ = 0;
  std::vector<std::thread> workers_;
  std::vector<int> sockets_;
};

}  // namespace dogpile::test
