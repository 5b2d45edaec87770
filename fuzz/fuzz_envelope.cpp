// libFuzzer target: the envelope decoder. Any bytes, under any flags: decoding
// never reads out of bounds (ASan) or overflows (UBSan), and what decodes
// re-encodes to the same header fields and payload.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "dogpile/detail/envelope.hpp"

using namespace dogpile::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The first byte picks the flags: mostly dogpile's, sometimes foreign.
  std::uint32_t flags = kEnvelopeFlags;
  if (size > 0) {
    if (data[0] % 8 == 0) flags = data[0];
    ++data;
    --size;
  }
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const DecodeResult r = decode_envelope(bytes, flags);
  if (!r.envelope) return 0;
  const EnvelopeView& e = *r.envelope;
  // The payload lies inside the input, right after the header.
  if (e.payload.data() != bytes.data() + kEnvelopeHeaderSize) std::abort();
  if (e.payload.size() + kEnvelopeHeaderSize != bytes.size()) std::abort();
  // Round trip.
  std::string again;
  begin_envelope(again);
  again.append(e.payload);
  finish_envelope(again, e.created_at, e.creation_duration);
  const DecodeResult r2 = decode_envelope(again, kEnvelopeFlags);
  if (!r2.envelope || r2.envelope->created_at != e.created_at ||
      r2.envelope->creation_duration != e.creation_duration || r2.envelope->payload != e.payload) {
    std::abort();
  }
  return 0;
}
