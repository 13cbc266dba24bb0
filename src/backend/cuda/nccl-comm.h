// NCCL behind dist::communicator (dist/communicator.h). libnccl is not linked: it is loaded at run time with
// dlopen (GSA_NCCL_LIBRARY, else "libnccl.so.2" through the loader's path), so the binary and the GPU bundle
// do not carry its 200+ MB and a machine without it fails with a message, not at start-up. Collectives run on
// a stream of their own, ordered after the compute stream's work by events. NCCL_NVLS_ENABLE is set to 0 unless
// the environment sets it (NVLink multicast can take a shared host's GPUs out of service).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "dist/communicator.h"

namespace gsa::cuda {

// Selects GPU `local_rank` (before the CUDA context exists), loads NCCL, has rank 0 make the unique id, passes it
// through `exchange` (rank 0 gets its bytes back, the others rank 0's) and joins the communicator.
std::unique_ptr<dist::communicator> make_nccl_communicator(
    int rank, int world_size, int local_rank,
    const std::function<std::vector<uint8_t>(const std::vector<uint8_t>&)>& exchange);

}  // namespace gsa::cuda
