// The CUDA runtime context every CUDA op runs in: one device, one stream, one cuBLASLt handle with its
// workspace, and a caching allocator (freed blocks are kept per size and reused, as PyTorch's allocator does, so
// a training step allocates nothing from the driver after the first one). Host-side header: no fmt, no kernels;
// nvcc translation units may include it.
//
// Errors: every CUDA / cuBLAS call is checked; a failure throws gsa::error naming the call, the file:line and
// what to do (out of memory -> "lower --length or --batch, or use --device cpu"; no driver / no GPU -> "use
// --device cpu"). Nothing falls back silently.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace gsa::cuda {

// Throws gsa::error if e != cudaSuccess (what = the call's text).
void check(cudaError_t e, const char* what, const char* file, int line);
void check_cublas(cublasStatus_t s, const char* what, const char* file, int line);
// After a kernel launch: checks cudaGetLastError().
void check_launch(const char* kernel, const char* file, int line);
// Throws gsa::error(msg). For nvcc translation units, which cannot include core/error.h (fmt): they build the
// message with std::string and call this.
[[noreturn]] void fail_msg(const std::string& msg);

struct context {
  int device = 0;
  int sm_count = 0;
  size_t smem_per_block_optin = 0;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;  // cuBLASLt workspace (device)
  size_t lt_workspace_bytes = 0;
};

// The process-wide context for the current device, created on first use. Throws gsa::error with a clear message
// when there is no usable GPU (no driver, no device, wrong architecture: the build targets sm_90a).
context& ctx();
// True when a usable CUDA device is present (never throws); tests skip with a message when false.
bool available(std::string* why = nullptr);

// Caching allocator on ctx().stream. alloc never returns null (throws on out of memory after releasing the cache
// once and retrying). Sizes are rounded up to 256 bytes; blocks are reused by exact rounded size.
void* alloc(size_t bytes);
void release(void* p);       // back to the cache
void empty_cache();          // returns cached blocks to the driver
size_t bytes_in_use();       // allocated and not released
size_t peak_bytes_in_use();

// Copies (on ctx().stream, then synchronises for device -> host).
void copy_h2d(void* dst, const void* src, size_t bytes);
void copy_d2h(void* dst, const void* src, size_t bytes);
void copy_d2d(void* dst, const void* src, size_t bytes);
void memset0(void* dst, size_t bytes);
void synchronize();

// An on / off setting of the CUDA backend, on unless the environment variable `var` is "0" (read at the first
// on()); set() overrides it (tests, benchmarks comparing both ways).
class env_switch {
 public:
  explicit env_switch(const char* var) : var_(var) {}
  bool on();
  void set(bool on) { v_.store(on ? 1 : 0); }

 private:
  const char* var_;
  std::atomic<int> v_{-1};  // -1: not read yet
};

// CUDA graphs (backend::replay): record_graph captures the launches f makes on ctx().stream (f launches but the GPU
// runs nothing) into an executable graph, which launch_graph runs on ctx().stream; the pointer frees it. A capture
// that fails (f synchronised, read back or allocated from the driver) throws with what to do. graphs_enabled():
// on unless GSA_CUDA_GRAPHS=0 in the environment; set_graphs_enabled overrides it (tests compare both ways).
std::shared_ptr<void> record_graph(const std::function<void()>& f);
void launch_graph(const void* exec);
bool graphs_enabled();
void set_graphs_enabled(bool on);

// Profiling (core/profile.h): when on, the device time of f's work on ctx().stream, between two events, is added
// to the counter `name` (synchronising); when off, just f.
void profile_add_ms(const char* name, float ms);  // core/profile.h's profile_add (no fmt here)
template <class F>
void timed(const char* name, bool on, F&& f) {
  if (!on) {
    f();
    return;
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, ctx().stream);
  f();
  cudaEventRecord(e1, ctx().stream);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  profile_add_ms(name, ms);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

}  // namespace gsa::cuda

#define GSA_CUDA_CHECK(x) ::gsa::cuda::check((x), #x, __FILE__, __LINE__)
#define GSA_CUBLAS_CHECK(x) ::gsa::cuda::check_cublas((x), #x, __FILE__, __LINE__)
#define GSA_CUDA_LAUNCH_CHECK(name) ::gsa::cuda::check_launch((name), __FILE__, __LINE__)
