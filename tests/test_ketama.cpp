// SPDX-License-Identifier: MIT
// MD5 and ketama placement (internal). Agreement with libmemcached's own
// placement, key for key, is checked in integration/test_placement.cpp.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include "transport/ketama.hpp"
#include "transport/md5.hpp"

using dogpile::detail::KetamaRing;
using dogpile::detail::md5;
using dogpile::detail::RingServer;

namespace {

std::string hex(const dogpile::detail::Md5Digest& d) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (auto b : d) {
    out += kDigits[b >> 4];
    out += kDigits[b & 0xf];
  }
  return out;
}

}  // namespace

TEST_SUITE("ketama") {
  TEST_CASE("MD5 gives the RFC 1321 test suite's digests") {
    CHECK(hex(md5("")) == "d41d8cd98f00b204e9800998ecf8427e");
    CHECK(hex(md5("a")) == "0cc175b9c0f1b6a831c399e269772661");
    CHECK(hex(md5("abc")) == "900150983cd24fb0d6963f7d28e17f72");
    CHECK(hex(md5("message digest")) == "f96b697d7cb7938d525a2f31aaf161d0");
    CHECK(hex(md5("abcdefghijklmnopqrstuvwxyz")) == "c3fcd3d76192e4007dfb496cca67e13b");
    CHECK(hex(md5("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")) ==
          "d174ab98d277d9f5a5611c2c9f419d9f");
    CHECK(hex(md5("1234567890123456789012345678901234567890123456789012345678901234567890123456"
                  "7890")) == "57edf4a22be3c955ac49da2e2107b67a");
  }

  TEST_CASE("a key's hash is the first little-endian word of its MD5") {
    CHECK(KetamaRing::key_hash("key0") == 0xf202f421u);
    CHECK(KetamaRing::key_hash("key1") == 0x94d6adc2u);
    CHECK(KetamaRing::key_hash("key3") == 0x85573136u);
  }

  TEST_CASE("160 points per server of equal weight, float rounding as libmemcached's") {
    const std::vector<RingServer> three = {
        {"127.0.0.1", 11211, 1}, {"127.0.0.1", 11212, 1}, {"127.0.0.1", 11213, 1}};
    CHECK(KetamaRing(three).points() == 480);
    // Weights 1, 2, 3, 4, 15: 28 + 60 + 92 + 124 + 480 points (exactly: 32, 64, 96, 128, 480).
    std::vector<RingServer> weighted;
    for (std::uint32_t w : {1u, 2u, 3u, 4u, 15u}) {
      weighted.push_back({"10.0.0.1", static_cast<std::uint16_t>(11300 + w), w});
    }
    CHECK(KetamaRing(weighted).points() == 784);
  }

  TEST_CASE("keys spread over every server, and a dead server's keys alone move") {
    const std::vector<RingServer> servers = {
        {"10.0.0.1", 11211, 1}, {"10.0.0.2", 11211, 1}, {"10.0.0.3", 11211, 1}};
    const KetamaRing all(servers);
    const bool live[] = {true, false, true};
    const KetamaRing two(servers, live);
    std::map<std::size_t, int> counts;
    int moved_from_live = 0;
    for (int i = 0; i < 30000; ++i) {
      const std::string key = "key" + std::to_string(i);
      const auto owner = all.server_for(key);
      ++counts[owner];
      const auto now = two.server_for(key);
      CHECK(now != 1);
      if (owner != 1 && now != owner) ++moved_from_live;
    }
    for (const auto& [server, n] : counts) CHECK(n > 7000);  // about a third each
    CHECK(moved_from_live == 0);
    const bool none[] = {false, false, false};
    CHECK(KetamaRing(servers, none).empty());
  }
}
