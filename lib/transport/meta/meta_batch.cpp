// SPDX-License-Identifier: MIT
#include "transport/meta/meta_batch.hpp"

#include <fmt/format.h>

#include <charconv>

namespace dogpile::detail::meta {
namespace {

// A chunk: this many requests, or this many bytes, whichever comes first.
constexpr std::size_t kChunkRequests = 256;
constexpr std::size_t kChunkBytes = 64 * 1024;

[[noreturn]] void out_of_step(std::string_view op, std::string_view why) {
  throw wire::Malformed(fmt::format("{}: {}: the connection is out of step", op, why), {},
                        "PROTOCOL_ERROR");
}

}  // namespace

std::size_t Batch::produce(std::string& out, wire::Connection& connection) {
  if (!started_) {
    started_ = true;
    base_ = connection.take_opaques(count_);
  }
  const std::size_t first = produced_;
  const std::size_t start = out.size();
  while (produced_ < count_ && produced_ - first < kChunkRequests &&
         out.size() - start < kChunkBytes) {
    write_(produced_, out, base_ + static_cast<std::uint32_t>(produced_));
    ++produced_;
  }
  if (quiet_ && produced_ > first) {
    append_mn(out);
    chunk_ends_.push_back(produced_);
  }
  return produced_ - first;
}

std::size_t Batch::consume(std::string_view unread, std::size_t max_value, std::size_t& finished) {
  std::size_t used = 0;
  while (used < unread.size()) {
    Reply reply;
    std::size_t length = 0;
    const Parse parsed = parse_reply(unread.substr(used), reply, length, max_value);
    if (parsed == Parse::more) break;
    if (parsed == Parse::malformed) {
      const std::string_view rest = unread.substr(used);
      out_of_step(op_, fmt::format("not a meta protocol reply: \"{}\"",
                                   rest.substr(0, std::min<std::size_t>(rest.find('\r'), 60))));
    }
    used += length;
    if (reply.code == Code::mn) {
      if (!quiet_ || chunk_ends_.empty()) out_of_step(op_, "an MN that ends no request");
      const std::size_t end = chunk_ends_.front();
      chunk_ends_.pop_front();
      for (; next_ < end; ++next_) on_reply_(next_, nullptr);
      finished += end - chunk_start_;
      chunk_start_ = end;
      continue;
    }
    const bool error = reply.code == Code::error || reply.code == Code::client_error ||
                       reply.code == Code::server_error;
    if (error) {
      if (next_ >= produced_) out_of_step(op_, "an error reply to no request");
      if (quiet_) {
        throw BackendError(fmt::format("{}: {} {} in a batch (it names no request)", op_,
                                       reply.code == Code::client_error   ? "CLIENT_ERROR"
                                       : reply.code == Code::server_error ? "SERVER_ERROR"
                                                                          : "ERROR",
                                       reply.message),
                           {}, reply.code == Code::client_error ? "CLIENT_ERROR" : "SERVER_ERROR");
      }
      on_reply_(next_, &reply);
      ++next_;
      ++finished;
      continue;
    }
    std::uint32_t opaque = 0;
    const auto [end, ec] =
        std::from_chars(reply.opaque.data(), reply.opaque.data() + reply.opaque.size(), opaque);
    const std::size_t index = static_cast<std::uint32_t>(opaque - base_);
    if (reply.opaque.empty() || ec != std::errc() ||
        end != reply.opaque.data() + reply.opaque.size() || index < next_ || index >= produced_ ||
        (!quiet_ && index != next_)) {
      out_of_step(op_, fmt::format("a reply that answers no request waiting (opaque \"{}\")",
                                   reply.opaque.substr(0, 32)));
    }
    for (; next_ < index; ++next_) on_reply_(next_, nullptr);  // quiet: no news
    on_reply_(index, &reply);
    next_ = index + 1;
    if (!quiet_) ++finished;
  }
  return used;
}

void Batch::restart() noexcept {
  started_ = false;
  produced_ = 0;
  next_ = 0;
  chunk_start_ = 0;
  chunk_ends_.clear();
}

}  // namespace dogpile::detail::meta
