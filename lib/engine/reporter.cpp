// SPDX-License-Identifier: MIT
#include "engine/reporter.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <new>
#include <string>

#include "dogpile/backend.hpp"

namespace dogpile {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::backend:
      return "backend";
    case ErrorKind::decode:
      return "decode";
    case ErrorKind::lock:
      return "lock";
    case ErrorKind::creator:
      return "creator";
    case ErrorKind::fenced:
      return "fenced";
  }
  return "unknown";
}

namespace detail {

void StderrReporter::operator()(const ErrorEvent& e) {
  using Steady = std::chrono::steady_clock;
  const std::int64_t now = Steady::now().time_since_epoch().count();
  const std::int64_t second =
      std::chrono::duration_cast<Steady::duration>(std::chrono::seconds(1)).count();
  auto last = last_.load(std::memory_order_relaxed);
  if (now - last < second || !last_.compare_exchange_strong(last, now)) {
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::string key;
  for (char c : e.key.substr(0, 80)) {
    const auto b = static_cast<unsigned char>(c);
    key += (b >= 0x20 && b < 0x7f && b != '\\') ? std::string(1, c) : fmt::format("\\x{:02x}", b);
  }
  if (e.key.size() > 80) key += "...";
  std::string line = fmt::format("dogpile: {} error in {} for key \"{}\": {}", to_string(e.kind),
                                 e.operation, key, e.message);
  if (const auto held_back = suppressed_.exchange(0, std::memory_order_relaxed); held_back > 0) {
    line += fmt::format(" ({} more errors in the last second)", held_back);
  }
  line += '\n';
  std::fputs(line.c_str(), stderr);
}

Reporter::Reporter(ErrorHandler handler, Counters& counters)
    : counters_(counters), handler_(std::make_shared<const ErrorHandler>(std::move(handler))) {}

void Reporter::report(ErrorKind kind, std::string_view operation, std::string_view key,
                      const std::exception& error, std::string_view note) noexcept {
  std::string message;
  try {
    message = std::string(error.what()).append(note);
  } catch (...) {
    message.clear();  // out of memory: the error's own text alone
  }
  const std::string_view text = message.empty() ? std::string_view(error.what()) : message;
  if (const auto* backend = dynamic_cast<const BackendError*>(&error)) {
    report(kind, operation, key, text, backend->server(), backend->code());
  } else {
    report(kind, operation, key, text);
  }
}

void Reporter::report(ErrorKind kind, std::string_view operation, std::string_view key,
                      std::string_view message, std::string_view server,
                      std::string_view code) noexcept {
  switch (kind) {
    case ErrorKind::backend:
      Counters::add(counters_.backend_errors);
      break;
    case ErrorKind::decode:
      Counters::add(counters_.decode_errors);
      break;
    case ErrorKind::lock:
      Counters::add(counters_.lock_errors);
      break;
    case ErrorKind::creator:  // counted in creation_errors where it happened
    case ErrorKind::fenced:   // counted in fenced_out
      break;
  }
  try {
    std::shared_ptr<const ErrorHandler> h;
    {
      std::lock_guard lock(mutex_);
      h = handler_;
    }
    const ErrorEvent event{kind, operation, key, message, server, code};
    if (*h) {
      (*h)(event);
    } else {
      default_(event);
    }
  } catch (...) {
    // A handler must not take the caller down.
  }
}

void Reporter::set_handler(ErrorHandler handler) {
  auto h = std::make_shared<const ErrorHandler>(std::move(handler));
  std::lock_guard lock(mutex_);
  handler_ = std::move(h);
}

void Reporter::reset_after_fork() noexcept { new (&mutex_) std::mutex; }

}  // namespace detail
}  // namespace dogpile
