// SPDX-License-Identifier: MIT
// libFuzzer target: the decoders of what dogpile reads back from a server —
// the envelope, the lock item and the invalidation record. Any bytes, under
// any flags: decoding never reads out of bounds (ASan) or overflows (UBSan),
// a compressed payload decompresses within its bound or is refused, what
// decodes re-encodes (plain and compressed) to the same fields, and a key
// check that does not match is always refused.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "format/envelope.hpp"
#include "format/invalidation_times.hpp"
#include "format/lock_item.hpp"

using namespace dogpile::detail;

namespace {

// The most a zstd payload may decompress to here (Compression::max_size).
constexpr std::size_t kMaxSize = std::size_t{1} << 20;

std::uint64_t check_in(std::string_view bytes, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 8; i-- > 0;) {
    v = (v << 8) | (at + i < bytes.size() ? static_cast<unsigned char>(bytes[at + i]) : 0);
  }
  return v;
}

void envelope(std::string_view bytes, std::uint32_t flags) {
  const DecodeResult r = decode_envelope(bytes, flags);
  if (!r.envelope) return;
  const EnvelopeView& e = *r.envelope;
  // The payload lies inside the input, right after the header.
  if (e.payload.data() != bytes.data() + kEnvelopeHeaderSize) std::abort();
  if (e.payload.size() + kEnvelopeHeaderSize != bytes.size()) std::abort();
  // Bound to its key: any other check is refused.
  if (decode_envelope(bytes, flags, e.key_check).envelope == std::nullopt) std::abort();
  if (decode_envelope(bytes, flags, e.key_check ^ 1).error != EnvelopeError::key_mismatch) {
    std::abort();
  }
  // The codec's bytes: a zstd payload decompresses within the bound, to
  // exactly the size its frame declares, or is refused.
  std::string scratch;
  EnvelopeError error{};
  const auto bytes_out = payload_bytes(e, scratch, kMaxSize, error);
  if (!bytes_out) {
    if (e.encoding == PayloadEncoding::plain) std::abort();  // nothing to refuse
    if (error != EnvelopeError::bad_compression && error != EnvelopeError::too_large) std::abort();
    return;
  }
  if (bytes_out->size() > kMaxSize) std::abort();
  // What decompresses never exceeds what the frame's blocks could make, and
  // nothing larger was allocated for it.
  if (e.encoding != PayloadEncoding::plain && bytes_out->size() > frame_content_bound(e.payload)) {
    std::abort();
  }
  // Round trip, plain and compressed: the same fields and codec bytes.
  for (const std::size_t threshold : {std::size_t{0}, std::size_t{1}}) {
    std::string again;
    begin_envelope(again);
    again.append(*bytes_out);
    const PayloadEncoding encoding = finish_envelope(again, e.created_at, e.creation_duration,
                                                     e.key_check, e.kind, {threshold, 1});
    if (threshold == 0 && encoding != PayloadEncoding::plain) std::abort();
    const DecodeResult r2 = decode_envelope(again, kEnvelopeFlags);
    if (!r2.envelope || r2.envelope->created_at != e.created_at ||
        r2.envelope->creation_duration != e.creation_duration || r2.envelope->kind != e.kind ||
        r2.envelope->key_check != e.key_check || r2.envelope->encoding != encoding) {
      std::abort();
    }
    std::string scratch2;
    const auto bytes_again = payload_bytes(*r2.envelope, scratch2, kMaxSize, error);
    if (!bytes_again || *bytes_again != *bytes_out) std::abort();
  }
}

void lock_item(std::string_view bytes, std::uint32_t flags) {
  const std::uint64_t check = check_in(bytes, 48);
  const auto lock = decode_lock_item(bytes, flags, check);
  if (!lock) return;
  if (decode_lock_item(bytes, flags, check ^ 1)) std::abort();
  if (encode_lock_item(*lock) != bytes) std::abort();
}

void invalidation_record(std::string_view bytes, std::uint32_t flags) {
  const std::uint64_t check = check_in(bytes, 16);
  const dogpile::Item item{std::string(bytes), flags};
  const auto times = InvalidationTimes::decode(item, check);
  if (!times) return;
  if (InvalidationTimes::decode(item, check ^ 1)) std::abort();
  if (times->encode(check) != item) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The first byte picks the decoder and the flags: mostly dogpile's, sometimes foreign.
  if (size == 0) return 0;
  const std::uint8_t pick = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (pick % 3) {
    case 0:
      envelope(bytes, pick % 8 == 0 ? pick : (pick % 7 == 1 ? kEnvelopeFlagsV1 : kEnvelopeFlags));
      break;
    case 1:
      lock_item(bytes, pick % 8 == 1 ? pick : kLockFlags);
      break;
    default:
      invalidation_record(bytes, pick % 8 == 2 ? pick : InvalidationTimes::kFlags);
      break;
  }
  return 0;
}
