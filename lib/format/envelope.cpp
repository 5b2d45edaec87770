// SPDX-License-Identifier: MIT
#include "format/envelope.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include <zstd.h>

namespace dogpile::detail {
namespace {

constexpr char kMagic[4] = {'d', 'g', 'p', 'E'};

// The largest created_at (in microseconds) that Duration can hold.
constexpr std::uint64_t kMaxMicros = static_cast<std::uint64_t>(
    std::chrono::duration_cast<std::chrono::microseconds>(Duration::max()).count());

void put_le(char* at, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    at[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

std::uint64_t get_le(const char* at, std::size_t n) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::uint64_t v = 0;
    std::memcpy(&v, at, n);  // n <= 8: the low n bytes, in order
    return v;
  } else {
    std::uint64_t v = 0;
    for (std::size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(at[i]);
    return v;
  }
}

// One compression and one decompression context per thread, reused: making
// one costs more than compressing a small value.
struct ZstdContexts {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> compress{nullptr, ZSTD_freeCCtx};
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> decompress{nullptr, ZSTD_freeDCtx};
};

ZstdContexts& zstd_contexts() {
  thread_local ZstdContexts contexts;
  return contexts;
}

constexpr std::size_t kKeepContextBelow = std::size_t{1} << 20;

// A zstd frame's magic number, and in its frame header descriptor (the byte
// after it) the content checksum flag and the dictionary id field.
constexpr std::uint32_t kZstdMagic = 0xFD2FB528;
constexpr unsigned kChecksumFlag = 0x04;
constexpr unsigned kDictionaryIdFlags = 0x03;

// Compresses out[from, end) in place if that makes it smaller.
bool compress_tail(std::string& out, std::size_t from, int level) {
  auto& ctx = zstd_contexts().compress;
  if (!ctx) {
    ctx.reset(ZSTD_createCCtx());
    if (!ctx) throw std::bad_alloc();
  }
  const std::size_t size = out.size() - from;
  // The frame is written into this thread's buffer, reused from store to
  // store (a new one each time costs an allocation and its page faults).
  thread_local std::string packed;
  if (packed.size() < ZSTD_compressBound(size)) packed.resize(ZSTD_compressBound(size));
  ZSTD_CCtx_reset(ctx.get(), ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_contentSizeFlag, 1);
  // A checksum of the content: a corrupt frame can decompress to the right
  // size with wrong bytes, which the reader would otherwise serve.
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_checksumFlag, 1);
  const std::size_t n =
      ZSTD_compress2(ctx.get(), packed.data(), packed.size(), out.data() + from, size);
  // A context keeps a workspace sized by its largest input: a thread that
  // compressed a large value gives it back rather than keep it.
  if (size > kKeepContextBelow) ctx.reset();
  struct Shrink {  // nor a buffer grown as large
    std::size_t size;
    ~Shrink() {
      if (size > kKeepContextBelow) std::string().swap(packed);
    }
  } shrink{size};
  if (ZSTD_isError(n) || n >= size) return false;  // stored as it is
  out.resize(from);
  out.append(packed.data(), n);
  return true;
}

}  // namespace

const char* to_string(EnvelopeError e) noexcept {
  switch (e) {
    case EnvelopeError::foreign_flags:
      return "item flags are not dogpile's envelope flags";
    case EnvelopeError::truncated:
      return "item is truncated";
    case EnvelopeError::bad_magic:
      return "item does not start with dogpile's envelope magic";
    case EnvelopeError::wrong_version:
      return "item has another envelope format version";
    case EnvelopeError::bad_header:
      return "envelope header is malformed";
    case EnvelopeError::trailing_bytes:
      return "item is longer than its envelope says";
    case EnvelopeError::old_version:
      return "item was written by dogpile 0.1 (envelope version 1); the next creation replaces it";
    case EnvelopeError::key_mismatch:
      return "item was stored under another key (a misrouted reply, or a connection shared "
             "across processes)";
    case EnvelopeError::bad_compression:
      return "item's compressed value does not decompress as its zstd frame declares";
    case EnvelopeError::too_large:
      return "item's compressed value would decompress beyond Compression::max_size";
  }
  return "unknown envelope error";
}

const char* code_of(EnvelopeError e) noexcept {
  switch (e) {
    case EnvelopeError::foreign_flags:
      return "foreign_flags";
    case EnvelopeError::truncated:
      return "truncated";
    case EnvelopeError::bad_magic:
      return "bad_magic";
    case EnvelopeError::wrong_version:
      return "wrong_version";
    case EnvelopeError::bad_header:
      return "bad_header";
    case EnvelopeError::trailing_bytes:
      return "trailing_bytes";
    case EnvelopeError::old_version:
      return "old_version";
    case EnvelopeError::key_mismatch:
      return "key_mismatch";
    case EnvelopeError::bad_compression:
      return "bad_compression";
    case EnvelopeError::too_large:
      return "too_large";
  }
  return "unknown";
}

void begin_envelope(std::string& out) { out.assign(kEnvelopeHeaderSize, '\0'); }

PayloadEncoding finish_envelope(std::string& out, TimePoint created_at,
                                std::chrono::microseconds creation_duration,
                                std::uint64_t key_check, EnvelopeKind kind,
                                PayloadCompression compression) {
  auto encoding = PayloadEncoding::plain;
  if (compression.threshold > 0 && out.size() - kEnvelopeHeaderSize >= compression.threshold &&
      compress_tail(out, kEnvelopeHeaderSize, compression.level)) {
    encoding = PayloadEncoding::zstd;
  }
  const std::size_t payload = out.size() - kEnvelopeHeaderSize;
  if (payload > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("dogpile: a cached value must be smaller than 4 GiB");
  }
  // Times before the epoch are not representable; they are stored as the epoch.
  const auto micros = std::max<std::int64_t>(0, micros_since_epoch(created_at));
  const auto took = std::clamp<std::int64_t>(creation_duration.count(), 0,
                                             std::numeric_limits<std::uint32_t>::max());
  char* h = out.data();
  std::memcpy(h, kMagic, 4);
  h[4] = static_cast<char>(kEnvelopeVersion);
  h[5] = static_cast<char>(kEnvelopeHeaderSize);
  h[6] = static_cast<char>(kind);
  h[7] = static_cast<char>(encoding);
  put_le(h + 8, static_cast<std::uint64_t>(micros), 8);
  put_le(h + 16, static_cast<std::uint64_t>(took), 4);
  put_le(h + 20, payload, 4);
  put_le(h + 24, key_check, 8);
  return encoding;
}

DecodeResult decode_envelope(std::string_view bytes, std::uint32_t flags) noexcept {
  auto fail = [](EnvelopeError e) { return DecodeResult{std::nullopt, e}; };
  if (flags == kEnvelopeFlagsV1) return fail(EnvelopeError::old_version);
  if (flags != kEnvelopeFlags) return fail(EnvelopeError::foreign_flags);
  if (bytes.size() < 4) return fail(EnvelopeError::truncated);
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) return fail(EnvelopeError::bad_magic);
  if (bytes.size() < kEnvelopeHeaderSize) return fail(EnvelopeError::truncated);
  const char* h = bytes.data();
  if (static_cast<std::uint8_t>(h[4]) != kEnvelopeVersion) {
    return fail(EnvelopeError::wrong_version);
  }
  const auto kind = static_cast<std::uint8_t>(h[6]);
  const auto encoding = static_cast<std::uint8_t>(h[7]);
  if (static_cast<std::uint8_t>(h[5]) != kEnvelopeHeaderSize ||
      encoding > static_cast<std::uint8_t>(PayloadEncoding::zstd) ||
      kind > static_cast<std::uint8_t>(EnvelopeKind::stale)) {
    return fail(EnvelopeError::bad_header);
  }
  const std::uint64_t payload = get_le(h + 20, 4);
  const std::size_t available = bytes.size() - kEnvelopeHeaderSize;
  if (payload > available) return fail(EnvelopeError::truncated);
  if (payload < available) return fail(EnvelopeError::trailing_bytes);
  // created_at must convert to TimePoint without overflow (nanosecond
  // ticks reach the year 2262); a value outside that range is corrupt.
  const std::uint64_t raw_micros = get_le(h + 8, 8);
  if (raw_micros > kMaxMicros) return fail(EnvelopeError::bad_header);
  const auto micros = static_cast<std::int64_t>(raw_micros);
  const auto took = static_cast<std::int64_t>(get_le(h + 16, 4));
  if (kind == static_cast<std::uint8_t>(EnvelopeKind::tombstone) &&
      (payload != 0 || encoding != 0)) {
    return fail(EnvelopeError::bad_header);
  }
  EnvelopeView view{
      TimePoint(std::chrono::duration_cast<Duration>(std::chrono::microseconds(micros))),
      std::chrono::microseconds(took),
      bytes.substr(kEnvelopeHeaderSize),
      static_cast<EnvelopeKind>(kind),
      get_le(h + 24, 8),
      static_cast<PayloadEncoding>(encoding)};
  return DecodeResult{view, {}};
}

DecodeResult decode_envelope(std::string_view bytes, std::uint32_t flags,
                             std::uint64_t expected_key_check) noexcept {
  DecodeResult result = decode_envelope(bytes, flags);
  if (result.envelope && result.envelope->key_check != expected_key_check) {
    return DecodeResult{std::nullopt, EnvelopeError::key_mismatch};
  }
  return result;
}

// The most content a zstd frame's blocks can produce, read from their
// headers (RFC 8878 3.1.1): a raw or RLE block says its size, a compressed
// one makes at most 128 KiB. Nothing is decompressed; 0 if the frame does not
// walk to its end.
std::uint64_t frame_content_bound(std::string_view frame) noexcept {
  if (frame.size() < 5) return 0;
  const auto descriptor = static_cast<unsigned char>(frame[4]);
  const unsigned content_size_flag = descriptor >> 6;
  const bool single_segment = (descriptor & 0x20) != 0;
  static constexpr std::size_t kDictionaryIdBytes[] = {0, 1, 2, 4};
  static constexpr std::size_t kContentSizeBytes[] = {0, 2, 4, 8};
  std::size_t at =
      5 + (single_segment ? 0 : 1) + kDictionaryIdBytes[descriptor & 3] +
      (content_size_flag == 0 && single_segment ? 1 : kContentSizeBytes[content_size_flag]);
  constexpr std::uint64_t kMaxBlockContent = std::uint64_t{1} << 17;
  std::uint64_t bound = 0;
  for (;;) {
    if (frame.size() - std::min(at, frame.size()) < 3) return 0;
    const auto header = static_cast<std::uint32_t>(get_le(frame.data() + at, 3));
    at += 3;
    const std::uint32_t size = header >> 3;
    switch ((header >> 1) & 3) {
      case 0:  // raw
        bound += size;
        at += size;
        break;
      case 1:  // RLE: one byte, repeated
        bound += size;
        at += 1;
        break;
      case 2:  // compressed
        bound += kMaxBlockContent;
        at += size;
        break;
      default:
        return 0;
    }
    if (at > frame.size()) return 0;
    if ((header & 1) != 0) return bound;  // the last block
  }
}

std::optional<std::string_view> payload_bytes(const EnvelopeView& envelope, std::string& scratch,
                                              std::size_t max_size, EnvelopeError& error) {
  if (envelope.encoding == PayloadEncoding::plain) return envelope.payload;
  const std::string_view packed = envelope.payload;
  // Exactly one frame (not a skippable one, no dictionary), which declares
  // its content size and carries a checksum of it.
  if (packed.size() < 5 || get_le(packed.data(), 4) != kZstdMagic ||
      (static_cast<unsigned char>(packed[4]) & kChecksumFlag) == 0 ||
      (static_cast<unsigned char>(packed[4]) & kDictionaryIdFlags) != 0) {
    error = EnvelopeError::bad_compression;
    return std::nullopt;
  }
  const unsigned long long declared = ZSTD_getFrameContentSize(packed.data(), packed.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN ||
      ZSTD_findFrameCompressedSize(packed.data(), packed.size()) != packed.size()) {
    error = EnvelopeError::bad_compression;
    return std::nullopt;
  }
  if (declared > max_size) {
    error = EnvelopeError::too_large;
    return std::nullopt;
  }
  // A small frame that declares much more than its blocks can make is refused
  // before anything is allocated for it (26 bytes declaring 63 MiB would
  // otherwise cost 63 MiB, zero-filled, on every read).
  if (declared > frame_content_bound(packed)) {
    error = EnvelopeError::bad_compression;
    return std::nullopt;
  }
  auto& ctx = zstd_contexts().decompress;
  if (!ctx) {
    ctx.reset(ZSTD_createDCtx());
    if (!ctx) throw std::bad_alloc();
  }
  scratch.resize(static_cast<std::size_t>(declared));
  const std::size_t n =
      ZSTD_decompressDCtx(ctx.get(), scratch.data(), scratch.size(), packed.data(), packed.size());
  if (ZSTD_isError(n) || n != declared) {
    error = EnvelopeError::bad_compression;
    return std::nullopt;
  }
  return std::string_view(scratch);
}

void mark_envelope_stale(std::string& bytes) noexcept {
  if (bytes.size() >= kEnvelopeHeaderSize) bytes[6] = static_cast<char>(EnvelopeKind::stale);
}

}  // namespace dogpile::detail
