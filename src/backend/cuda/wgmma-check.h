// Device self-check of the wgmma building blocks (wgmma.cuh), for CudaWgmma.* (tests/cuda/test-wgmma.cpp): one
// warpgroup loads A and B (64 x 64 bf16, row-major, device memory) into 128-byte-swizzled shared tiles and
// multiplies them with four m64n64k16 steps. trans_b false: C = A B^T (B's rows are the N dimension: the K-major
// operand, as keys in S = Q K^T); true: C = A B (B's rows are K: the MN-major operand, as V in O = P V). C: 64 x 64
// f32 row-major, device memory. a_in_registers: A goes to the instruction from registers in the A-fragment layout
// (wgmma_m64n64k16_rs, as P in O = P V) instead of a shared tile. Returns a cudaError_t as int (0: launched).
#pragma once

namespace gsa::cuda {

int wgmma_tile_product(const void* a, const void* b, float* c, bool trans_b, bool a_in_registers, void* stream);

}  // namespace gsa::cuda
