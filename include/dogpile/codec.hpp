// dogpile/codec.hpp — how a value type becomes bytes in the cache and back.
//
// `Codec<T>` is a customization point: specialize it for your own types.
// Built in: std::string, std::vector<std::byte>, std::vector<std::uint8_t>,
// and arithmetic types (fixed width, little-endian, so 32- and 64-bit hosts
// and both byte orders read each other's values).
//
//   struct Point { std::int32_t x, y; };
//   template <>
//   struct dogpile::Codec<Point> {
//     static void encode(const Point& p, std::string& out) {
//       dogpile::Codec<std::int32_t>::encode(p.x, out);
//       dogpile::Codec<std::int32_t>::encode(p.y, out);
//     }
//     static std::optional<Point> decode(std::string_view bytes) {
//       if (bytes.size() != 8) return std::nullopt;
//       auto x = dogpile::Codec<std::int32_t>::decode(bytes.substr(0, 4));
//       auto y = dogpile::Codec<std::int32_t>::decode(bytes.substr(4));
//       return Point{*x, *y};
//     }
//   };
//
// `encode` appends to `out` (which may already hold other bytes) and must not
// throw except for std::bad_alloc. `decode` gets exactly the bytes one encode
// appended, or bytes that someone else wrote: it must check them and return
// std::nullopt for anything it cannot read, never read out of bounds, never
// throw. A decode failure is treated as a cache miss.
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dogpile {

template <class T>
struct Codec;  // no codec for T: specialize dogpile::Codec<T>

/// A type with a usable Codec.
template <class T>
concept Codable = requires(const T& value, std::string& out, std::string_view bytes) {
  Codec<T>::encode(value, out);
  { Codec<T>::decode(bytes) } -> std::same_as<std::optional<T>>;
};

template <>
struct Codec<std::string> {
  static void encode(const std::string& value, std::string& out) { out.append(value); }
  static std::optional<std::string> decode(std::string_view bytes) { return std::string(bytes); }
};

namespace detail {

template <class Byte>
struct ByteVectorCodec {
  static void encode(const std::vector<Byte>& value, std::string& out) {
    out.append(reinterpret_cast<const char*>(value.data()), value.size());
  }
  static std::optional<std::vector<Byte>> decode(std::string_view bytes) {
    std::vector<Byte> value(bytes.size());
    if (!bytes.empty()) std::memcpy(value.data(), bytes.data(), bytes.size());
    return value;
  }
};

template <class U>
constexpr U byteswap_if_big_endian(U v) noexcept {
  if constexpr (std::endian::native == std::endian::big && sizeof(U) > 1) {
    U r = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) {
      r = static_cast<U>((r << 8) | (v & 0xff));
      v = static_cast<U>(v >> 8);
    }
    return r;
  } else {
    return v;
  }
}

// The unsigned integer with the same size as T.
template <std::size_t N>
struct uint_of_size;
template <>
struct uint_of_size<1> {
  using type = std::uint8_t;
};
template <>
struct uint_of_size<2> {
  using type = std::uint16_t;
};
template <>
struct uint_of_size<4> {
  using type = std::uint32_t;
};
template <>
struct uint_of_size<8> {
  using type = std::uint64_t;
};

}  // namespace detail

template <>
struct Codec<std::vector<std::byte>> : detail::ByteVectorCodec<std::byte> {};
template <>
struct Codec<std::vector<std::uint8_t>> : detail::ByteVectorCodec<std::uint8_t> {};

/// Arithmetic types: sizeof(T) bytes, little-endian. `bool` is one byte, 0 or 1;
/// long double is not supported (its layout differs between platforms).
template <class T>
requires(std::is_arithmetic_v<T> && !std::is_same_v<T, long double>) struct Codec<T> {
  using Bits = typename detail::uint_of_size<sizeof(T)>::type;

  static void encode(T value, std::string& out) {
    Bits bits;
    if constexpr (std::is_same_v<T, bool>) {
      bits = value ? 1 : 0;
    } else {
      bits = std::bit_cast<Bits>(value);
    }
    bits = detail::byteswap_if_big_endian(bits);
    char raw[sizeof(T)];
    std::memcpy(raw, &bits, sizeof(T));
    out.append(raw, sizeof(T));
  }

  static std::optional<T> decode(std::string_view bytes) {
    if (bytes.size() != sizeof(T)) return std::nullopt;
    Bits bits;
    std::memcpy(&bits, bytes.data(), sizeof(T));
    bits = detail::byteswap_if_big_endian(bits);
    if constexpr (std::is_same_v<T, bool>) {
      if (bits > 1) return std::nullopt;
      return bits == 1;
    } else {
      return std::bit_cast<T>(bits);
    }
  }
};

}  // namespace dogpile
