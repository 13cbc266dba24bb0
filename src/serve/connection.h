// Whether the client of a request is still connected, so that a generation whose client left is cancelled.
// cpp-httplib 0.11 (Debian 12) gives a handler neither its socket nor an is_connection_closed(); the socket is
// found once per request by its addresses (the open socket whose local port and peer address and port are the
// request's) and then polled: an orderly close or a reset shows as end of stream / POLLRDHUP / POLLHUP.
#pragma once
#include <string>

namespace gsa::serve {

class connection {
 public:
  // -1 socket (none found) reports the client as connected.
  connection(const std::string& remote_addr, int remote_port, int local_port);
  bool closed() const;
  int socket() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace gsa::serve
