// SPDX-License-Identifier: MIT
// A batch of meta requests to one server (internal): the meta dialect's
// Pipeline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "dogpile/detail/function_ref.hpp"
#include "transport/meta/meta_protocol.hpp"
#include "transport/wire_client.hpp"

namespace dogpile::detail::meta {

/// Request i is written by `write(i, out, opaque)` (append_mg/ms/md with that
/// opaque); its reply goes to `on_reply(i, &reply)`, or `on_reply(i, nullptr)`
/// when a quiet request got none (`q`: a miss, or a write that succeeded).
/// Requests are written in chunks while replies are read, so a batch of any
/// size holds a bounded number of requests in flight.
///
/// A reply is taken only for its own request: it must carry the opaque of a
/// request not yet answered, in order (a non-quiet batch answers every
/// request, so exactly the next one). A quiet batch ends each chunk with
/// `mn`, whose MN says every request before it has answered. Error replies
/// carry no opaque: in a non-quiet batch they are the next request's; in a
/// quiet one they cannot be placed and fail the batch. Anything else is
/// Malformed: the connection is out of step.
class Batch final : public wire::Pipeline {
 public:
  using Write = FunctionRef<void(std::size_t i, std::string& out, std::uint32_t opaque)>;
  using OnReply = FunctionRef<void(std::size_t i, const Reply* reply)>;

  Batch(std::string_view op, std::size_t count, bool quiet, Write write, OnReply on_reply) noexcept
      : op_(op), count_(count), quiet_(quiet), write_(write), on_reply_(on_reply) {}

  std::size_t produce(std::string& out, wire::Connection& connection) override;
  std::size_t consume(std::string_view unread, std::size_t max_value,
                      std::size_t& finished) override;
  void restart() noexcept override;

 private:
  std::string_view op_;
  std::size_t count_;
  bool quiet_;
  Write write_;
  OnReply on_reply_;
  bool started_ = false;
  std::uint32_t base_ = 0;              // the opaque of request 0
  std::size_t produced_ = 0;            // requests written
  std::size_t next_ = 0;                // the first request not answered yet
  std::size_t chunk_start_ = 0;         // quiet: the first request of the oldest open chunk
  std::deque<std::size_t> chunk_ends_;  // quiet: where each chunk written ends
};

}  // namespace dogpile::detail::meta
