// SPDX-License-Identifier: MIT
// A TCP service on asio whose handler is a coroutine: each request line
// "user <id>" is answered with that user's profile, through
// co_await region.async_get_or_create. The profile's load is itself a
// coroutine (a 200 ms timer standing in for a database call): no thread is
// held while it runs, nor while a herd of connections waits for it.
//
//   async_server [--port N] [--memcached "--SERVER=host:port"] [--clients N]
//
// --port: where to listen on 127.0.0.1 (default 0: a free port, printed).
// --memcached: the region's memcached (meta protocol); default in-process.
// --clients N: also run N clients of its own, all at once, all asking for
//   user 7 over TCP; print what they got and how many loads it took, then
//   exit (0 if one load served them all).
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <dogpile/asio.hpp>
#include <dogpile/dogpile.hpp>

#include <unistd.h>
#include <atomic>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

std::atomic<int> loads{0};

// The slow call the cache protects, as a coroutine.
asio::awaitable<std::string> load_profile(int id) {
  asio::steady_timer db(co_await asio::this_coro::executor, 200ms);
  co_await db.async_wait(asio::use_awaitable);
  loads.fetch_add(1);
  co_return "profile of user " + std::to_string(id);
}

// One connection: a line in, a line out, until the client closes.
asio::awaitable<void> serve(tcp::socket socket, dogpile::CacheRegion& region) {
  std::string buffer;
  for (;;) {
    std::error_code error;
    const std::size_t n =
        co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n',
                                        asio::redirect_error(asio::use_awaitable, error));
    if (error) co_return;
    const std::string_view line = std::string_view(buffer).substr(0, n - 1);
    int id = 0;
    std::string reply;
    if (line.starts_with("user ") &&
        std::from_chars(line.data() + 5, line.data() + line.size(), id).ec == std::errc()) {
      reply = co_await region.async_get_or_create(
          "user:" + std::to_string(id), [id] { return load_profile(id); }, asio::use_awaitable);
    } else {
      reply = "error: ask \"user <id>\"";
    }
    buffer.erase(0, n);
    reply += '\n';
    co_await asio::async_write(socket, asio::buffer(reply), asio::use_awaitable);
  }
}

asio::awaitable<void> listen(tcp::acceptor& acceptor, dogpile::CacheRegion& region) {
  for (;;) {
    std::error_code error;
    tcp::socket socket =
        co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
    if (error) co_return;  // closed
    asio::co_spawn(acceptor.get_executor(), serve(std::move(socket), region), asio::detached);
  }
}

// A client: asks for user 7 once.
asio::awaitable<void> ask(tcp::endpoint at, std::atomic<int>& right, std::atomic<int>& done) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(at, asio::use_awaitable);
  co_await asio::async_write(socket, asio::buffer(std::string_view("user 7\n")),
                             asio::use_awaitable);
  std::string reply;
  co_await asio::async_read_until(socket, asio::dynamic_buffer(reply), '\n', asio::use_awaitable);
  if (reply == "profile of user 7\n") right.fetch_add(1);
  done.fetch_add(1);
}

}  // namespace

int main(int argc, char** argv) {
  unsigned short port = 0;
  std::string servers;
  int clients = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view arg = argv[i];
    if (arg == "--port") {
      port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    } else if (arg == "--memcached") {
      servers = argv[i + 1];
    } else if (arg == "--clients") {
      clients = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--port N] [--memcached OPTIONS] [--clients N]\n", argv[0]);
      return 2;
    }
  }
  std::shared_ptr<dogpile::Backend> backend;
  if (servers.empty()) {
    backend = std::make_shared<dogpile::MemoryBackend>();
  } else {
    backend = std::make_shared<dogpile::MemcachedMetaBackend>(servers);
  }
  dogpile::CacheRegion region(backend,
                              {.expiration = std::chrono::minutes(5),
                               .key_prefix = "async_server:" + std::to_string(::getpid()) + ":"});

  asio::io_context io(1);  // one I/O thread: this one
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  const tcp::endpoint at = acceptor.local_endpoint();
  std::printf("listening on 127.0.0.1:%u (%s)\n", at.port(),
              servers.empty() ? "in-process cache" : servers.c_str());
  std::fflush(stdout);
  asio::co_spawn(io, listen(acceptor, region), asio::detached);

  if (clients <= 0) {
    io.run();
    return 0;
  }
  std::atomic<int> right{0};
  std::atomic<int> done{0};
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < clients; ++i) {
    asio::co_spawn(io, ask(at, right, done), [&](std::exception_ptr e) {
      if (e) done.fetch_add(1);  // a failed client counts as done, not right
      if (done.load() == clients) acceptor.close();
    });
  }
  io.run();
  const auto took =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started);
  std::printf("%d requests for user 7 over TCP, %d right, %d load, %.0f ms, one I/O thread\n",
              clients, right.load(), loads.load(), took.count());
  return right.load() == clients && loads.load() == 1 ? 0 : 1;
}
