// SPDX-License-Identifier: MIT
// An event loop's connection for reads (meta_channel.hpp).
#include "transport/meta/meta_channel.hpp"

#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "base/fork.hpp"
#include "transport/reply_line.hpp"
#include "transport/wire_parts.hpp"

namespace dogpile::detail::meta {

using wire::Steady;

namespace {
// Requests unanswered on one channel before further reads go to the pool.
constexpr std::size_t kMaxPending = 4096;
// How often a request whose call may be cancelled checks its stop token.
constexpr auto kStopCheck = std::chrono::milliseconds(10);

bool opaque_is(std::string_view token, std::uint32_t opaque) noexcept {
  std::uint32_t got = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), got);
  return ec == std::errc() && end == token.data() + token.size() && got == opaque;
}
}  // namespace

std::shared_ptr<Channel> Channel::open(std::shared_ptr<const void> owner, wire::Client& client,
                                       std::size_t server,
                                       std::unique_ptr<wire::Connection> connection,
                                       std::unique_ptr<Watch> watch) {
  std::shared_ptr<Channel> channel(
      new Channel(std::move(owner), client, server, std::move(connection), std::move(watch)));
  channel->start();
  return channel;
}

Channel::Channel(std::shared_ptr<const void> owner, wire::Client& client, std::size_t server,
                 std::unique_ptr<wire::Connection> connection, std::unique_ptr<Watch> watch)
    : owner_(std::move(owner)),
      client_(client),
      server_(server),
      connection_(std::move(connection)),
      watch_(std::move(watch)),
      limits_(client.limits(client.server(server), Request{})) {}

Channel::~Channel() = default;

void Channel::start() {
  // Nothing is waited for while nothing is asked (a wait would keep the
  // loop running): bytes that came meanwhile are seen with the next reply,
  // out of step, and a connection the server closed meanwhile with the
  // next request, which then goes elsewhere (Done's `elsewhere`).
}

bool Channel::usable() const {
  std::lock_guard lock(mutex_);
  return !closed_ && watch_->alive() && connection_->generation() == fork_generation();
}

bool Channel::read(std::string_view key, std::string_view flags,
                   std::optional<Steady::time_point> deadline, std::stop_token stop, Done done) {
  std::lock_guard lock(mutex_);
  if (closed_ || !watch_->alive() || pending_.size() >= kMaxPending) return false;
  const std::uint32_t opaque = connection_->take_opaques(1);
  const std::size_t before = out_.size();
  const auto now = Steady::now();
  const bool was_idle = pending_.empty();
  try {
    append_mg(out_, key, flags, opaque);
    const bool stoppable = stop.stop_possible();
    pending_.push_back(Pending{opaque, appended_, deadline, std::move(stop), std::move(done)});
    // Written once the loop has run what is ready: every read made in this
    // turn goes in one send.
    if (!writing_) {
      watch_->wait(true, [self = shared_from_this()](bool ok) { self->on_writable(ok); });
      writing_ = true;
    }
    if (!reading_) {
      watch_->wait(false, [self = shared_from_this()](bool ok) { self->on_readable(ok); });
      reading_ = true;
    }
    if (was_idle) {
      progress_ = now;
      fresh_ = true;  // until a byte comes back
    }
    if (!timing_ || (deadline && *deadline < timer_at_) ||
        (stoppable && now + kStopCheck < timer_at_)) {
      arm_timer_locked(now);
    }
  } catch (...) {
    // Not asked after all: its `done` goes unrun, and the caller reads
    // elsewhere.
    if (!pending_.empty() && pending_.back().opaque == opaque) pending_.pop_back();
    out_.resize(before);
    throw;
  }
  appended_ += out_.size() - before;
  client_.count_loop_read();
  return true;
}

void Channel::on_writable(bool ok) {
  if (!ok) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return;
    }
    fail(std::make_exception_ptr(wire::Closed(
             fmt::format("memcached {}: the loop's wait ended", client_.server(server_).name()),
             client_.server(server_).name(), "CONNECTION_FAILURE")),
         false, false);
    return;
  }
  std::string why;
  {
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (closed_) return;
    while (!out_.empty()) {
      const ssize_t n =
          ::send(connection_->fd(), out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        out_.erase(0, static_cast<std::size_t>(n));
        written_ += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        writing_ = true;
        watch_->wait(true, [self = shared_from_this()](bool ok2) { self->on_writable(ok2); });
        return;
      }
      why = n < 0 ? fmt::format("send failed: {}", std::strerror(errno)) : "send wrote nothing";
      break;
    }
    if (why.empty()) return;
  }
  const std::string& name = client_.server(server_).name();
  fail(std::make_exception_ptr(
           wire::Closed(fmt::format("memcached {}: {}", name, why), name, "CONNECTION_FAILURE")),
       true, true);
}

void Channel::on_readable(bool ok) {
  const std::string& name = client_.server(server_).name();
  if (!ok) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return;
    }
    fail(std::make_exception_ptr(wire::Closed(
             fmt::format("memcached {}: the loop's wait ended", name), name, "CONNECTION_FAILURE")),
         false, false);
    return;
  }
  // A chunk at a time, every reply complete in what has come (a reply the
  // protocol or the server's largest item rules out is refused after the
  // chunk that shows it), until the socket holds no more.
  const std::size_t max_unread = limits_.max_value + wire::kMaxLine + 2;
  struct Answer {
    Done done;
    Reply reply;
  };
  for (;;) {
    bool eof = false;
    bool drained = false;
    std::string why;
    const std::size_t size = in_.size();
    in_.resize(size + wire::kReadChunk);
    const ssize_t n = ::recv(connection_->fd(), in_.data() + size, wire::kReadChunk, MSG_DONTWAIT);
    in_.resize(size + static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0) {
      std::lock_guard lock(mutex_);
      fresh_ = false;
    } else if (n == 0) {
      eof = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      drained = true;
    } else {
      why = fmt::format("recv failed: {}", std::strerror(errno));
    }
    std::size_t used = 0;
    std::vector<Answer> answers;
    std::exception_ptr broken;
    for (;;) {
      Reply reply;
      std::size_t consumed = 0;
      const std::string_view unread = std::string_view(in_).substr(used);
      if (unread.empty()) break;
      const Parse parsed = parse_reply(unread, reply, consumed, limits_.max_value);
      if (parsed == Parse::more) {
        if (unread.size() > max_unread) {
          broken = std::make_exception_ptr(wire::Malformed(
              fmt::format("memcached {}: a reply longer than the largest item ({} bytes) can make",
                          name, limits_.max_value),
              name, "PROTOCOL_ERROR"));
        }
        break;
      }
      std::lock_guard lock(mutex_);
      // ERROR, CLIENT_ERROR and SERVER_ERROR carry no opaque: the oldest
      // request's answer (refused by the caller, as on a pooled connection).
      const bool error_reply =
          parsed == Parse::ok && (reply.code == Code::error || reply.code == Code::client_error ||
                                  reply.code == Code::server_error);
      if (parsed == Parse::malformed || pending_.empty() ||
          (!error_reply && !opaque_is(reply.opaque, pending_.front().opaque))) {
        broken = std::make_exception_ptr(wire::Malformed(
            fmt::format("memcached {}: {}", name,
                        parsed == Parse::malformed ? "a reply that is not the meta protocol"
                        : pending_.empty()         ? "more replies than requests"
                                                   : "a reply to another request"),
            name, "PROTOCOL_ERROR"));
        break;
      }
      answers.push_back(Answer{std::exchange(pending_.front().done, nullptr), reply});
      pending_.pop_front();
      progress_ = Steady::now();
      used += consumed;
    }
    // The answers' views point into in_: handed over before it moves on.
    if (!answers.empty()) client_.server(server_).succeeded();
    for (auto& a : answers) {
      if (a.done) a.done(&a.reply, nullptr, false);
    }
    in_.erase(0, used);
    if (broken) {
      fail(broken, true, false);
      return;
    }
    if (eof || !why.empty()) {
      fail(
          std::make_exception_ptr(wire::Closed(
              fmt::format("memcached {}: {}", name, eof ? "the server closed the connection" : why),
              name, "CONNECTION_FAILURE")),
          true, true);
      return;
    }
    if (drained) break;
  }
  std::lock_guard lock(mutex_);
  if (closed_) return;
  if (pending_.empty()) {
    // Nothing asked: nothing waited for, and no timer (it would keep the
    // loop running).
    reading_ = false;
    if (timing_) {
      watch_->stop_timer();
      timing_ = false;
    }
    return;
  }
  watch_->wait(false, [self = shared_from_this()](bool ok2) { self->on_readable(ok2); });
  if (!timing_) arm_timer_locked(Steady::now());
}

void Channel::arm_timer_locked(Steady::time_point now) {
  if (pending_.empty()) return;
  Steady::time_point at = progress_ + limits_.stall;
  for (const Pending& p : pending_) {
    if (!p.done) continue;
    if (p.deadline && *p.deadline < at) at = *p.deadline;
    if (p.stop.stop_possible()) at = std::min(at, now + kStopCheck);
  }
  timing_ = true;
  timer_at_ = at;
  watch_->after(std::max(at - now, Steady::duration::zero()) + std::chrono::microseconds(100),
                [self = shared_from_this()] { self->on_timer(); });
}

void Channel::on_timer() {
  const std::string& name = client_.server(server_).name();
  const auto now = Steady::now();
  std::vector<std::pair<Done, bool>> late;  // and whether it was cancelled
  bool stalled = false;
  {
    std::lock_guard lock(mutex_);
    timing_ = false;
    if (closed_) return;
    // A call whose deadline passed, or that was cancelled, ends now; its
    // reply, when it comes, is read and dropped (the connection stays in
    // step).
    for (Pending& p : pending_) {
      if (!p.done) continue;
      const bool cancelled = p.stop.stop_requested();
      if (cancelled || (p.deadline && *p.deadline <= now)) {
        late.emplace_back(std::exchange(p.done, nullptr), cancelled);
      }
    }
    stalled = !pending_.empty() && now >= progress_ + limits_.stall;
    if (stalled) {
      // Replies waiting in the socket: the loop is behind, not the server.
      char byte = 0;
      if (::recv(connection_->fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
        stalled = false;
        progress_ = now;
      }
    }
    if (!stalled) arm_timer_locked(now);
  }
  for (auto& [done, cancelled] : late) {
    done(nullptr,
         std::make_exception_ptr(wire::Timeout(
             fmt::format("memcached {}: {}", name,
                         cancelled ? "the call was cancelled before the reply was read"
                                   : "the call's deadline passed before the reply was read"),
             name, true)),
         false);
  }
  if (stalled) {
    fail(std::make_exception_ptr(wire::Timeout(
             fmt::format("memcached {}: timed out waiting for the reply", name), name)),
         true, false);
  }
}

void Channel::fail(std::exception_ptr error, bool server_failed, bool closed) {
  std::deque<Pending> ended;
  std::size_t written = 0;
  bool fresh = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    ended.swap(pending_);
    written = written_;
    fresh = closed && fresh_;
    out_.clear();
    connection_->set_broken();
    watch_->cancel();
  }
  // A connection closed before one byte came back for what was asked since
  // it was last idle: the server may have closed it meanwhile (a
  // restart, an idle timeout), as a pooled connection may be. Its requests
  // go elsewhere, once, and the server is not counted failed for it.
  if (server_failed && !fresh) {
    wire::Server& server = client_.server(server_);
    try {
      std::rethrow_exception(error);
    } catch (const BackendError& e) {
      server.failed(e.what());
      // Its keys go to the gutter now: the calls read there at once.
      if (client_.moves(server)) {
        error = std::make_exception_ptr(BackendError(e.what(), e.server(), e.code(), true));
      }
    } catch (const std::exception& e) {
      server.failed(e.what());
    }
  }
  for (Pending& p : ended) {
    Done done = std::exchange(p.done, nullptr);
    if (!done) continue;
    // Not one byte of it written, or nothing back since it was: as above.
    done(nullptr, error, fresh || p.starts_at >= written);
  }
}

}  // namespace dogpile::detail::meta
