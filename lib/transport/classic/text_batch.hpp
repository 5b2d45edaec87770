// SPDX-License-Identifier: MIT
// Batches of classic text-protocol requests to one server (internal): the
// classic dialect's Pipelines.
//
// The classic protocol's replies carry no opaque. What can be checked is:
// retrievals answer each line with items named by keys of that line, in the
// order asked, then END; every other command answers with one status line,
// in order. A reply outside that is Malformed: the connection is out of step.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

#include "dogpile/detail/function_ref.hpp"
#include "transport/classic/text_protocol.hpp"
#include "transport/wire_client.hpp"

namespace dogpile::detail::text {

/// `command` (get or gets) of `count` keys, `key_of(i)`, in lines of a few
/// dozen keys written while replies are read; `on_value(i, reply)` for each
/// item found. Error replies fail the batch (BackendError).
class Retrieval final : public wire::Pipeline {
 public:
  using KeyOf = FunctionRef<std::string_view(std::size_t)>;
  using OnValue = FunctionRef<void(std::size_t, const Reply&)>;

  Retrieval(std::string_view op, std::string_view command, std::size_t count, KeyOf key_of,
            OnValue on_value) noexcept
      : op_(op), command_(command), count_(count), key_of_(key_of), on_value_(on_value) {}

  std::size_t produce(std::string& out, wire::Connection& connection) override;
  std::size_t consume(std::string_view unread, std::size_t max_value,
                      std::size_t& finished) override;
  void restart() noexcept override;

 private:
  std::string_view op_;
  std::string_view command_;
  std::size_t count_;
  KeyOf key_of_;
  OnValue on_value_;
  std::size_t produced_ = 0;           // keys written
  std::size_t cursor_ = 0;             // the next key an item may answer
  std::deque<std::size_t> line_ends_;  // where each line written ends
};

/// `count` commands answered by one status line each (storage, delete,
/// touch): request i written by `write(i, out)`, its reply handed to
/// `on_reply(i, reply)`, in order.
class Commands final : public wire::Pipeline {
 public:
  using Write = FunctionRef<void(std::size_t, std::string&)>;
  using OnReply = FunctionRef<void(std::size_t, const Reply&)>;

  Commands(std::string_view op, std::size_t count, Write write, OnReply on_reply) noexcept
      : op_(op), count_(count), write_(write), on_reply_(on_reply) {}

  std::size_t produce(std::string& out, wire::Connection& connection) override;
  std::size_t consume(std::string_view unread, std::size_t max_value,
                      std::size_t& finished) override;
  void restart() noexcept override { produced_ = next_ = 0; }

 private:
  std::string_view op_;
  std::size_t count_;
  Write write_;
  OnReply on_reply_;
  std::size_t produced_ = 0;
  std::size_t next_ = 0;
};

/// The text of an error reply, for messages: "CLIENT_ERROR bad data chunk".
[[nodiscard]] std::string describe(const Reply& reply);

/// Throws the BackendError for an error reply (or an unexpected one) to
/// `op`: CLIENT_ERROR, SERVER_ERROR, ITEM_TOO_BIG (memcached's "object too
/// large for cache"), PROTOCOL_ERROR.
[[noreturn]] void refused(std::string_view op, const Reply& reply);

}  // namespace dogpile::detail::text
