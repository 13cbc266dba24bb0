// The NCCL communicator on one GPU (a group of one: every collective is an identity or a copy, which checks the
// run-time loading of libnccl, the unique-id path, ranges, element sizes and stream ordering). Two GPUs run the
// trainer through it in scripts/device-multigpu.sh. Skipped without a GPU or without a loadable libnccl.so.2
// (scripts/device-run.sh points GSA_NCCL_LIBRARY at PyTorch's).
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

#include "backend/cuda/nccl-comm.h"
#include "backend/cuda/runtime.h"

namespace gsa {
namespace {

bool nccl_loadable(std::string* why) {
  const char* env = std::getenv("GSA_NCCL_LIBRARY");
  void* h = ::dlopen(env && *env ? env : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    *why = "no libnccl.so.2 (set GSA_NCCL_LIBRARY)";
    return false;
  }
  ::dlclose(h);
  return true;
}

TEST(CudaNccl, OneRankGroupCollectives) {
  std::string why;
  if (!cuda::available(&why)) GTEST_SKIP() << why;
  if (!nccl_loadable(&why)) GTEST_SKIP() << why;
  auto comm = cuda::make_nccl_communicator(0, 1, 0, [](const std::vector<uint8_t>& id) {
    EXPECT_EQ(id.size(), 128u);
    return id;
  });
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_NE(comm->describe().find("NCCL 2."), std::string::npos) << comm->describe();
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
  const int n = 1000;
  std::vector<float> h(n);
  for (int i = 0; i < n; i++) h[size_t(i)] = float(i) * 0.5f - 3.0f;
  float* d = static_cast<float*>(cuda::alloc(n * sizeof(float)));
  cuda::copy_h2d(d, h.data(), n * sizeof(float));
  comm->all_reduce_sum(d + 3, n - 3);
  std::vector<dist::range> one = {{0, n}};
  comm->reduce_scatter_sum(d, one);
  comm->all_gather(d, sizeof(float), one);
  float* e = static_cast<float*>(cuda::alloc(n * sizeof(float)));
  comm->broadcast(d, e, n * sizeof(float), 0);
  comm->wait();
  std::vector<float> back(n);
  cuda::copy_d2h(back.data(), e, n * sizeof(float));
  EXPECT_EQ(back, h);
  EXPECT_EQ(comm->sum_host(2.5), 2.5);
  cuda::release(d);
  cuda::release(e);
}

}  // namespace
}  // namespace gsa
