// SPDX-License-Identifier: MIT
// What an error message must not do (tests): carry a pointer or a library's
// source path, name its server more than once, or say one thing twice in a
// row ("CONNECTION FAILURE: CONNECTION FAILURE").
#pragma once

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

namespace dogpile::test {

/// Empty if `message` is clean; else what is wrong with it.
inline std::string message_faults(std::string_view message, std::string_view server = {}) {
  for (std::size_t at = message.find("0x"); at != std::string_view::npos;
       at = message.find("0x", at + 2)) {
    std::size_t digits = 0;
    while (at + 2 + digits < message.size() &&
           std::isxdigit(static_cast<unsigned char>(message[at + 2 + digits]))) {
      ++digits;
    }
    if (digits >= 6) return "a pointer";
  }
  for (std::string_view path : {".c:", ".cc:", ".cpp:", "libmemcached/", "/usr/"}) {
    if (message.find(path) != std::string_view::npos) return "a source path";
  }
  if (!server.empty()) {
    const auto first = message.find(server);
    if (first != std::string_view::npos &&
        message.find(server, first + server.size()) != std::string_view::npos) {
      return "the server named twice";
    }
  }
  // Parts separated by ": " or "; ", none the same as the one before it.
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i + 1 < message.size(); ++i) {
    if ((message[i] == ':' || message[i] == ';') && message[i + 1] == ' ') {
      parts.push_back(message.substr(start, i - start));
      start = i + 2;
    }
  }
  parts.push_back(message.substr(start));
  for (std::size_t i = 1; i < parts.size(); ++i) {
    if (!parts[i].empty() && parts[i] == parts[i - 1]) return "a part said twice";
  }
  return {};
}

}  // namespace dogpile::test
