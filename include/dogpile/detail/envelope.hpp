// dogpile/detail/envelope.hpp — the stored form of a value: (created_at, payload).
//
// A value and its creation time travel in one item, so one `get` returns both.
// The item's 32-bit flags are kEnvelopeFlags; its bytes are a fixed header
// followed by the payload (what Codec<T>::encode wrote):
//
//   offset  size  field
//        0     4  magic "dgpE"
//        4     1  format version (1)
//        5     1  header size in bytes (24)
//        6     2  reserved, zero
//        8     8  created_at: microseconds since the Unix epoch, little-endian
//                 (at most what a TimePoint holds: the year 2262)
//       16     4  creation duration: microseconds the creator took, little-endian,
//                 saturated at 2^32 - 1 (about 71 minutes); 0 if unknown
//       20     4  payload length, little-endian
//       24     n  payload
//
// Anything else under the key (other flags, a short or long item, another
// magic or version, a non-zero reserved field) does not decode: it is a miss.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

inline constexpr std::uint32_t kEnvelopeFlags = 0x64704501;  // "dpE" + version 1
inline constexpr std::size_t kEnvelopeHeaderSize = 24;
inline constexpr std::uint8_t kEnvelopeVersion = 1;

/// Why bytes did not decode as an envelope.
enum class EnvelopeError {
  foreign_flags,   ///< the item's flags are not kEnvelopeFlags
  truncated,       ///< shorter than the header, or than the payload length says
  bad_magic,       ///< not written by dogpile
  wrong_version,   ///< another format version
  bad_header,      ///< header size or reserved field not as this version writes them
  trailing_bytes,  ///< longer than the payload length says
};

[[nodiscard]] const char* to_string(EnvelopeError e) noexcept;

/// A decoded envelope; `payload` views the bytes it was decoded from.
struct EnvelopeView {
  TimePoint created_at;
  std::chrono::microseconds creation_duration;
  std::string_view payload;
};

/// Starts an envelope in `out` (cleared): reserves the header. Append the
/// payload to `out`, then call finish_envelope.
void begin_envelope(std::string& out);

/// Writes the header of an envelope begun with begin_envelope. Throws
/// std::length_error if the payload is 4 GiB or larger.
void finish_envelope(std::string& out, TimePoint created_at,
                     std::chrono::microseconds creation_duration);

/// Decodes an item. Pure; never reads outside `bytes`; never throws.
struct DecodeResult {
  std::optional<EnvelopeView> envelope;
  EnvelopeError error{};
};
[[nodiscard]] DecodeResult decode_envelope(std::string_view bytes, std::uint32_t flags) noexcept;

}  // namespace dogpile::detail
