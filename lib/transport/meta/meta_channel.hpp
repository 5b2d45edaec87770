// SPDX-License-Identifier: MIT
// An event loop's own connection to one server, for the reads of
// asynchronous calls (internal; docs/async.md): the reads of every call on
// that loop written together (one send for those made in one turn of the
// loop), replies matched to them in order by opaque, nothing blocking.
// Bounded as a pooled connection is: no reply may stall past the poll
// timeout, none may declare more than the server's largest item, and a
// connection out of step (garbage, a reply for another request, bytes
// nobody asked for, the server closing it) is closed, never used again: its
// requests fail, the server is counted failed, and the next read takes
// another connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

#include "dogpile/detail/loop.hpp"
#include "transport/meta/meta_protocol.hpp"
#include "transport/wire_client.hpp"

namespace dogpile::detail::meta {

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  /// A read's end: the reply (its views valid during the call only), or the
  /// error; `elsewhere`: the request never reached the server (make it on
  /// a pooled connection instead).
  using Done = std::function<void(const Reply* reply, std::exception_ptr error, bool elsewhere)>;

  /// A channel on `connection` (an idle pooled one: connected, first contact
  /// made), watched by `watch`. `client` outlives it (the caller holds it).
  /// `owner` keeps `client` alive as long as the channel (its handlers may
  /// outlive the backend; the backend's registry lets go of it first).
  static std::shared_ptr<Channel> open(std::shared_ptr<const void> owner, wire::Client& client,
                                       std::size_t server,
                                       std::unique_ptr<wire::Connection> connection,
                                       std::unique_ptr<Watch> watch);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  /// Sends `mg <key> <flags>` with the channel's next opaque; `done` runs
  /// once, on the loop. `deadline`: the call's (then Timeout, and the reply
  /// is read and dropped when it comes). False (nothing sent, `done` never
  /// runs): the channel is closed, or holds too many requests unanswered.
  /// `stop`: the call's cancellation, checked every 10 ms while it may be
  /// requested (then Timeout, as the deadline).
  bool read(std::string_view key, std::string_view flags,
            std::optional<wire::Steady::time_point> deadline, std::stop_token stop, Done done);
  /// Whether read() may still succeed.
  [[nodiscard]] bool usable() const;

 private:
  struct Pending {
    std::uint32_t opaque = 0;
    std::size_t starts_at = 0;  // its first byte, counted over all written
    std::optional<wire::Steady::time_point> deadline;
    std::stop_token stop;
    Done done;  // empty once answered by its deadline's (or stop's) Timeout
  };
  Channel(std::shared_ptr<const void> owner, wire::Client& client, std::size_t server,
          std::unique_ptr<wire::Connection> connection, std::unique_ptr<Watch> watch);

  void start();
  void on_writable(bool ok);
  void on_readable(bool ok);
  void on_timer();
  void arm_timer_locked(wire::Steady::time_point now);
  // Ends the channel: every request unanswered gets `error` (or goes
  // elsewhere if it never left); `server_failed`: counts against the
  // server; `closed`: the connection was closed or reset under it.
  void fail(std::exception_ptr error, bool server_failed, bool closed);

  const std::shared_ptr<const void> owner_;
  wire::Client& client_;
  const std::size_t server_;
  const std::unique_ptr<wire::Connection> connection_;
  const std::unique_ptr<Watch> watch_;
  const wire::Limits limits_;  // stall and the largest value

  mutable std::mutex mutex_;
  bool closed_ = false;
  bool writing_ = false;               // a write wait armed
  bool reading_ = false;               // a read wait armed (only while requests are unanswered)
  bool fresh_ = false;                 // no byte back since the first unanswered request
  bool timing_ = false;                // the timer armed
  wire::Steady::time_point timer_at_;  // when it fires
  std::string out_;                    // bytes not yet written
  std::size_t written_ = 0;            // bytes written, ever
  std::size_t appended_ = 0;           // bytes appended to out_, ever
  std::deque<Pending> pending_;
  wire::Steady::time_point progress_;  // the last reply's end, or the first request's start
  // The reader's own (one read wait at a time): bytes read, not yet parsed.
  std::string in_;
};

}  // namespace dogpile::detail::meta
