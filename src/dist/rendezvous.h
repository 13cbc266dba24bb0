// The rendezvous of a data-parallel group: rank 0 listens on MASTER_ADDR:MASTER_PORT, every other rank connects,
// says who it is (rank, world size) and receives rank 0's bytes (NCCL's unique id, 128 bytes). Nothing else
// travels over it: the collectives run over NCCL. Every wait is bounded: a rank that never comes, a port in use,
// an address that does not resolve or a peer from another run each end in a gsa::error naming what to change.
#pragma once
#include <chrono>
#include <cstdint>
#include <vector>

#include "dist/process-group.h"

namespace gsa::dist {

// Rank 0 passes `root_bytes` and gets them back; the others pass nothing and get rank 0's bytes. Rank 0 returns
// once every rank has connected and been sent the bytes; the others once they have them.
std::vector<uint8_t> rendezvous_broadcast(const process_group& g, const std::vector<uint8_t>& root_bytes,
                                          std::chrono::milliseconds timeout);

// A TCP port on 127.0.0.1 that was free a moment ago (for `--gpus N`'s MASTER_PORT).
int free_local_port();

}  // namespace gsa::dist
