// SPDX-License-Identifier: MIT
// envelope.hpp (internal) — the stored form of a value: (created_at, payload),
// bound to the key it is stored under.
//
// A value and its creation time travel in one item, so one `get` returns both.
// The item's 32-bit flags are kEnvelopeFlags; its bytes are a fixed header
// followed by the payload (what Codec<T>::encode wrote):
//
//   offset  size  field
//        0     4  magic "dgpE"
//        4     1  format version (2)
//        5     1  header size in bytes (32)
//        6     1  kind: 0 a value, 1 a tombstone (a removal; no payload),
//                 2 a value marked stale (a per-key soft invalidation)
//        7     1  payload encoding: 0 as the codec wrote it, 1 one zstd frame
//                 of it (RegionOptions::compression) that declares its size
//                 and carries a checksum
//        8     8  created_at: microseconds since the Unix epoch on the fleet
//                 clock, little-endian (at most what a TimePoint holds: 2262)
//       16     4  creation duration: microseconds the creator took, little-endian,
//                 saturated at 2^32 - 1 (about 71 minutes); 0 if unknown
//       20     4  payload length (as stored), little-endian
//       24     8  key check: detail::key_check of the stored key, little-endian
//       32     n  payload
//
// Anything else under the key (other flags, a short or long item, another
// magic or version, an unknown encoding, another key's check) does not
// decode: it is a miss; so is a zstd payload that does not decompress to the
// size and checksum its frame declares, or declares more than the reader
// allows. Items of version 1 (flags 0x64704501, no key check,
// written by dogpile 0.1) are refused as `old_version`: a miss, replaced by
// the next creation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dogpile/clock.hpp"

namespace dogpile::detail {

inline constexpr std::uint32_t kEnvelopeFlags = 0x64704502;    // "dpE" + version 2
inline constexpr std::uint32_t kEnvelopeFlagsV1 = 0x64704501;  // dogpile 0.1
inline constexpr std::size_t kEnvelopeHeaderSize = 32;
inline constexpr std::uint8_t kEnvelopeVersion = 2;

/// What an envelope holds.
enum class EnvelopeKind : std::uint8_t {
  value = 0,      ///< a value and its creation time
  tombstone = 1,  ///< a removal: a miss for readers; fences out older creations
  stale = 2,      ///< a value marked stale: served stale while one caller regenerates it
};

/// How the payload is stored.
enum class PayloadEncoding : std::uint8_t {
  plain = 0,  ///< the codec's bytes
  zstd = 1,   ///< one zstd frame of the codec's bytes, its content size declared
};

/// Compression of the payloads an envelope is finished with.
struct PayloadCompression {
  std::size_t threshold = 0;  ///< compress payloads of at least this many bytes; 0: never
  int level = 3;              ///< zstd level
};

/// Why bytes did not decode as an envelope.
enum class EnvelopeError {
  foreign_flags,    ///< the item's flags are not kEnvelopeFlags
  truncated,        ///< shorter than the header, or than the payload length says
  bad_magic,        ///< not written by dogpile
  wrong_version,    ///< another format version
  bad_header,       ///< header size, kind or encoding not as this version writes them
  trailing_bytes,   ///< longer than the payload length says
  old_version,      ///< written by dogpile 0.1 (envelope version 1, no key check)
  key_mismatch,     ///< stored under another key than the one it was read for
  bad_compression,  ///< a zstd payload that does not decompress as its frame declares
  too_large,        ///< a zstd payload that would decompress beyond the reader's bound
};

[[nodiscard]] const char* to_string(EnvelopeError e) noexcept;
/// The error's name ("key_mismatch"), for ErrorEvent::code.
[[nodiscard]] const char* code_of(EnvelopeError e) noexcept;

/// A decoded envelope; `payload` views the bytes it was decoded from.
struct EnvelopeView {
  TimePoint created_at;
  std::chrono::microseconds creation_duration;
  std::string_view payload;
  EnvelopeKind kind = EnvelopeKind::value;
  std::uint64_t key_check = 0;
  PayloadEncoding encoding = PayloadEncoding::plain;
};

/// Marks the value envelope `bytes` (already decoded as a value) stale, in
/// place.
void mark_envelope_stale(std::string& bytes) noexcept;

/// Starts an envelope in `out` (cleared): reserves the header. Append the
/// payload to `out`, then call finish_envelope.
void begin_envelope(std::string& out);

/// Writes the header of an envelope begun with begin_envelope, compressing
/// the payload first if `compression` says so and it gets smaller. Throws
/// std::length_error if the payload is 4 GiB or larger. Returns the payload's
/// encoding.
PayloadEncoding finish_envelope(std::string& out, TimePoint created_at,
                                std::chrono::microseconds creation_duration,
                                std::uint64_t key_check, EnvelopeKind kind = EnvelopeKind::value,
                                PayloadCompression compression = {});

/// Decodes an item. Pure; never reads outside `bytes`; never throws.
struct DecodeResult {
  std::optional<EnvelopeView> envelope;
  EnvelopeError error{};
};
[[nodiscard]] DecodeResult decode_envelope(std::string_view bytes, std::uint32_t flags) noexcept;
/// The same, and refused as key_mismatch unless its key check is `expected_key_check`.
[[nodiscard]] DecodeResult decode_envelope(std::string_view bytes, std::uint32_t flags,
                                           std::uint64_t expected_key_check) noexcept;

/// The most bytes a zstd frame's blocks can make (RFC 8878: a raw or RLE
/// block says its size, a compressed one makes at most 128 KiB), read from
/// their headers; 0 if the frame does not walk to its last block.
[[nodiscard]] std::uint64_t frame_content_bound(std::string_view frame) noexcept;

/// The codec's bytes of a decoded envelope: its payload, or for a zstd one
/// the payload decompressed into `scratch` (replaced). nullopt, with the
/// reason in `error`, if it does not decompress to the size its frame
/// declares, or that size is above `max_size` or above what its blocks can
/// make (both refused before anything is allocated). Never throws but std::bad_alloc.
[[nodiscard]] std::optional<std::string_view> payload_bytes(const EnvelopeView& envelope,
                                                            std::string& scratch,
                                                            std::size_t max_size,
                                                            EnvelopeError& error);

}  // namespace dogpile::detail
