#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
#include <thread>

#include "core/error.h"

namespace gsa::dist {

namespace {

using clock = std::chrono::steady_clock;
constexpr uint32_t k_magic = 0x31415347;  // "GSA1" little-endian: a peer of another program is refused
constexpr uint32_t k_max_bytes = 1 << 20;

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f = -1) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard(fd_guard&& o) noexcept : fd(o.fd) { o.fd = -1; }
  fd_guard& operator=(fd_guard&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

int ms_left(clock::time_point deadline) {
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
  return d < 0 ? 0 : int(std::min<int64_t>(d, 1 << 30));
}

std::string where(const process_group& g) { return fmt::format("{}:{}", g.master_addr, g.master_port); }

// Sends or receives exactly n bytes before the deadline; false on timeout or a closed peer.
bool io_all(int fd, void* buf, size_t n, bool send, clock::time_point deadline) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    pollfd pfd{fd, short(send ? POLLOUT : POLLIN), 0};
    int r = ::poll(&pfd, 1, ms_left(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t k = send ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) return false;
    p += k;
    n -= size_t(k);
  }
  return true;
}

sockaddr_in resolve(const process_group& g) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int e = ::getaddrinfo(g.master_addr.c_str(), nullptr, &hints, &res);
  if (e != 0 || !res)
    fail("MASTER_ADDR '{}' does not resolve ({}); give rank 0's host name or IPv4 address", g.master_addr,
         ::gai_strerror(e));
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  ::freeaddrinfo(res);
  a.sin_port = htons(uint16_t(g.master_port));
  return a;
}

std::vector<uint8_t> serve_root(const process_group& g, const std::vector<uint8_t>& bytes, clock::time_point deadline,
                                std::chrono::milliseconds timeout) {
  if (bytes.size() > k_max_bytes) fail("rendezvous: {} bytes is more than it carries", bytes.size());
  fd_guard ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (ls.fd < 0) fail("rendezvous: socket(): {}", std::strerror(errno));
  int one = 1;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = resolve(g);
  if (::bind(ls.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    fail("rank 0 cannot listen on {} ({}): the port is taken or the address is not this host's; choose another "
         "MASTER_PORT, or set MASTER_ADDR to this host", where(g), std::strerror(errno));
  if (::listen(ls.fd, 128) != 0) fail("rendezvous: listen on {}: {}", where(g), std::strerror(errno));
  std::vector<fd_guard> peers(size_t(g.world_size));
  std::set<int> missing;
  for (int r = 1; r < g.world_size; r++) missing.insert(r);
  while (!missing.empty()) {
    pollfd pfd{ls.fd, POLLIN, 0};
    int k = ::poll(&pfd, 1, ms_left(deadline));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      std::string who;
      for (int r : missing) who += (who.empty() ? "" : ", ") + std::to_string(r);
      fail("rendezvous on {}: rank(s) {} of {} did not connect within {} s; start every rank with the same "
           "MASTER_ADDR, MASTER_PORT and WORLD_SIZE (GSA_DIST_TIMEOUT sets the wait in seconds)", where(g), who,
           g.world_size, timeout.count() / 1000.0);
    }
    fd_guard c(::accept4(ls.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (c.fd < 0) continue;
    uint32_t hello[3] = {0, 0, 0};  // magic, world size, rank
    // A peer that connects and says nothing gets a few seconds, not the whole timeout.
    const auto hello_deadline = std::min(deadline, clock::now() + std::chrono::seconds(10));
    if (!io_all(c.fd, hello, sizeof hello, false, hello_deadline) || hello[0] != k_magic) continue;  // not ours
    if (int(hello[1]) != g.world_size)
      fail("rendezvous on {}: rank {} says WORLD_SIZE={} but rank 0 has WORLD_SIZE={}; start every rank with the "
           "same WORLD_SIZE", where(g), hello[2], hello[1], g.world_size);
    const int r = int(hello[2]);
    if (r <= 0 || r >= g.world_size || !missing.count(r))
      fail("rendezvous on {}: a second process says it is rank {} (of {}); give every process its own RANK",
           where(g), r, g.world_size);
    missing.erase(r);
    peers[size_t(r)] = std::move(c);
  }
  const uint32_t head[2] = {k_magic, uint32_t(bytes.size())};
  for (int r = 1; r < g.world_size; r++) {
    if (!io_all(peers[r].fd, const_cast<uint32_t*>(head), sizeof head, true, deadline) ||
        !io_all(peers[r].fd, const_cast<uint8_t*>(bytes.data()), bytes.size(), true, deadline))
      fail("rendezvous on {}: rank {} went away before it got the group's id; restart the run", where(g), r);
  }
  // Wait for each peer's close so that rank 0 does not return (and start NCCL) before the bytes have arrived.
  for (int r = 1; r < g.world_size; r++) {
    char c;
    pollfd pfd{peers[r].fd, POLLIN, 0};
    if (::poll(&pfd, 1, ms_left(deadline)) > 0) (void)::recv(peers[r].fd, &c, 1, 0);
  }
  return bytes;
}

std::vector<uint8_t> join(const process_group& g, clock::time_point deadline, std::chrono::milliseconds timeout) {
  const sockaddr_in a = resolve(g);
  std::string last = "no answer";
  while (true) {
    fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.fd < 0) fail("rendezvous: socket(): {}", std::strerror(errno));
    if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
      const uint32_t hello[3] = {k_magic, uint32_t(g.world_size), uint32_t(g.rank)};
      uint32_t head[2] = {0, 0};
      if (!io_all(s.fd, const_cast<uint32_t*>(hello), sizeof hello, true, deadline) ||
          !io_all(s.fd, head, sizeof head, false, deadline))
        fail("rank {}: rank 0 at {} accepted the connection but did not send the group's id within {} s (a rank "
             "0 of another run, or it failed: see its log)", g.rank, where(g), timeout.count() / 1000.0);
      if (head[0] != k_magic || head[1] > k_max_bytes)
        fail("rank {}: {} answered, but not as a gsa rank 0; check MASTER_ADDR and MASTER_PORT", g.rank, where(g));
      std::vector<uint8_t> bytes(head[1]);
      if (!io_all(s.fd, bytes.data(), bytes.size(), false, deadline))
        fail("rank {}: the connection to rank 0 at {} broke while receiving the group's id; restart the run",
             g.rank, where(g));
      return bytes;
    }
    last = std::strerror(errno);
    if (ms_left(deadline) == 0)
      fail("rank {}: cannot reach rank 0 at {} within {} s (last error: {}); start rank 0, check MASTER_ADDR and "
           "MASTER_PORT (GSA_DIST_TIMEOUT sets the wait in seconds)", g.rank, where(g), timeout.count() / 1000.0,
           last);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, ms_left(deadline))));
  }
}

}  // namespace

std::vector<uint8_t> rendezvous_broadcast(const process_group& g, const std::vector<uint8_t>& root_bytes,
                                          std::chrono::milliseconds timeout) {
  if (!g.distributed()) return root_bytes;
  const auto deadline = clock::now() + timeout;
  return g.rank == 0 ? serve_root(g, root_bytes, deadline, timeout) : join(g, deadline, timeout);
}

int free_local_port() {
  fd_guard s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.fd < 0) fail("socket(): {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    fail("cannot find a free TCP port on 127.0.0.1 ({}); set MASTER_PORT", std::strerror(errno));
  return ntohs(a.sin_port);
}

}  // namespace gsa::dist
