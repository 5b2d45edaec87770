// SPDX-License-Identifier: MIT
// dogpile/codec/protobuf.hpp — protocol buffers messages cached in their
// wire format.
//
// Including this header makes every generated message type codable, with
// nothing more to write:
//
//   // user.proto
//   syntax = "proto3";
//   package pb;
//   message User { int64 id = 1; string name = 2; repeated string roles = 3; }
//
//   #include <dogpile/codec/protobuf.hpp>
//   #include "user.pb.h"
//
//   pb::User user = region.get_or_create<pb::User>("user:42", [&] { return load_user(42); });
//
// The bytes are the message's serialization, so other languages' clients
// can read them. A decode that fails (not a valid encoding, a proto2
// required field missing, over 2 GiB) is a miss; nothing is thrown but
// std::bad_alloc. The wire format carries no type: bytes of another message
// type may well parse (their fields kept as unknown ones), and a message
// whose fields all have their defaults is encoded as no bytes at all.
// Encoding a message that lacks a required field throws
// std::invalid_argument (it would never decode: a miss on every read), and
// one over 2 GiB std::length_error. Any type derived from
// google::protobuf::MessageLite is covered, full or lite runtime; a
// specialization of dogpile::Codec<T> of your own still takes precedence.
// Needs protobuf 3 (Debian: libprotobuf-dev, and protobuf-compiler for protoc).
#pragma once

#include <google/protobuf/message_lite.h>

#include <climits>
#include <concepts>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "dogpile/codec.hpp"

namespace dogpile {

template <class T>
requires std::derived_from<T, google::protobuf::MessageLite>
struct ProtobufCodec {
  static void encode(const T& value, std::string& out) {
    if (!value.IsInitialized()) {
      throw std::invalid_argument("dogpile: a " + std::string(value.GetTypeName()) +
                                  " missing required fields (" + value.InitializationErrorString() +
                                  ") cannot be cached: it would never decode");
    }
    const std::size_t at = out.size();
    if (!value.AppendToString(&out)) {
      out.resize(at);
      throw std::length_error("dogpile: a " + std::string(value.GetTypeName()) +
                              " over 2 GiB cannot be serialized");
    }
  }

  static std::optional<T> decode(std::string_view bytes) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) return std::nullopt;
    T value;
    // ParsePartial, then the required fields checked here: the same outcome
    // as ParseFromArray, without its log line on every such miss.
    if (!value.ParsePartialFromArray(bytes.data(), static_cast<int>(bytes.size())) ||
        !value.IsInitialized()) {
      return std::nullopt;
    }
    return value;
  }
};

/// Every protobuf message: its wire format.
template <class T>
requires std::derived_from<T, google::protobuf::MessageLite>
struct Codec<T> : ProtobufCodec<T> {
  // No other Codec<T> applies to a message: it is not arithmetic, not an
  // enum, and not one of the standard types codec.hpp covers.
};

}  // namespace dogpile
