// Host side of the gathered-key decode attention: shape checks, the split heuristic (plan) and the launch
// wrapper (run). Contract: decode-attention.h. The plan touches no CUDA API so it is testable without a GPU.
#include "backend/cuda/decode-attention.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "backend/cuda/decode-kernels.h"
#include "core/error.h"

namespace gsa::cuda {

namespace {

size_t elem_size(decode_dtype t) { return t == decode_dtype::f32 ? 4 : 2; }

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

}  // namespace

bool decode_supported(const decode_params& p, std::string* why) {
  auto no = [&](const char* msg) {
    if (why) *why = msg;
    return false;
  };
  if (p.batch < 0 || p.n_q_heads <= 0 || p.n_kv_heads <= 0) return no("batch must be >= 0 and head counts > 0");
  if (p.n_q_heads % p.n_kv_heads != 0) return no("n_q_heads must be a multiple of n_kv_heads");
  const int g = p.n_q_heads / p.n_kv_heads;
  if (g < 1 || g > 8 || g == 5) return no("GQA group n_q_heads/n_kv_heads must be 1, 2, 3, 4, 6, 7 or 8");
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128) return no("head_dim must be 32, 64 or 128");
  const int64_t vec = 16 / int64_t(elem_size(p.kv_dtype));
  if (p.q_stride_h % vec || p.q_stride_b % vec || p.kv_stride_t % vec || p.kv_stride_h % vec)
    return no("q and k/v strides must be multiples of 16 bytes (16-byte vector loads)");
  return true;
}

decode_plan plan_decode(const decode_params& p, int64_t max_list_len, const decode_plan_options& opt) {
  std::string why;
  if (!decode_supported(p, &why)) fail("decode attention: unsupported shape: {}", why);
  if (max_list_len < 0) fail("decode attention: max_list_len is {}, must be >= 0", max_list_len);
  decode_plan plan;
  plan.async_copy = opt.async_copy;
  plan.tensor_cores =
      opt.tensor_cores && p.kv_dtype == decode_dtype::bf16 && (p.head_dim == 64 || p.head_dim == 128);
  // Resident blocks per SM: the tensor-core kernel's rings take 48 KB (D 64) or 96 KB (D 128) of shared memory.
  const int ctas_per_sm = plan.tensor_cores ? std::min(opt.ctas_per_sm, p.head_dim == 128 ? 2 : 4) : opt.ctas_per_sm;
  // A block walks 64 keys per iteration (4 warps x 16) on tensor cores, 32..64 on CUDA cores.
  const int64_t round = plan.tensor_cores ? 64 : 32;
  const int64_t lists = int64_t(p.batch) * p.n_kv_heads;
  if (opt.force_splits > 0) {
    plan.num_splits = opt.force_splits;
    plan.keys_per_split = std::max<int64_t>(1, (max_list_len + opt.force_splits - 1) / opt.force_splits);
  } else if (max_list_len == 0 || lists == 0) {
    plan.num_splits = 1;
    plan.keys_per_split = std::max<int64_t>(1, max_list_len);
  } else {
    // As many blocks as fit on the device at once (ctas_per_sm on every SM), in whole waves: the most splits
    // whose blocks all fit (a split more would start a second, mostly idle wave), at least one; and no split
    // shorter than min_keys_per_split.
    const int64_t target = int64_t(std::max(1, opt.num_sms)) * std::max(1, ctas_per_sm);
    const int64_t want = std::max<int64_t>(1, target / lists);
    const int64_t by_len = (max_list_len + opt.min_keys_per_split - 1) / std::max<int64_t>(1, opt.min_keys_per_split);
    const int64_t s = std::clamp<int64_t>(std::min(want, by_len), 1, std::max(1, opt.max_splits));
    // Round the split to whole steps of a block's iteration, then recount.
    int64_t kps = (max_list_len + s - 1) / s;
    kps = (kps + round - 1) / round * round;
    plan.keys_per_split = kps;
    plan.num_splits = int((max_list_len + kps - 1) / kps);
  }
  if (plan.num_splits > 1)
    plan.workspace_bytes = size_t(p.batch) * p.n_q_heads * plan.num_splits * (p.head_dim + 2) * sizeof(float);
  return plan;
}

void run_decode(const decode_params& p, const decode_plan& plan, void* workspace, void* stream) {
  std::string why;
  if (!decode_supported(p, &why)) fail("decode attention: unsupported shape: {}", why);
  if (plan.num_splits < 1 || plan.keys_per_split < 1)
    fail("decode attention: plan has num_splits {} and keys_per_split {}; make it with plan_decode", plan.num_splits,
         plan.keys_per_split);
  if (p.batch == 0) return;
  if (p.seqs) {  // each sequence's pointers are on the device: the caller checked them (decode_seq)
    if (p.lse) fail("decode attention: lse is not written for a launch of decode_seq sequences");
  } else {
    if (!p.q || !p.k || !p.v || !p.indptr || !p.indices || !p.out)
      fail("decode attention: q, k, v, indptr, indices and out must all be set");
    if (p.n_shared < 0 || (p.n_shared > 0 && !p.shared))
      fail("decode attention: a shared prefix of {} rows needs its pointer", p.n_shared);
    if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v))
      fail("decode attention: q, k and v must be 16-byte aligned");
  }
  if (plan.num_splits > 1 && !workspace)
    fail("decode attention: the plan needs {} bytes of workspace and none was given", plan.workspace_bytes);
  const int rc = detail::launch_decode(p, plan.num_splits, plan.keys_per_split, plan.async_copy, plan.tensor_cores,
                                       workspace, stream);
  if (rc != 0) fail("decode attention: launch failed: {}", cudaGetErrorString(cudaError_t(rc)));
}

int current_device_sms() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    fail("decode attention: no CUDA device (cudaGetDevice failed)");
  return sms;
}

}  // namespace gsa::cuda
