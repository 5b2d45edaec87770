// SPDX-License-Identifier: MIT
// dogpile/codec/json.hpp — values cached as JSON, through nlohmann-json.
//
// Any type nlohmann-json can convert (to_json/from_json, or
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE) becomes codable in one line:
//
//   #include <dogpile/codec/json.hpp>
//
//   struct User { std::string name; int age; std::vector<std::string> tags; };
//   NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(User, name, age, tags)
//   template <> struct dogpile::Codec<User> : dogpile::JsonCodec<User> {};
//
// The bytes are the value's JSON text, so other languages' clients can read
// them. A decode that fails (not JSON, or JSON that does not convert to T:
// a missing member, a wrong type) is a miss; nothing is thrown. Needs
// nlohmann-json 3.9 or later (Debian: nlohmann-json3-dev).
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "dogpile/codec.hpp"

namespace dogpile {

template <class T>
struct JsonCodec {
  static void encode(const T& value, std::string& out) {
    // A value nlohmann-json cannot write (invalid UTF-8 in a string) is
    // written with the offending bytes replaced, not thrown.
    out.append(
        nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  static std::optional<T> decode(std::string_view bytes) {
    auto json = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (json.is_discarded()) return std::nullopt;
    try {
      return json.template get<T>();
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;
    }
  }
};

}  // namespace dogpile
