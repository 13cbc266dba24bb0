// An in-process dist::communicator for tests: the ranks are threads of one process and the collectives copy
// host memory between them (sums in rank order, so results are deterministic). Not a transport: gsa's data
// parallelism runs over NCCL (backend/cuda/nccl-comm.h); this lets the trainer's distributed path run on the CPU.
#pragma once
#include <barrier>
#include <cstring>
#include <vector>

#include "dist/communicator.h"

namespace gsa::test {

struct thread_group {
  explicit thread_group(int n) : size(n), sync(n), ptrs(size_t(n)), vals(size_t(n)) {}
  int size;
  std::barrier<> sync;
  std::vector<const void*> ptrs;
  std::vector<double> vals;
};

class thread_comm final : public dist::communicator {
 public:
  thread_comm(thread_group& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size; }
  std::string describe() const override { return "threads"; }
  void all_reduce_sum(float* buf, int64_t n) override { reduce(buf, {0, n}); }
  void reduce_scatter_sum(float* buf, std::span<const dist::range> ranges) override {
    reduce(buf, ranges[size_t(rank_)]);
  }
  void all_gather(void* buf, size_t es, std::span<const dist::range> ranges) override {
    g_.ptrs[size_t(rank_)] = buf;
    g_.sync.arrive_and_wait();
    for (int k = 0; k < g_.size; k++)
      if (k != rank_)
        std::memcpy(static_cast<char*>(buf) + ranges[k].begin * es,
                    static_cast<const char*>(g_.ptrs[size_t(k)]) + ranges[k].begin * es, size_t(ranges[k].size()) * es);
    g_.sync.arrive_and_wait();
  }
  void broadcast(const void* send, void* recv, size_t bytes, int root) override {
    if (rank_ == root) g_.ptrs[size_t(root)] = send;
    g_.sync.arrive_and_wait();
    if (recv != g_.ptrs[size_t(root)]) std::memcpy(recv, g_.ptrs[size_t(root)], bytes);
    g_.sync.arrive_and_wait();
  }
  void wait() override {}
  double sum_host(double x) override {
    g_.vals[size_t(rank_)] = x;
    g_.sync.arrive_and_wait();
    double s = 0;
    for (double v : g_.vals) s += v;
    g_.sync.arrive_and_wait();
    return s;
  }

 private:
  // Sums the ranks' buffers over `r` into this rank's buffer (whole: all-reduce; else only r is needed).
  void reduce(float* buf, dist::range r) {
    g_.ptrs[size_t(rank_)] = buf;
    g_.sync.arrive_and_wait();
    std::vector<float> sum(size_t(r.size()), 0.0f);
    for (int k = 0; k < g_.size; k++) {
      const float* p = static_cast<const float*>(g_.ptrs[size_t(k)]) + r.begin;
      for (int64_t i = 0; i < r.size(); i++) sum[size_t(i)] += p[i];
    }
    g_.sync.arrive_and_wait();
    std::memcpy(buf + r.begin, sum.data(), sum.size() * sizeof(float));
  }
  thread_group& g_;
  int rank_;
};

}  // namespace gsa::test
