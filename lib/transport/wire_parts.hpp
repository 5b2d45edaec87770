// SPDX-License-Identifier: MIT
// What the wire client's sources share (internal to lib/transport/): its
// bounds, its errors, the first-contact pipeline.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "transport/reply_line.hpp"
#include "transport/wire_client.hpp"

namespace dogpile::detail::wire {

// Requests unanswered at once: enough to keep a server busy, few enough that
// neither side's buffers fill while the other waits.
inline constexpr std::size_t kMaxOutstanding = 1024;
// What one read takes from the socket at most.
inline constexpr std::size_t kReadChunk = 64 * 1024;

[[noreturn]] inline void fail(std::string_view server, std::string_view why,
                              const char* code = "CONNECTION_FAILURE") {
  throw BackendError(fmt::format("memcached {}: {}", server, why), std::string(server), code);
}

inline std::string where(const RingServer& s) {
  if (s.port == 0) return s.host;  // a unix socket
  return s.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", s.host, s.port)
                                               : fmt::format("{}:{}", s.host, s.port);
}

inline int millis_until(Steady::time_point deadline, Steady::time_point now) noexcept {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(std::clamp<std::int64_t>(left, 0, 1 << 30));
}

// Reads lines of a first contact: `mn` (meta), then `stats settings`.
class LinesPipeline final : public Pipeline {
 public:
  LinesPipeline(std::string_view request, std::size_t lines) : request_(request), lines_(lines) {}
  std::size_t produce(std::string& out, Connection&) override {
    if (sent_) return 0;
    sent_ = true;
    out.append(request_);
    return 1;
  }
  std::size_t consume(std::string_view unread, std::size_t, std::size_t& finished) override {
    const auto end = unread.find("\r\n");
    if (end == std::string_view::npos) {
      if (unread.size() > kMaxLine)
        throw Malformed("a reply line without end", {}, "PROTOCOL_ERROR");
      return 0;
    }
    got.emplace_back(unread.substr(0, end));
    if (got.size() == lines_) finished = 1;
    return end + 2;
  }
  std::vector<std::string> got;

 private:
  std::string_view request_;
  std::size_t lines_;
  bool sent_ = false;
};

}  // namespace dogpile::detail::wire
