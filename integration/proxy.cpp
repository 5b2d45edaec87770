// SPDX-License-Identifier: MIT
#include "proxy.hpp"

#include "memcached_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace dogpile::test {
namespace {

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

long number(const std::string& s) {
  long v = -1;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

bool send_all(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// One message at the front of `buffer`: its first line, and how many bytes
// of data follow the line (then "\r\n"); nullopt if it is not all there.
struct Message {
  std::string line;
  std::size_t total = 0;  // line + "\r\n" + data (+ "\r\n")
};
std::optional<Message> next_message(const std::string& buffer, bool request) {
  const auto end = buffer.find("\r\n");
  if (end == std::string::npos) return std::nullopt;
  Message m;
  m.line = buffer.substr(0, end);
  m.total = end + 2;
  const auto w = words(m.line);
  long data = -1;
  if (!w.empty()) {
    const std::string& c = w[0];
    if (request) {
      if ((c == "set" || c == "add" || c == "replace" || c == "append" || c == "prepend" ||
           c == "cas") &&
          w.size() >= 5) {
        data = number(w[4]);
      } else if (c == "ms" && w.size() >= 3) {
        data = number(w[2]);
      }
    } else {
      if (c == "VALUE" && w.size() >= 4) {
        data = number(w[3]);
      } else if (c == "VA" && w.size() >= 2) {
        data = number(w[1]);
      }
    }
  }
  if (data >= 0) m.total += static_cast<std::size_t>(data) + 2;
  if (buffer.size() < m.total) return std::nullopt;
  return m;
}

}  // namespace

Proxy::Proxy(int upstream, RewriteRequest request, RewriteReply reply)
    : upstream_(upstream), rewrite_request_(std::move(request)), rewrite_reply_(std::move(reply)) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener_ < 0) throw std::runtime_error("proxy: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener_, 64) != 0 ||
      ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener_);
    throw std::runtime_error("proxy: cannot listen");
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

Proxy::~Proxy() {
  stopping_ = true;
  ::shutdown(listener_, SHUT_RDWR);
  ::close(listener_);
  acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : sockets_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : workers_) t.join();
}

std::string Proxy::options() const { return "--SERVER=127.0.0.1:" + std::to_string(port_); }

std::map<std::string, int> Proxy::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

int Proxy::requests() const {
  std::lock_guard lock(mutex_);
  int n = 0;
  for (const auto& [command, count] : counts_) n += count;
  return n;
}

int Proxy::round_trips() const {
  std::lock_guard lock(mutex_);
  return round_trips_;
}

int Proxy::keys_read() const {
  std::lock_guard lock(mutex_);
  return keys_read_;
}

void Proxy::reset_counts() {
  std::lock_guard lock(mutex_);
  counts_.clear();
  keys_read_ = 0;
  round_trips_ = 0;
}

void Proxy::count(const std::string& command, int keys, bool starts_round_trip) {
  if (command == "stats" || command == "version" || command == "quit") return;
  std::lock_guard lock(mutex_);
  ++counts_[command];
  keys_read_ += keys;
  if (starts_round_trip) ++round_trips_;
}

void Proxy::accept_loop() {
  while (!stopping_) {
    const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (stopping_) return;
      continue;
    }
    const int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard lock(mutex_);
    sockets_.push_back(client);
    workers_.emplace_back([this, client] { serve(client); });
  }
}

void Proxy::serve(int client) {
  const int server = connect_loopback(upstream_);
  if (server < 0) {
    {
      std::lock_guard lock(mutex_);
      std::erase(sockets_, client);
    }
    ::close(client);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    sockets_.push_back(server);
  }
  std::string from_client, from_server;
  char buffer[65536];
  bool open = true;
  bool first = true;     // the connection's first request: the meta transport's handshake
  bool answered = true;  // the last message was a reply: the next request starts a round trip
  while (open && !stopping_) {
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    if (::poll(fds, 2, 200) < 0) break;
    for (int i = 0; i < 2 && open; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::recv(fds[i].fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        open = false;
        break;
      }
      (i == 0 ? from_client : from_server).append(buffer, static_cast<std::size_t>(n));
    }
    while (auto m = next_message(from_client, true)) {
      std::string bytes = from_client.substr(0, m->total);
      from_client.erase(0, m->total);
      const auto w = words(m->line);
      const std::string command = w.empty() ? "" : w[0];
      const bool retrieval = command == "get" || command == "gets" || command == "gat" ||
                             command == "gats" || command == "mg";
      const bool handshake = first && command == "mn";
      first = false;
      if (!handshake) {
        count(command, retrieval ? static_cast<int>(command == "mg" ? 1 : w.size() - 1) : 0,
              answered);
        answered = false;
      }
      if (rewrite_request_) {
        bytes = rewrite_request_(m->line) + "\r\n" + bytes.substr(m->line.size() + 2);
      }
      if (!send_all(server, bytes)) open = false;
    }
    while (auto m = next_message(from_server, false)) {
      std::string bytes = from_server.substr(0, m->total);
      from_server.erase(0, m->total);
      if (rewrite_reply_)
        bytes = rewrite_reply_(m->line) + "\r\n" + bytes.substr(m->line.size() + 2);
      answered = true;
      if (!send_all(client, bytes)) open = false;
    }
  }
  {
    // Forgotten before they are closed: their numbers may be reused at once.
    std::lock_guard lock(mutex_);
    std::erase(sockets_, server);
    std::erase(sockets_, client);
  }
  ::close(server);
  ::close(client);
}

}  // namespace dogpile::test
