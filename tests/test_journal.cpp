// SPDX-License-Identifier: MIT
// The journal of what a server missed (transport/journal.hpp): each key
// kept once, a bound that drops and counts, keys that count as waiting
// until their replay ends; and the replay's requests and the replies it
// takes.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "transport/journal.hpp"

using dogpile::detail::wire::Journal;
using dogpile::detail::wire::Malformed;
using dogpile::detail::wire::ReplayPipeline;

TEST_CASE("a journal keeps each key once, up to its bound, and counts keys until replayed") {
  Journal journal(3);
  using Kept = Journal::Kept;
  CHECK(journal.keep("a") == Kept::added);
  CHECK(journal.keep("b") == Kept::added);
  CHECK(journal.keep("a") == Kept::already);  // newest per key: still one
  CHECK(journal.size() == 2);
  CHECK(journal.keep("c") == Kept::added);
  CHECK(journal.keep("d") == Kept::full);
  CHECK(journal.keep("c") == Kept::already);  // a key it holds is no new entry
  CHECK(journal.size() == 3);

  auto taken = journal.take();
  CHECK(taken.size() == 3);
  CHECK(journal.size() == 3);               // being replayed: still waiting
  CHECK(journal.keep("d") == Kept::added);  // kept meanwhile
  // The replay failed: back they go, as many as fit beside "d".
  CHECK(journal.put_back(taken) == 1);
  CHECK(journal.size() == 3);

  taken = journal.take();
  journal.replayed();
  CHECK(journal.size() == 0);
  CHECK(journal.take().empty());
}

TEST_CASE("a replay deletes quietly in chunks, each ended by a request that is always answered") {
  std::vector<std::string> keys;
  for (int i = 0; i < 250; ++i) keys.push_back("k" + std::to_string(i));
  for (const bool meta : {true, false}) {
    CAPTURE(meta);
    ReplayPipeline replay(keys, meta);
    std::string out;
    dogpile::detail::wire::Connection none(-1);  // produce() only writes requests
    std::size_t chunks = 0;
    while (replay.produce(out, none) == 1) ++chunks;
    CHECK(chunks == 3);  // 100 + 100 + 50
    const std::string del = meta ? "md k0 q\r\n" : "delete k0 noreply\r\n";
    CHECK(out.starts_with(del));
    const std::string end = meta ? "mn\r\n" : "version\r\n";
    std::size_t ends = 0;
    for (std::size_t at = out.find(end); at != std::string::npos; at = out.find(end, at + 1)) {
      ++ends;
    }
    CHECK(ends == 3);
    std::size_t finished = 0;
    if (meta) {
      // A quiet md still says NF of a key that was not there.
      CHECK(replay.consume("NF\r\nMN\r\n", 0, finished) == 4);
      CHECK(finished == 0);
      CHECK(replay.consume("MN\r\n", 0, finished) == 4);
      CHECK(finished == 1);
      CHECK_THROWS_AS(replay.consume("SERVER_ERROR out of memory\r\n", 0, finished), Malformed);
    } else {
      CHECK(replay.consume("VERSION 1.6.18\r\n", 0, finished) == 16);
      CHECK(finished == 1);
      CHECK_THROWS_AS(replay.consume("ERROR\r\n", 0, finished), Malformed);
    }
    CHECK(replay.consume("MN", 0, finished) == 0);  // not a whole line yet
  }
}
