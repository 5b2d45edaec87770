// SPDX-License-Identifier: MIT
// dogpile/codec/msgpack.hpp — values cached as MessagePack, through msgpack-cxx.
//
// Any type msgpack-cxx can pack and convert (MSGPACK_DEFINE, MSGPACK_DEFINE_MAP,
// or an adaptor of its own) becomes codable in one line:
//
//   #include <dogpile/codec/msgpack.hpp>
//
//   struct User {
//     std::string name;
//     int age = 0;
//     std::vector<std::string> tags;
//     MSGPACK_DEFINE_MAP(name, age, tags)
//   };
//   template <> struct dogpile::Codec<User> : dogpile::MsgpackCodec<User> {};
//
// The bytes are one MessagePack object, so other languages' clients can read
// them; with MSGPACK_DEFINE_MAP it is a map keyed by member name. A decode
// that fails (not exactly one MessagePack object, or one that does not
// convert to T: a wrong type, an integer out of range) is a miss; nothing is
// thrown but std::bad_alloc. msgpack-cxx's own rules for structs apply: a
// member the bytes lack keeps its default, a key or element T lacks is
// skipped. The bytes are checked to be one whole object before anything is
// allocated for what they announce, so a forged length costs nothing. Needs
// msgpack-cxx 4 (Debian: libmsgpack-cxx-dev; its CMake target msgpackc-cxx).
#pragma once

#include <msgpack.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/codec.hpp"

namespace dogpile {

namespace detail {

// Containers nested deeper than this are refused.
inline constexpr std::size_t msgpack_max_depth = 64;

// msgpack::pack's output stream: appends to a std::string.
struct MsgpackAppender {
  std::string& out;
  void write(const char* data, std::size_t size) { out.append(data, size); }
};

// A first pass over the bytes that builds nothing: they must be exactly one
// complete MessagePack object, nested at most msgpack_max_depth deep. Then
// every element an array or map announces is there, at least a byte each, so
// what msgpack::unpack reserves for them is bounded by the bytes' size. Left
// to itself, unpack reserves room for all the elements a container announces
// before reading one: 64 nested arrays each announcing as many elements as a
// 1 MiB value has bytes would have it reserve 1.5 GiB, for a value that ends
// after their headers.
struct MsgpackShapeCheck : msgpack::null_visitor {
  std::size_t depth = 0;

  bool start_array(std::uint32_t) { return ++depth <= msgpack_max_depth; }
  bool start_map(std::uint32_t) { return ++depth <= msgpack_max_depth; }
  bool end_array() {
    --depth;
    return true;
  }
  bool end_map() {
    --depth;
    return true;
  }
};

// Whether `bytes` is exactly one MessagePack object within that depth.
inline bool msgpack_shape_ok(std::string_view bytes) {
  if (bytes.empty()) return false;
  MsgpackShapeCheck check;
  std::size_t offset = 0;
  return msgpack::parse(bytes.data(), bytes.size(), offset, check) && offset == bytes.size();
}

}  // namespace detail

template <class T>
struct MsgpackCodec {
  static void encode(const T& value, std::string& out) {
    const std::size_t at = out.size();
    detail::MsgpackAppender sink{out};
    try {
      msgpack::pack(sink, value);
    } catch (...) {
      out.resize(at);  // no half-written object left behind
      throw;
    }
  }

  static std::optional<T> decode(std::string_view bytes) {
    try {
      if (!detail::msgpack_shape_ok(bytes)) return std::nullopt;
      // The same bounds again, as msgpack's own limits: no string, array,
      // map, binary or extension larger than the bytes, nothing deeper. A
      // forged count is refused by either before anything is reserved for it.
      const std::size_t n = bytes.size();
      const msgpack::unpack_limit limit(n, n, n, n, n, detail::msgpack_max_depth);
      std::size_t offset = 0;
      const msgpack::object_handle handle =
          msgpack::unpack(bytes.data(), n, offset, nullptr, nullptr, limit);
      if (offset != n) return std::nullopt;  // trailing bytes: not one object
      return handle.get().as<T>();
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception&) {  // msgpack::unpack_error, msgpack::type_error, ...
      return std::nullopt;
    }
  }
};

}  // namespace dogpile
