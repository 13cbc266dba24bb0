// The data-parallel process group as torchrun describes it: one process per GPU, told its place by the
// environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `gsa train --gpus N` sets the same
// variables for the N processes it starts (dist/launcher.h), so a launch on one host and a launch across hosts
// (torchrun, srun wrappers, a job script) reach the trainer the same way.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace gsa::dist {

struct process_group {
  int rank = 0;         // 0 .. world_size - 1, over all hosts
  int world_size = 1;
  int local_rank = 0;   // this process's GPU on its host (cudaSetDevice(local_rank))
  std::string master_addr = "127.0.0.1";  // where rank 0 listens for the rendezvous
  int master_port = 0;
  bool distributed() const { return world_size > 1; }
};

// Reads the group through `get` (a variable's value, or nullopt when unset). No WORLD_SIZE (or WORLD_SIZE=1)
// means a single process: rank 0 of 1, whatever else is set. With WORLD_SIZE > 1, RANK, MASTER_ADDR and
// MASTER_PORT are required and LOCAL_RANK defaults to RANK. Every value is range-checked; errors name the
// variable and say what to set.
process_group process_group_from(const std::function<std::optional<std::string>(const char*)>& get);
// The same over the process environment (getenv).
process_group process_group_from_environment();

// Seconds the rendezvous and the first collective wait for the other ranks: GSA_DIST_TIMEOUT (default 120).
int dist_timeout_seconds();

}  // namespace gsa::dist
