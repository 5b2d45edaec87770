// SPDX-License-Identifier: MIT
#include "transport/journal.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "transport/wire_parts.hpp"

namespace dogpile::detail::wire {

Journal::Kept Journal::keep(std::string_view key) {
  std::lock_guard lock(mutex_);
  std::string k(key);
  if (keys_.contains(k)) return Kept::already;
  if (keys_.size() >= capacity_) return Kept::full;
  keys_.insert(std::move(k));
  size_.store(keys_.size() + taken_, std::memory_order_release);
  return Kept::added;
}

std::vector<std::string> Journal::take() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  out.reserve(keys_.size());
  while (!keys_.empty()) out.push_back(std::move(keys_.extract(keys_.begin()).value()));
  taken_ = out.size();
  return out;
}

void Journal::replayed() {
  std::lock_guard lock(mutex_);
  taken_ = 0;
  size_.store(keys_.size(), std::memory_order_release);
}

std::size_t Journal::put_back(std::vector<std::string> keys) {
  std::lock_guard lock(mutex_);
  taken_ = 0;
  std::size_t lost = 0;
  for (auto& key : keys) {
    if (keys_.size() >= capacity_ && !keys_.contains(key)) {
      ++lost;
    } else {
      keys_.insert(std::move(key));
    }
  }
  size_.store(keys_.size(), std::memory_order_release);
  return lost;
}

std::size_t ReplayPipeline::produce(std::string& out, Connection&) {
  if (next_ >= keys_.size()) return 0;
  const std::size_t end = std::min(keys_.size(), next_ + kChunk);
  for (; next_ < end; ++next_) {
    if (meta_) {
      fmt::format_to(std::back_inserter(out), "md {} q\r\n", keys_[next_]);
    } else {
      fmt::format_to(std::back_inserter(out), "delete {} noreply\r\n", keys_[next_]);
    }
  }
  out.append(meta_ ? "mn\r\n" : "version\r\n");
  return 1;
}

std::size_t ReplayPipeline::consume(std::string_view unread, std::size_t, std::size_t& finished) {
  const auto end = unread.find("\r\n");
  if (end == std::string_view::npos) {
    if (unread.size() > kMaxLine) throw Malformed("a reply line without end", {}, "PROTOCOL_ERROR");
    return 0;
  }
  const std::string_view line = unread.substr(0, end);
  // A quiet `md` still says NF of a key that was not there; `delete ...
  // noreply` says nothing. Any other line but the chunk's end is a failure.
  if (meta_ && line == "NF") return end + 2;
  if (meta_ ? line != "MN" : !line.starts_with("VERSION ")) {
    throw Malformed(fmt::format("a delete replayed was answered \"{}\"", line.substr(0, 60)), {},
                    "PROTOCOL_ERROR");
  }
  finished = 1;
  return end + 2;
}

}  // namespace dogpile::detail::wire
