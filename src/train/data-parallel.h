// The trainer's side of data parallelism over a dist::communicator, for packed models (every parameter a view
// into one flat buffer, llama.h): where each parameter sits in the flat buffer and when the backward pass has
// finished it; gradient buckets all-reduced as soon as the layers covering them are done (overlapping the
// backward pass of the earlier layers); and moving a sharded flat buffer to rank 0's host memory and back in
// bounded pieces (checkpoints of ZeRO-1 state keep the one-process format).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/llama.h"

namespace gsa {

struct flat_param {
  std::string name;
  int64_t offset = 0, numel = 0;  // elements of the flat buffer
  int ready_after = -1;           // the backward pass has finished it after layer `ready_after` (-1: at the end)
};
// The parameters of a packed model in list order (parameters()), with their place in w.flat.
std::vector<flat_param> flat_layout(const llama_model& m);

// Bucketed gradient all-reduce (sum) over a packed gradient buffer. Buckets are ranges of about bucket_bytes;
// each is launched by on_layer() once every parameter it touches is final, the rest by finish(), which also
// makes the compute stream wait for all of them.
class grad_sync {
 public:
  grad_sync(const llama_model& m, dist::communicator& comm, int64_t bucket_bytes = 64 << 20);
  void begin_step();             // a new step: nothing launched yet
  void on_layer(int layer);      // backward() finished `layer` (-1: the embedding, the last)
  void finish(llama_weights& g); // launches what is left, then waits
  void set_target(llama_weights& g) { g_ = &g; }
  int64_t buckets() const { return int64_t(buckets_.size()); }

 private:
  struct bucket {
    dist::range r;
    int ready_after;
    bool launched = false;
  };
  dist::communicator& comm_;
  std::vector<bucket> buckets_;
  llama_weights* g_ = nullptr;
};

// Rank 0 gets the whole flat f32 buffer (`n` values) whose rank-r part, ranges[r], sits in rank r's `shard`
// (device memory, ranges[r].size() f32 values); the other ranks get an empty vector. Collective (every rank
// calls it); moves at most chunk_elems values at a time through a staging buffer on `be`.
std::vector<float> gather_to_root(backend& be, dist::communicator& comm, const Tensor& shard,
                                  const std::vector<dist::range>& ranges, int64_t n, int64_t chunk_elems = 16 << 20);

}  // namespace gsa
