// SPDX-License-Identifier: MIT
#include "memcached_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fstream>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "dogpile/memcached.hpp"
#include "dogpile/memcached_meta.hpp"

namespace dogpile::test {

Transport transport() {
  const char* value = std::getenv("DOGPILE_TEST_TRANSPORT");
  return value != nullptr && std::string_view(value) == "meta" ? Transport::meta
                                                               : Transport::classic;
}

std::shared_ptr<Backend> memcached(std::string_view options, bool auto_eject) {
  if (transport() == Transport::meta) {
    return std::make_shared<MemcachedMetaBackend>(
        MemcachedMetaBackend::Options{std::string(options), auto_eject});
  }
  MemcachedBackend::Options o;
  o.config = std::string(options);
  o.auto_eject = auto_eject;
  return std::make_shared<MemcachedBackend>(std::move(o));
}

long peak_rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

std::shared_ptr<Backend> backend_for(const MemcachedServer& server) {
  return memcached(server.options());
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

namespace {

bool reply_complete(const std::string& reply) {
  static const char* const endings[] = {
      "END\r\n",     "STORED\r\n", "NOT_STORED\r\n", "EXISTS\r\n",  "NOT_FOUND\r\n",
      "DELETED\r\n", "ERROR\r\n",  "OK\r\n",         "TOUCHED\r\n", "MN\r\n"};
  for (const char* e : endings) {
    const std::size_t n = std::strlen(e);
    if (reply.size() >= n && reply.compare(reply.size() - n, n, e) == 0) return true;
  }
  // CLIENT_ERROR / SERVER_ERROR lines
  const auto last = reply.rfind("_ERROR ");
  return last != std::string::npos && reply.size() >= 2 && reply.ends_with("\r\n");
}

}  // namespace

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

MemcachedServer::MemcachedServer() : MemcachedServer(Options{}) {}

MemcachedServer::MemcachedServer(Options options) : options_(std::move(options)) {
  for (int attempt = 0;; ++attempt) {
    port_ = free_port();
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      if (attempt == 4) throw;  // another process took the port each time
    }
  }
}

MemcachedServer::~MemcachedServer() {
  // SIGKILL: memcached's clean shutdown waits for its next clock tick (up to
  // a second), and a test server has nothing to save.
  kill();
}

std::string MemcachedServer::binary() {
  for (const char* path :
       {"/usr/bin/memcached", "/usr/local/bin/memcached", "/usr/sbin/memcached"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return {};
}

std::string MemcachedServer::options() const {
  return "--SERVER=127.0.0.1:" + std::to_string(port_);
}

void MemcachedServer::start() {
  const std::string bin = binary();
  if (bin.empty()) {
    throw std::runtime_error("memcached is not installed (scripts/setup.sh installs it)");
  }
  std::vector<std::string> args = {bin,
                                   "-l",
                                   "127.0.0.1",
                                   "-p",
                                   std::to_string(port_),
                                   "-U",
                                   "0",
                                   "-m",
                                   std::to_string(options_.memory_mb),
                                   "-t",
                                   "2",
                                   "-c",
                                   "4096"};
  if (!options_.max_item_size.empty()) {
    args.push_back("-I");
    args.push_back(options_.max_item_size);
  }
  if (::geteuid() == 0) {  // memcached refuses to run as root
    args.push_back("-u");
    args.push_back("nobody");
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // The server dies with the test process, however that ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, STDIN_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  pid_ = pid;
  // Wait until it accepts connections (or exits: the port was taken).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("memcached exited at start on port " + std::to_string(port_));
    }
    const int fd = connect_loopback(port_);
    if (fd >= 0) {
      ::close(fd);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill();
  throw std::runtime_error("memcached did not accept connections on port " + std::to_string(port_));
}

void MemcachedServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void MemcachedServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

// Both wait until the signal has taken effect: a request sent after pause()
// returns is never answered before resume().
void MemcachedServer::pause() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGSTOP);
  int status = 0;
  while (::waitpid(pid_, &status, WUNTRACED) < 0 && errno == EINTR) {
  }
}

void MemcachedServer::resume() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);
  int status = 0;
  while (::waitpid(pid_, &status, WCONTINUED) < 0 && errno == EINTR) {
  }
}

void MemcachedServer::restart() {
  if (pid_ > 0) throw std::logic_error("restart: the server is running");
  // The port may linger in TIME_WAIT for a moment; memcached sets SO_REUSEADDR.
  for (int attempt = 0;; ++attempt) {
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      if (attempt == 20) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

std::string MemcachedServer::raw(std::string_view request) const {
  const int fd = connect_loopback(port_);
  if (fd < 0) throw std::runtime_error("cannot connect to memcached");
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error("send to memcached failed");
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string reply;
  char buf[4096];
  while (!reply_complete(reply)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return reply;
}

void MemcachedServer::raw_set(std::string_view key, std::string_view data, std::uint32_t flags,
                              int ttl) const {
  std::string request = "set " + std::string(key) + " " + std::to_string(flags) + " " +
                        std::to_string(ttl) + " " + std::to_string(data.size()) + "\r\n";
  request.append(data).append("\r\n");
  const std::string reply = raw(request);
  if (reply != "STORED\r\n") throw std::runtime_error("raw set failed: " + reply);
}

std::map<std::string, std::int64_t> MemcachedServer::stats() const {
  std::map<std::string, std::int64_t> out;
  std::istringstream lines(raw("stats\r\n"));
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string stat, name, value;
    if (!(words >> stat >> name >> value) || stat != "STAT") continue;
    try {
      std::size_t used = 0;
      const long long v = std::stoll(value, &used);
      if (used == value.size()) out[name] = v;
    } catch (const std::exception&) {
      // not a number (version, rusage, ...)
    }
  }
  return out;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  return values[static_cast<std::size_t>(std::lround(rank))];
}

}  // namespace dogpile::test
