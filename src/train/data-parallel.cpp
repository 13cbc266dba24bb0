#include "train/data-parallel.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/error.h"

namespace gsa {

namespace {
float* fptr(const Tensor& t) { return static_cast<float*>(const_cast<void*>(t.raw())); }
}  // namespace

std::vector<flat_param> flat_layout(const llama_model& m) {
  GSA_ASSERT(!m.w.flat.empty(), "flat_layout needs a packed model (to_backend)");
  const char* base = static_cast<const char*>(m.w.flat.raw());
  const size_t es = dtype_size(m.w.flat.type());
  const int L = int(m.w.layers.size());
  std::vector<flat_param> out;
  for (auto& [name, t] : m.parameters()) {
    flat_param p;
    p.name = name;
    p.offset = int64_t((static_cast<const char*>(t->raw()) - base) / es);
    p.numel = t->numel();
    // Layer l's tensors are final once backward() has gone through l; the final norm and an untied head before
    // the last layer; the embedding (also the tied head's gradient) only at the end.
    if (name.rfind("model.layers.", 0) == 0) p.ready_after = std::stoi(name.substr(13));
    else if (name.rfind("model.embed_tokens", 0) == 0) p.ready_after = -1;
    else p.ready_after = L - 1;
    GSA_ASSERT(p.offset >= 0 && p.offset + p.numel <= m.w.flat.numel());
    out.push_back(p);
  }
  return out;
}

grad_sync::grad_sync(const llama_model& m, dist::communicator& comm, int64_t bucket_bytes) : comm_(comm) {
  const auto layout = flat_layout(m);
  const int64_t n = m.w.flat.numel();
  std::vector<const flat_param*> by_offset;
  for (auto& p : layout) by_offset.push_back(&p);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  const int64_t per = std::max<int64_t>(1024, bucket_bytes / int64_t(sizeof(float)));
  // Consecutive pieces of about `per` elements in buffer order; a bucket is launched once the last of the
  // parameters it touches is done (the matrices are packed layer by layer, so most buckets hold one layer).
  int64_t begin = 0, covered = 0;
  int ready = INT_MAX;
  for (auto* p : by_offset) {
    GSA_ASSERT(p->offset == covered, "the parameters must tile the flat buffer");
    int64_t a = p->offset;
    const int64_t e = p->offset + p->numel;
    while (a < e) {
      a += std::min(e - a, per - (a - begin));
      ready = std::min(ready, p->ready_after);
      if (a - begin >= per) {
        buckets_.push_back({{begin, a}, ready});
        begin = a;
        ready = INT_MAX;
      }
    }
    covered = e;
  }
  GSA_ASSERT(covered == n);
  if (begin < n) buckets_.push_back({{begin, n}, ready});
}

void grad_sync::begin_step() {
  for (auto& b : buckets_) b.launched = false;
}

void grad_sync::on_layer(int layer) {
  if (!g_) return;
  float* base = fptr(g_->flat);
  for (auto& b : buckets_)
    if (!b.launched && b.ready_after >= layer) {
      comm_.all_reduce_sum(base + b.r.begin, b.r.size());
      b.launched = true;
    }
}

void grad_sync::finish(llama_weights& g) {
  g_ = &g;
  on_layer(-1);
  comm_.wait();
  g_ = nullptr;
}

std::vector<float> gather_to_root(backend& be, dist::communicator& comm, const Tensor& shard,
                                  const std::vector<dist::range>& ranges, int64_t n, int64_t chunk_elems) {
  const int me = comm.rank();
  GSA_ASSERT(int(ranges.size()) == comm.size() && shard.numel() == ranges[me].size());
  std::vector<float> out;
  if (me == 0) out.resize(size_t(n));
  const int64_t most = std::max<int64_t>(1, std::min(chunk_elems, n));
  Tensor staging = be.alloc({most}, dtype::f32);
  for (int r = 0; r < comm.size(); r++) {
    for (int64_t a = 0; a < ranges[r].size(); a += most) {
      const int64_t k = std::min(most, ranges[r].size() - a);
      const float* src = r == me ? fptr(shard) + a : fptr(staging);
      comm.broadcast(src, fptr(staging), size_t(k) * sizeof(float), r);
      comm.wait();
      if (me == 0) {
        Tensor h = staging.slice_rows(0, k).host(dtype::f32);
        std::memcpy(out.data() + ranges[r].begin + a, h.f32(), size_t(k) * sizeof(float));
      }
    }
  }
  return out;
}

}  // namespace gsa
