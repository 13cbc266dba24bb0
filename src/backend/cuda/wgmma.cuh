// Hopper warpgroup MMA (wgmma) building blocks for the next attention kernels (docs/cuda.md, "Acting on it":
// the mma.sync kernels run at 255 registers with the tensor pipe ~31% busy; wgmma reads its operands straight
// from shared memory and keeps the accumulators in the warpgroup's registers). Checked on the device by
// wgmma-check.cu / CudaWgmma.* against a float64 product.
//
// Layout: a tile of R rows x 64 bf16 (128 bytes a row) in shared memory with the 128-byte swizzle, its base
// 1024-byte aligned: the 16-byte chunk c of row r sits at chunk c ^ (r % 8) of that row (sw128_offset). A
// descriptor (smem_desc_sw128) names such a tile for wgmma: start address, stride between 8-row groups 1024 bytes,
// swizzle mode 128B. K-major operand (rows = M or N, the 64 columns = K): step k16 of the tile is the descriptor
// plus 32 bytes; MN-major operand (rows = K, columns = N, transposed with imm-trans 1): step k16 is 16 rows on,
// plus 2048 bytes. Wider operands are panels of 64 columns: d 128 as K of S = Q K^T is two K-major panels (steps
// 0-3 in the first, 4-7 in the second); as N of O = P V it is two MN-major panels, one wgmma each (or, untested,
// one m64n128 with the leading byte offset = the panels' distance).
//
// Accumulator of m64nNk16 (f32): thread t of the warpgroup holds rows 16 (t / 32) + (t % 32) / 4 and that + 8,
// columns 8 j + 2 (t % 4) + {0, 1} for j < N / 8, in d[4 j + {0, 1}] (first row) and d[4 j + {2, 3}] (second):
// mma.sync's m16n8 layout per warp, repeated over the N / 8 column blocks.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace gsa::cuda::detail {

__device__ __forceinline__ uint32_t sw128_offset(int row, int col) {  // bytes; col in bf16 elements (< 64)
  return uint32_t(row) * 128u + ((uint32_t((col >> 3) ^ (row & 7))) << 4) + uint32_t(col & 7) * 2u;
}

// cp_rows_pair's destination for a tile of ROWS rows x D bf16 stored as D / 64 swizzled panels of ROWS x 128 bytes.
template <int ROWS>
struct sw128_panels {
  __device__ uint32_t operator()(int row, int chunk) const {
    return uint32_t(chunk >> 3) * (ROWS * 128) + sw128_offset(row, (chunk & 7) * 8);
  }
};

// Dynamic shared memory rounded up to the swizzle's 1024-byte period (the launch asks for 1024 bytes more).
__device__ __forceinline__ unsigned char* smem_align1024(unsigned char* raw) {
  const uint32_t base = uint32_t(__cvta_generic_to_shared(raw));
  return raw + (((base + 1023) & ~1023u) - base);
}

__device__ __forceinline__ uint64_t smem_desc_sw128(const void* tile) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
  uint64_t d = 0;
  d |= uint64_t((a >> 4) & 0x3fff);       // start address
  d |= uint64_t(1) << 16;                  // leading byte offset (unused by the swizzled layouts; 16 bytes)
  d |= uint64_t(1024 >> 4) << 32;          // stride byte offset: 8 rows of 128 bytes
  d |= uint64_t(1) << 62;                  // 128-byte swizzle
  return d;
}

// Generic-proxy writes to shared memory (st.shared, cp.async) made visible to the async proxy wgmma reads with;
// then a barrier.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Register operands of an in-flight wgmma (the accumulators, and A when it comes from registers) are read and
// written by the tensor core, not by the thread: the compiler must neither move its own reads or writes of them
// across wgmma_fence / wgmma_wait nor reuse their registers before the wait. An empty asm that "modifies" each
// register pins them: call it on the accumulators and on A's registers before wgmma_fence and after wgmma_wait.
// (Without it the PTX had the accumulators' zeroing after the fence. CudaWgmma.TileProductRegistersA's occasional
// non-finite products were the test's own race: its launch on the legacy stream, its copies on ctx().stream.)
template <int N>
__device__ __forceinline__ void wgmma_pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void wgmma_pin(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+r"(r[i])::"memory");
}

// d (64 x 64, f32) = A B (+ d when accumulate): A from descriptor da (K-major), B from db (K-major when TB = 0:
// rows = N; MN-major when TB = 1: rows = K), bf16, one k16 step. Issued by the whole warpgroup.
template <int TB>
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t da, uint64_t db, bool accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, %35;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(int(accumulate)), "n"(TB));
}

// The same with A from registers (as P in O = P V, straight from the S accumulators): a[0..3] = the thread's bf16
// pairs of A's 16 x 16 step in mma.sync's A-fragment layout for the warp's 16 rows (16 (t / 32) + (t % 32) / 4,
// and + 8; columns 2 (t % 4) + {0, 1}, and + 8): a0 row r cols c, a1 row r + 8 cols c, a2 row r cols c + 8, a3 row
// r + 8 cols c + 8.
template <int TB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db,
                                                   bool accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(int(accumulate)), "n"(TB));
}

// ---- warp specialization: mbarriers, register reallocation, named barriers ----
// An mbarrier (8 bytes of shared memory) completes a phase when `count` arrivals have happened; waiters name the
// phase by its parity (0 for the first). A fresh barrier is in phase 0; waiting for parity 1 then returns at once
// (the phase before counts as complete), which is how a producer passes its first lap over empty buffers.
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// One arrival, with release semantics for this thread's earlier shared-memory writes; returns the barrier's state
// before it (callers ignore it).
__device__ __forceinline__ uint64_t mbar_arrive(uint64_t* bar) {
  uint64_t state;
  asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(state) : "r"(smem_addr(bar)) : "memory");
  return state;
}
// One arrival once every cp.async this thread issued so far has landed (counted in the barrier's count).
__device__ __forceinline__ void mbar_arrive_cp_async(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
// Waits for the phase of the given parity; traps after ~2^28 polls (seconds) instead of hanging on a protocol
// error, so that a broken pipeline fails its test instead of stalling the device.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  for (uint32_t n = 0; !mbar_try_wait(bar, parity); n++)
    if (n == (1u << 28)) __trap();
}
// The warpgroup's registers per thread, raised or lowered (a multiple of 8 in [24, 256]); every thread of the
// warpgroup executes it.
template <int N>
__device__ __forceinline__ void regs_raise() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_lower() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
// A barrier among `threads` threads (whole warps) on hardware barrier `id` (1-15; 0 is __syncthreads).
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace gsa::cuda::detail
