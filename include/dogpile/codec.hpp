// SPDX-License-Identifier: MIT
// dogpile/codec.hpp — how a value type becomes bytes in the cache and back.
//
// `Codec<T>` is a customization point: specialize it for your own types.
// Built in: std::string, std::vector<std::byte>, std::vector<std::uint8_t>,
// arithmetic types (fixed width, little-endian, so 32- and 64-bit hosts and
// both byte orders read each other's values), enums, std::chrono durations
// and time points, and, of codable types, std::optional, std::pair,
// std::tuple, std::array, sequences (vector, deque, list, set, multiset,
// unordered_set) and maps (map, multimap, unordered_map).
//
// A struct is codable field by field, by naming its members:
//
//   struct User { std::string name; int age; std::vector<std::string> tags; };
//   template <>
//   struct dogpile::Codec<User> : dogpile::MemberCodec<&User::name, &User::age, &User::tags> {};
//
// Composite values are fields one after another, each but fixed-width
// arithmetic ones behind a 4-byte little-endian length; a sequence or map
// starts with its 4-byte count. Adding a member to a struct changes its bytes:
// values cached before then fail to decode (a miss) rather than decode wrong.
//
// Or by hand:
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

#include <array>
#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
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

/// Enums: their underlying integer.
template <class T>
requires std::is_enum_v<T>
struct Codec<T> {
  using Underlying = std::underlying_type_t<T>;
  static void encode(T value, std::string& out) {
    Codec<Underlying>::encode(static_cast<Underlying>(value), out);
  }
  static std::optional<T> decode(std::string_view bytes) {
    const auto raw = Codec<Underlying>::decode(bytes);
    if (!raw) return std::nullopt;
    return static_cast<T>(*raw);
  }
};

/// Durations: their count (so the period is part of the type, not the bytes).
template <class Rep, class Period>
requires Codable<Rep>
struct Codec<std::chrono::duration<Rep, Period>> {
  using D = std::chrono::duration<Rep, Period>;
  static void encode(const D& value, std::string& out) { Codec<Rep>::encode(value.count(), out); }
  static std::optional<D> decode(std::string_view bytes) {
    const auto count = Codec<Rep>::decode(bytes);
    if (!count) return std::nullopt;
    return D(*count);
  }
};

/// Time points: their duration since the clock's epoch.
template <class Clock, class Duration>
requires Codable<Duration>
struct Codec<std::chrono::time_point<Clock, Duration>> {
  using P = std::chrono::time_point<Clock, Duration>;
  static void encode(const P& value, std::string& out) {
    Codec<Duration>::encode(value.time_since_epoch(), out);
  }
  static std::optional<P> decode(std::string_view bytes) {
    const auto since = Codec<Duration>::decode(bytes);
    if (!since) return std::nullopt;
    return P(*since);
  }
};

namespace detail {

// A type whose encoding always has the same size: written without a length.
template <class T>
constexpr bool fixed_width_v =
    (std::is_arithmetic_v<T> && !std::is_same_v<T, long double>) || std::is_enum_v<T>;

inline void put_u32(std::string& out, std::uint32_t v) {
  const char raw[4] = {static_cast<char>(v & 0xff), static_cast<char>((v >> 8) & 0xff),
                       static_cast<char>((v >> 16) & 0xff), static_cast<char>((v >> 24) & 0xff)};
  out.append(raw, 4);
}

inline bool take_u32(std::string_view& in, std::uint32_t& v) {
  if (in.size() < 4) return false;
  v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(in[static_cast<std::size_t>(i)]);
  in.remove_prefix(4);
  return true;
}

// One field: fixed-width values as they are, others behind their length.
template <class T>
void put_field(std::string& out, const T& value) {
  if constexpr (fixed_width_v<T>) {
    Codec<T>::encode(value, out);
  } else {
    const std::size_t at = out.size();
    put_u32(out, 0);
    Codec<T>::encode(value, out);
    const std::size_t length = out.size() - at - 4;
    if (length > 0xffffffffu) {  // a field over 4 GiB: nothing a cache can hold
      out.resize(at);
      throw std::length_error("dogpile codec: a field over 4 GiB");
    }
    for (int i = 0; i < 4; ++i) {
      out[at + static_cast<std::size_t>(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
    }
  }
}

template <class T>
std::optional<T> take_field(std::string_view& in) {
  std::size_t length = 0;
  if constexpr (fixed_width_v<T>) {
    length = sizeof(T);
  } else {
    std::uint32_t n = 0;
    if (!take_u32(in, n)) return std::nullopt;
    length = n;
  }
  if (in.size() < length) return std::nullopt;
  auto value = Codec<T>::decode(in.substr(0, length));
  in.remove_prefix(length);
  return value;
}

// The least bytes one field of T takes: bounds a count before anything is
// reserved for it.
template <class T>
constexpr std::size_t min_field_size() {
  if constexpr (fixed_width_v<T>) return sizeof(T);
  return 4;
}

// Sequences and sets: a count, then the elements as fields.
template <class C>
struct SequenceCodec {
  using T = typename C::value_type;
  static void encode(const C& value, std::string& out) {
    put_u32(out, static_cast<std::uint32_t>(value.size()));
    for (const auto& element : value) put_field(out, element);
  }
  static std::optional<C> decode(std::string_view in) {
    std::uint32_t count = 0;
    if (!take_u32(in, count) || count > in.size() / min_field_size<T>()) return std::nullopt;
    C value;
    if constexpr (requires(C & c) { c.reserve(count); }) value.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
      auto element = take_field<T>(in);
      if (!element) return std::nullopt;
      if constexpr (requires(C & c) { c.push_back(std::move(*element)); }) {
        value.push_back(std::move(*element));
      } else {
        value.insert(std::move(*element));
      }
    }
    if (!in.empty()) return std::nullopt;
    return value;
  }
};

// Maps: a count, then key and value fields in turn.
template <class M>
struct MapCodec {
  using K = typename M::key_type;
  using V = typename M::mapped_type;
  static void encode(const M& value, std::string& out) {
    put_u32(out, static_cast<std::uint32_t>(value.size()));
    for (const auto& [k, v] : value) {
      put_field(out, k);
      put_field(out, v);
    }
  }
  static std::optional<M> decode(std::string_view in) {
    std::uint32_t count = 0;
    if (!take_u32(in, count) || count > in.size() / (min_field_size<K>() + min_field_size<V>())) {
      return std::nullopt;
    }
    M value;
    for (std::uint32_t i = 0; i < count; ++i) {
      auto k = take_field<K>(in);
      if (!k) return std::nullopt;
      auto v = take_field<V>(in);
      if (!v) return std::nullopt;
      value.emplace(std::move(*k), std::move(*v));
    }
    if (!in.empty()) return std::nullopt;
    return value;
  }
};

// A fixed list of fields, each decoded from where the last one ended.
template <class... Ts>
struct FieldList {
  static void encode(const Ts&... values, std::string& out) { (put_field(out, values), ...); }
  static std::optional<std::tuple<Ts...>> decode(std::string_view in) {
    std::tuple<std::optional<Ts>...> parts;
    bool ok = true;
    std::apply([&](auto&... part) { ((ok = ok && (part = take_field<Ts>(in)).has_value()), ...); },
               parts);
    if (!ok || !in.empty()) return std::nullopt;
    return std::apply([](auto&... part) { return std::tuple<Ts...>(std::move(*part)...); }, parts);
  }
};

template <class M>
struct member_pointer;
template <class C, class T>
struct member_pointer<T C::*> {
  using owner = C;
  using type = T;
};

}  // namespace detail

/// std::optional: one byte (0: empty, 1: a value), then the value.
template <Codable T>
struct Codec<std::optional<T>> {
  static void encode(const std::optional<T>& value, std::string& out) {
    out.push_back(value ? '\1' : '\0');
    if (value) Codec<T>::encode(*value, out);
  }
  static std::optional<std::optional<T>> decode(std::string_view bytes) {
    if (bytes.empty()) return std::nullopt;
    if (bytes[0] == '\0') {
      if (bytes.size() != 1) return std::nullopt;
      return std::optional<T>();
    }
    if (bytes[0] != '\1') return std::nullopt;
    auto value = Codec<T>::decode(bytes.substr(1));
    if (!value) return std::nullopt;
    return std::optional<T>(std::move(*value));
  }
};

template <Codable A, Codable B>
struct Codec<std::pair<A, B>> {
  static void encode(const std::pair<A, B>& value, std::string& out) {
    detail::FieldList<A, B>::encode(value.first, value.second, out);
  }
  static std::optional<std::pair<A, B>> decode(std::string_view bytes) {
    auto parts = detail::FieldList<A, B>::decode(bytes);
    if (!parts) return std::nullopt;
    return std::pair<A, B>(std::move(std::get<0>(*parts)), std::move(std::get<1>(*parts)));
  }
};

template <Codable... Ts>
struct Codec<std::tuple<Ts...>> {
  static void encode(const std::tuple<Ts...>& value, std::string& out) {
    std::apply([&](const Ts&... v) { detail::FieldList<Ts...>::encode(v..., out); }, value);
  }
  static std::optional<std::tuple<Ts...>> decode(std::string_view bytes) {
    return detail::FieldList<Ts...>::decode(bytes);
  }
};

template <Codable T, std::size_t N>
struct Codec<std::array<T, N>> {
  static void encode(const std::array<T, N>& value, std::string& out) {
    for (const auto& element : value) detail::put_field(out, element);
  }
  static std::optional<std::array<T, N>> decode(std::string_view in) {
    std::array<std::optional<T>, N> parts;
    for (auto& part : parts) {
      part = detail::take_field<T>(in);
      if (!part) return std::nullopt;
    }
    if (!in.empty()) return std::nullopt;
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<T, N>{std::move(*parts[I])...};
    }
    (std::make_index_sequence<N>());
  }
};

template <Codable T, class A>
struct Codec<std::vector<T, A>> : detail::SequenceCodec<std::vector<T, A>> {};
template <Codable T, class A>
struct Codec<std::deque<T, A>> : detail::SequenceCodec<std::deque<T, A>> {};
template <Codable T, class A>
struct Codec<std::list<T, A>> : detail::SequenceCodec<std::list<T, A>> {};
template <Codable T, class C, class A>
struct Codec<std::set<T, C, A>> : detail::SequenceCodec<std::set<T, C, A>> {};
template <Codable T, class C, class A>
struct Codec<std::multiset<T, C, A>> : detail::SequenceCodec<std::multiset<T, C, A>> {};
template <Codable T, class H, class E, class A>
struct Codec<std::unordered_set<T, H, E, A>>
    : detail::SequenceCodec<std::unordered_set<T, H, E, A>> {};
template <Codable K, Codable V, class C, class A>
struct Codec<std::map<K, V, C, A>> : detail::MapCodec<std::map<K, V, C, A>> {};
template <Codable K, Codable V, class C, class A>
struct Codec<std::multimap<K, V, C, A>> : detail::MapCodec<std::multimap<K, V, C, A>> {};
template <Codable K, Codable V, class H, class E, class A>
struct Codec<std::unordered_map<K, V, H, E, A>>
    : detail::MapCodec<std::unordered_map<K, V, H, E, A>> {};

/// A struct's codec from its members, in the order given (see the top of
/// this file). The struct must be default-constructible; each member codable.
template <auto... Members>
requires(sizeof...(Members) > 0 &&
         (std::is_member_object_pointer_v<decltype(Members)> && ...)) struct MemberCodec {
  using T = typename detail::member_pointer<
      std::tuple_element_t<0, std::tuple<decltype(Members)...>>>::owner;
  static_assert((std::is_same_v<typename detail::member_pointer<decltype(Members)>::owner, T> &&
                 ...),
                "dogpile::MemberCodec: every member must belong to the same struct");
  static_assert((Codable<typename detail::member_pointer<decltype(Members)>::type> && ...),
                "dogpile::MemberCodec: every member's type needs a dogpile::Codec");

  static void encode(const T& value, std::string& out) {
    (detail::put_field(out, value.*Members), ...);
  }
  static std::optional<T> decode(std::string_view in) {
    T value{};
    bool ok = true;
    ((ok = ok && take_into(in, value.*Members)), ...);
    if (!ok || !in.empty()) return std::nullopt;
    return value;
  }

 private:
  template <class M>
  static bool take_into(std::string_view& in, M& member) {
    auto part = detail::take_field<M>(in);
    if (!part) return false;
    member = std::move(*part);
    return true;
  }
};

}  // namespace dogpile
