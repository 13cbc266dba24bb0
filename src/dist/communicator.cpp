#include "dist/communicator.h"

#include <chrono>

#include "core/error.h"
#include "dist/rendezvous.h"
#ifdef GSA_HAVE_CUDA
#include "backend/cuda/nccl-comm.h"
#endif

namespace gsa::dist {

namespace {
const char* k_no_cuda =
    "data-parallel training runs one process per GPU over NCCL, and this gsa was built without CUDA: rebuild with "
    "-DGSA_CUDA=ON (scripts/cuda-bundle.sh), or train in one process (--gpus 1)";
}  // namespace

bool gpu_communicator_built(std::string* why) {
#ifdef GSA_HAVE_CUDA
  return true;
#else
  if (why) *why = k_no_cuda;
  return false;
#endif
}

std::unique_ptr<communicator> make_gpu_communicator(const process_group& g) {
#ifdef GSA_HAVE_CUDA
  const std::chrono::milliseconds timeout(int64_t(dist_timeout_seconds()) * 1000);
  // Rank 0 makes NCCL's unique id, the rendezvous carries it to the others, then every rank joins NCCL.
  return gsa::cuda::make_nccl_communicator(g.rank, g.world_size, g.local_rank,
                                           [&](const std::vector<uint8_t>& id) {
                                             return rendezvous_broadcast(g, id, timeout);
                                           });
#else
  fail("{}", k_no_cuda);
#endif
}

}  // namespace gsa::dist
