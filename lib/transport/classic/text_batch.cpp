// SPDX-License-Identifier: MIT
#include "transport/classic/text_batch.hpp"

#include <fmt/format.h>

namespace dogpile::detail::text {
namespace {

// A chunk: this many requests (or keys), or this many bytes, whichever first.
constexpr std::size_t kChunkRequests = 256;
constexpr std::size_t kChunkBytes = 64 * 1024;
// Keys per retrieval line: memcached reads a long line in pieces, but a
// proxy may not.
constexpr std::size_t kKeysPerLine = 100;

[[noreturn]] void out_of_step(std::string_view op, std::string_view why) {
  throw wire::Malformed(fmt::format("{}: {}: the connection is out of step", op, why), {},
                        "PROTOCOL_ERROR");
}

std::size_t parse(std::string_view op, std::string_view unread, std::size_t max_value,
                  Reply& reply) {
  std::size_t length = 0;
  switch (parse_reply(unread, reply, length, max_value)) {
    case Parse::ok:
      return length;
    case Parse::more:
      return 0;
    case Parse::malformed:
      break;
  }
  out_of_step(op, fmt::format("not a memcached reply: \"{}\"",
                              unread.substr(0, std::min<std::size_t>(unread.find('\r'), 60))));
}

// Hands each complete reply at the start of `unread` to `on`; returns the
// bytes they took.
template <class On>
std::size_t each_reply(std::string_view op, std::string_view unread, std::size_t max_value, On on) {
  std::size_t used = 0;
  while (used < unread.size()) {
    Reply reply;
    const std::size_t length = parse(op, unread.substr(used), max_value, reply);
    if (length == 0) break;
    used += length;
    on(reply);
  }
  return used;
}

bool is_error(const Reply& reply) noexcept {
  return reply.kind == Kind::error || reply.kind == Kind::client_error ||
         reply.kind == Kind::server_error;
}

}  // namespace

void refused(std::string_view op, const Reply& reply) {
  const bool too_big = reply.kind == Kind::server_error && wire::says_too_big(reply.message);
  throw BackendError(fmt::format("{}: {}", op, describe(reply)), {},
                     reply.kind == Kind::client_error ? "CLIENT_ERROR"
                     : too_big                        ? "ITEM_TOO_BIG"
                     : reply.kind == Kind::error      ? "PROTOCOL_ERROR"
                                                      : "SERVER_ERROR");
}

std::string describe(const Reply& reply) {
  switch (reply.kind) {
    case Kind::client_error:
      return fmt::format("CLIENT_ERROR {}", reply.message);
    case Kind::server_error:
      return fmt::format("SERVER_ERROR {}", reply.message);
    case Kind::error:
      return "ERROR (a command the server does not know)";
    default:
      return "an unexpected reply";
  }
}

std::size_t Retrieval::produce(std::string& out, wire::Connection&) {
  const std::size_t lines = line_ends_.size();
  const std::size_t start = out.size();
  std::size_t keys = 0;
  while (produced_ < count_ && keys < kChunkRequests && out.size() - start < kChunkBytes) {
    out.append(command_);
    const std::size_t line_start = produced_;
    while (produced_ < count_ && produced_ - line_start < kKeysPerLine) {
      out.append(" ").append(key_of_(produced_));
      ++produced_;
    }
    out.append("\r\n");
    keys += produced_ - line_start;
    line_ends_.push_back(produced_);
  }
  return line_ends_.size() - lines;
}

std::size_t Retrieval::consume(std::string_view unread, std::size_t max_value,
                               std::size_t& finished) {
  return each_reply(op_, unread, max_value, [&](const Reply& reply) {
    if (line_ends_.empty()) out_of_step(op_, "a reply to no request");
    const std::size_t end = line_ends_.front();
    if (reply.kind == Kind::end) {
      line_ends_.pop_front();
      cursor_ = end;
      ++finished;
      return;
    }
    if (is_error(reply)) refused(op_, reply);
    if (reply.kind != Kind::value) out_of_step(op_, "a reply that answers no retrieval");
    // Items come in the order their keys were asked, each key at most once
    // for each time it was asked.
    while (cursor_ < end && key_of_(cursor_) != reply.key) ++cursor_;
    if (cursor_ == end) {
      out_of_step(
          op_, fmt::format("an item for key \"{}\", not asked for here", reply.key.substr(0, 64)));
    }
    on_value_(cursor_, reply);
    ++cursor_;
  });
}

void Retrieval::restart() noexcept {
  produced_ = 0;
  cursor_ = 0;
  line_ends_.clear();
}

std::size_t Commands::produce(std::string& out, wire::Connection&) {
  const std::size_t first = produced_;
  const std::size_t start = out.size();
  while (produced_ < count_ && produced_ - first < kChunkRequests &&
         out.size() - start < kChunkBytes) {
    write_(produced_, out);
    ++produced_;
  }
  return produced_ - first;
}

std::size_t Commands::consume(std::string_view unread, std::size_t max_value,
                              std::size_t& finished) {
  return each_reply(op_, unread, max_value, [&](const Reply& reply) {
    if (next_ >= produced_) out_of_step(op_, "a reply to no request");
    if (reply.kind == Kind::value || reply.kind == Kind::end) {
      out_of_step(op_, "an item where a status was due");
    }
    on_reply_(next_, reply);
    ++next_;
    ++finished;
  });
}

}  // namespace dogpile::detail::text
