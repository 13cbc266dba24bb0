// The CUDA runtime context, checked calls and the caching allocator (contract: runtime.h).
//
// Lifetime: the context and the cached blocks live until the process ends and are never destroyed on purpose:
// destroying a stream or a cuBLASLt handle from a static destructor runs after the CUDA runtime may already have
// shut down, which turns a clean exit into an error. The driver reclaims everything at exit.
//
// Allocator: free lists keyed by the exact rounded size (256-byte granules). Every op runs on ctx().stream, so a
// block released after its last use and handed out again is stream-ordered: the new user's kernels queue behind
// the old user's. Nothing here is safe for use from several streams.
#include "backend/cuda/runtime.h"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/profile.h"

namespace gsa::cuda {

namespace {

constexpr size_t lt_workspace_size = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
constexpr size_t granule = 256;

const char* hint_for(cudaError_t e) {
  switch (e) {
    case cudaErrorMemoryAllocation:
      return "out of GPU memory: lower --length or --batch, or use --device cpu";
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorDevicesUnavailable:
      return "no usable CUDA driver or GPU: use --device cpu";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidDeviceFunction:
    case cudaErrorUnsupportedPtxVersion:
      return "this build targets sm_90a (H100/H200): rebuild for this GPU, or use --device cpu";
    default:
      return "a bug or a GPU fault: rerun with CUDA_LAUNCH_BLOCKING=1 to locate it, or use --device cpu";
  }
}

std::string mib(size_t bytes) { return fmt::format("{:.1f} MiB", double(bytes) / (1024.0 * 1024.0)); }

struct allocator_state {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_lists;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> live;                     // block -> rounded size
  size_t in_use = 0, peak = 0, cached = 0;
};

allocator_state& alloc_state() {
  static auto* s = new allocator_state();  // never destroyed: see the file comment
  return *s;
}

// Frees every cached block. Caller holds the lock.
void empty_cache_locked(allocator_state& s) {
  for (auto& [size, blocks] : s.free_lists)
    for (void* p : blocks) check(cudaFree(p), "cudaFree (emptying the allocator cache)", __FILE__, __LINE__);
  s.free_lists.clear();
  s.cached = 0;
}

context* make_context() {
  auto owned = std::make_unique<context>();
  context* c = owned.get();
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("no usable CUDA device ({}: {}): use --device cpu", cudaGetErrorName(e), cudaGetErrorString(e));
  }
  if (n == 0) fail("no CUDA device found: use --device cpu");
  GSA_CUDA_CHECK(cudaGetDevice(&c->device));
  cudaDeviceProp prop{};
  GSA_CUDA_CHECK(cudaGetDeviceProperties(&prop, c->device));
  if (prop.major != 9 || prop.minor != 0)
    fail("CUDA device {} ({}) is sm_{}{}, but this build targets sm_90a (H100/H200): rebuild with "
         "CMAKE_CUDA_ARCHITECTURES for this GPU, or use --device cpu",
         c->device, prop.name, prop.major, prop.minor);
  c->sm_count = prop.multiProcessorCount;
  int optin = 0;
  GSA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
  c->smem_per_block_optin = size_t(optin);
  GSA_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  GSA_CUBLAS_CHECK(cublasLtCreate(&c->lt));
  GSA_CUDA_CHECK(cudaMalloc(&c->lt_workspace, lt_workspace_size));
  c->lt_workspace_bytes = lt_workspace_size;
  return owned.release();
}

}  // namespace

void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return;
  // Clear the sticky "last error" of non-fatal failures (e.g. an allocation) so later calls are not blamed.
  cudaGetLastError();
  if (e == cudaErrorMemoryAllocation)
    fail_oom("CUDA error in {} at {}:{}: {} ({}); {}", what, file, line, cudaGetErrorName(e), cudaGetErrorString(e),
             hint_for(e));
  fail("CUDA error in {} at {}:{}: {} ({}); {}", what, file, line, cudaGetErrorName(e), cudaGetErrorString(e),
       hint_for(e));
}

void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  const char* hint = "a bug (unsupported matmul shape or type?): rerun with CUBLASLT_LOG_LEVEL=2 to see why";
  if (s == CUBLAS_STATUS_ALLOC_FAILED) hint = "out of GPU memory: lower --length or --batch, or use --device cpu";
  if (s == CUBLAS_STATUS_NOT_INITIALIZED) hint = "no usable CUDA driver or GPU: use --device cpu";
  fail("cuBLAS error in {} at {}:{}: {} ({}); {}", what, file, line, cublasLtGetStatusName(s),
       cublasLtGetStatusString(s), hint);
}

void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return;
  fail("CUDA kernel launch {} failed at {}:{}: {} ({}); {}", kernel, file, line, cudaGetErrorName(e),
       cudaGetErrorString(e), hint_for(e));
}

void fail_msg(const std::string& msg) { throw error(msg); }

context& ctx() {
  // A failed creation is not cached: the exception propagates and the next call tries again (and fails the same
  // way, with the same message).
  static std::mutex mu;
  static context* c = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!c) c = make_context();
  return *c;
}

bool available(std::string* why) {
  try {
    ctx();
    return true;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return false;
  }
}

void* alloc(size_t bytes) {
  const size_t size = (bytes == 0 ? granule : (bytes + granule - 1) / granule * granule);
  auto& s = alloc_state();
  ctx();  // make sure the device is set up (and fail with its message if it is not)
  std::lock_guard<std::mutex> lock(s.mu);
  void* p = nullptr;
  auto it = s.free_lists.find(size);
  if (it != s.free_lists.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    s.cached -= size;
  } else {
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {  // cached blocks of other sizes may be what is missing
      cudaGetLastError();
      empty_cache_locked(s);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      if (e == cudaErrorMemoryAllocation)  // (a session adds what its context needs: session::prefill)
        fail_oom("out of GPU memory allocating {} ({} in use by gsa, peak {}): lower --length or --batch, or use "
                 "--device cpu",
                 mib(size), mib(s.in_use), mib(s.peak));
      check(e, "cudaMalloc", __FILE__, __LINE__);
    }
  }
  s.live.emplace(p, size);
  s.in_use += size;
  if (s.in_use > s.peak) s.peak = s.in_use;
  return p;
}

void release(void* p) {
  if (!p) return;
  auto& s = alloc_state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.live.find(p);
  GSA_ASSERT(it != s.live.end(), "cuda::release of a pointer that cuda::alloc did not hand out (or a double release)");
  const size_t size = it->second;
  s.live.erase(it);
  s.in_use -= size;
  s.free_lists[size].push_back(p);
  s.cached += size;
}

void empty_cache() {
  auto& s = alloc_state();
  std::lock_guard<std::mutex> lock(s.mu);
  empty_cache_locked(s);
}

size_t bytes_in_use() {
  auto& s = alloc_state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.in_use;
}

size_t peak_bytes_in_use() {
  auto& s = alloc_state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.peak;
}

void copy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory the call returns once src has been staged, so the caller may reuse src at once.
  GSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx().stream));
}

void copy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  GSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx().stream));
  GSA_CUDA_CHECK(cudaStreamSynchronize(ctx().stream));
}

void copy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  GSA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx().stream));
}

void memset0(void* dst, size_t bytes) {
  if (bytes == 0) return;
  GSA_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx().stream));
}

void synchronize() { GSA_CUDA_CHECK(cudaStreamSynchronize(ctx().stream)); }

bool env_switch::on() {
  int v = v_.load();
  if (v < 0) {
    const char* e = std::getenv(var_);
    v = e && std::string(e) == "0" ? 0 : 1;
    v_.store(v);
  }
  return v == 1;
}

namespace {
env_switch g_graphs("GSA_CUDA_GRAPHS");
}  // namespace

bool graphs_enabled() { return g_graphs.on(); }
void set_graphs_enabled(bool on) { g_graphs.set(on); }

std::shared_ptr<void> record_graph(const std::function<void()>& f) {
  cudaStream_t s = ctx().stream;
  // Thread-local mode: a call in f that would synchronise or allocate from the driver fails the capture instead of
  // recording something a replay would not redo.
  GSA_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  std::string why;  // set when the capture failed: f threw, or the capture ended in an error
  try {
    f();
  } catch (const std::exception& x) {
    why = x.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t e = cudaStreamEndCapture(s, &graph);
  if (why.empty() && (e != cudaSuccess || !graph)) why = cudaGetErrorString(e);
  if (!why.empty()) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();  // the capture's error is the one reported here
    fail("recording a CUDA graph failed: {}; an op of the recorded work synchronised, read back or allocated: "
         "this is a bug (report it), and GSA_CUDA_GRAPHS=0 runs without graphs",
         why);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  GSA_CUDA_CHECK(ie);
  // Freed with its owner; at process exit the runtime may be gone already, so the result is not checked.
  return std::shared_ptr<void>(static_cast<void*>(exec),
                               [](void* x) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(x)); });
}

void launch_graph(const void* exec) {
  GSA_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(const_cast<void*>(exec)), ctx().stream));
}

void profile_add_ms(const char* name, float ms) { profile_add(name, double(ms)); }

}  // namespace gsa::cuda
