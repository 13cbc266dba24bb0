#include "backend/cuda/nccl-comm.h"

#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/runtime.h"
#include "core/error.h"

namespace gsa::cuda {

namespace {

// The entry points gsa uses, resolved from the loaded library.
struct nccl_api {
  void* lib = nullptr;
  std::string path;
  decltype(&::ncclGetVersion) get_version = nullptr;
  decltype(&::ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&::ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&::ncclCommDestroy) comm_destroy = nullptr;
  decltype(&::ncclGetErrorString) error_string = nullptr;
  decltype(&::ncclAllReduce) all_reduce = nullptr;
  decltype(&::ncclReduce) reduce = nullptr;
  decltype(&::ncclBroadcast) broadcast = nullptr;
  decltype(&::ncclGroupStart) group_start = nullptr;
  decltype(&::ncclGroupEnd) group_end = nullptr;
};

const nccl_api& api() {
  static nccl_api a = [] {
    nccl_api n;
    const char* env = std::getenv("GSA_NCCL_LIBRARY");
    n.path = env && *env ? env : "libnccl.so.2";
    n.lib = ::dlopen(n.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!n.lib)
      fail("cannot load NCCL ({}): {}. Data-parallel training needs libnccl.so.2: set GSA_NCCL_LIBRARY to its path "
           "(PyTorch's wheel has one: python3 -c 'import nvidia.nccl, os; print(os.path.dirname("
           "nvidia.nccl.__file__) + \"/lib/libnccl.so.2\")'), or put its folder on LD_LIBRARY_PATH",
           n.path, ::dlerror());
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(n.lib, name));
      if (!fn) fail("{} lacks {}: it is not a usable NCCL 2 library; point GSA_NCCL_LIBRARY at libnccl.so.2", n.path, name);
    };
    sym(n.get_version, "ncclGetVersion");
    sym(n.get_unique_id, "ncclGetUniqueId");
    sym(n.comm_init_rank, "ncclCommInitRank");
    sym(n.comm_destroy, "ncclCommDestroy");
    sym(n.error_string, "ncclGetErrorString");
    sym(n.all_reduce, "ncclAllReduce");
    sym(n.reduce, "ncclReduce");
    sym(n.broadcast, "ncclBroadcast");
    sym(n.group_start, "ncclGroupStart");
    sym(n.group_end, "ncclGroupEnd");
    return n;
  }();
  return a;
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  fail("NCCL {} failed: {} ({}); NCCL_DEBUG=INFO in the environment shows why (a peer that died, a GPU that "
       "another process holds, a network interface: NCCL_SOCKET_IFNAME)", what, api().error_string(r), int(r));
}

class nccl_communicator final : public dist::communicator {
 public:
  nccl_communicator(int rank, int world, int local_rank, ncclComm_t comm, int version)
      : rank_(rank), world_(world), local_rank_(local_rank), comm_(comm), version_(version) {
    GSA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    GSA_CUDA_CHECK(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
    GSA_CUDA_CHECK(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
    GSA_CUDA_CHECK(cudaMalloc(&scalar_, sizeof(double)));
  }
  ~nccl_communicator() override {
    cudaStreamSynchronize(stream_);
    api().comm_destroy(comm_);
    cudaFree(scalar_);
    cudaEventDestroy(compute_done_);
    cudaEventDestroy(comm_done_);
    cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return world_; }
  std::string describe() const override {
    return fmt::format("NCCL {}.{}.{}, rank {} of {} on cuda:{}", version_ / 10000, version_ / 100 % 100,
                       version_ % 100, rank_, world_, local_rank_);
  }

  void all_reduce_sum(float* buf, int64_t n) override {
    after_compute();
    check_nccl(api().all_reduce(buf, buf, size_t(n), ncclFloat32, ncclSum, comm_, stream_), "all-reduce");
  }
  void reduce_scatter_sum(float* buf, std::span<const dist::range> ranges) override {
    GSA_ASSERT(int(ranges.size()) == world_);
    after_compute();
    // One reduce per owner in a group: ranges of any size, no padded copy of the buffer (ncclReduceScatter needs
    // equal counts; docs/multigpu.md says when that would matter).
    check_nccl(api().group_start(), "group start");
    for (int r = 0; r < world_; r++)
      if (ranges[r].size() > 0)
        check_nccl(api().reduce(buf + ranges[r].begin, buf + ranges[r].begin, size_t(ranges[r].size()), ncclFloat32,
                                ncclSum, r, comm_, stream_), "reduce");
    check_nccl(api().group_end(), "reduce-scatter (group end)");
  }
  void all_gather(void* buf, size_t elem_bytes, std::span<const dist::range> ranges) override {
    GSA_ASSERT(int(ranges.size()) == world_);
    after_compute();
    char* b = static_cast<char*>(buf);
    check_nccl(api().group_start(), "group start");
    for (int r = 0; r < world_; r++)
      if (ranges[r].size() > 0) {
        char* p = b + size_t(ranges[r].begin) * elem_bytes;
        check_nccl(api().broadcast(p, p, size_t(ranges[r].size()) * elem_bytes, ncclUint8, r, comm_, stream_),
                   "broadcast");
      }
    check_nccl(api().group_end(), "all-gather (group end)");
  }
  void broadcast(const void* send, void* recv, size_t bytes, int root) override {
    after_compute();
    check_nccl(api().broadcast(send, recv, bytes, ncclUint8, root, comm_, stream_), "broadcast");
  }
  void wait() override {
    GSA_CUDA_CHECK(cudaEventRecord(comm_done_, stream_));
    GSA_CUDA_CHECK(cudaStreamWaitEvent(ctx().stream, comm_done_, 0));
  }
  double sum_host(double x) override {
    GSA_CUDA_CHECK(cudaMemcpyAsync(scalar_, &x, sizeof x, cudaMemcpyHostToDevice, stream_));
    check_nccl(api().all_reduce(scalar_, scalar_, 1, ncclFloat64, ncclSum, comm_, stream_), "all-reduce");
    double out = 0;
    GSA_CUDA_CHECK(cudaMemcpyAsync(&out, scalar_, sizeof out, cudaMemcpyDeviceToHost, stream_));
    GSA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }

 private:
  // The next collective starts after everything issued so far on the compute stream.
  void after_compute() {
    GSA_CUDA_CHECK(cudaEventRecord(compute_done_, ctx().stream));
    GSA_CUDA_CHECK(cudaStreamWaitEvent(stream_, compute_done_, 0));
  }
  int rank_, world_, local_rank_;
  ncclComm_t comm_;
  int version_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t compute_done_ = nullptr, comm_done_ = nullptr;
  double* scalar_ = nullptr;
};

}  // namespace

std::unique_ptr<dist::communicator> make_nccl_communicator(
    int rank, int world_size, int local_rank,
    const std::function<std::vector<uint8_t>(const std::vector<uint8_t>&)>& exchange) {
  ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0)
    fail("rank {}: no usable GPU (cudaGetDeviceCount); data-parallel training needs one GPU per process", rank);
  if (local_rank >= n_dev)
    fail("rank {}: LOCAL_RANK={} but this host has {} GPU(s); start at most {} processes on it (--gpus {})", rank,
         local_rank, n_dev, n_dev, n_dev);
  GSA_CUDA_CHECK(cudaSetDevice(local_rank));
  (void)ctx();  // the process's CUDA context on that GPU (checks its architecture)
  const nccl_api& a = api();
  int version = 0;
  check_nccl(a.get_version(&version), "version");
  std::vector<uint8_t> mine;
  if (rank == 0) {
    ncclUniqueId id;
    check_nccl(a.get_unique_id(&id), "unique id");
    mine.assign(reinterpret_cast<const uint8_t*>(&id), reinterpret_cast<const uint8_t*>(&id) + sizeof id);
  }
  const std::vector<uint8_t> bytes = exchange(mine);
  if (bytes.size() != sizeof(ncclUniqueId))
    fail("rank {}: the rendezvous brought {} bytes, not an NCCL unique id ({} bytes); every rank must run the same "
         "gsa", rank, bytes.size(), sizeof(ncclUniqueId));
  ncclUniqueId id;
  std::memcpy(&id, bytes.data(), sizeof id);
  ncclComm_t comm = nullptr;
  check_nccl(a.comm_init_rank(&comm, world_size, id, rank), "communicator init");
  return std::make_unique<nccl_communicator>(rank, world_size, local_rank, comm, version);
}

}  // namespace gsa::cuda
