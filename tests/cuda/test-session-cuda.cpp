// Sessions on the GPU (issue 14, first step): the same session code (infer/session.cpp, decode-step.cpp) with the
// model on the CUDA backend, K/V rows in device pools (kv-cache.h pool mode), decode attention by the gathered-key
// kernel, selection on the GPU for full / gist / gsa / streaming (backend/decode-lists.h) and on the host for
// the others. Against the CPU engine on random models with head dim 64 in f32: the same key
// lists every row and layer, the same greedy tokens, and logits to 1e-4 relative (prefill through the GSA
// attention kernels, decode through the decode kernel), for every method (h2o: its eviction weights from the
// decode kernel's lse, run_decode_weights). bf16: close to the f32 CPU run (3e-2 relative L2). Bad input: a file
// tier or a shape the GPU path does not run is refused with what to change.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/cuda-test-util.h"
#include "cuda/session-checks.h"
#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"
#include "core/error.h"
#include "core/rng.h"
#include "infer/generate.h"
#include "infer/session.h"
#include "test-models.h"
#include "test-util.h"

namespace gsa::infer {
namespace {

// Head dim 64 (or head_dim), GQA 2 (or q_heads / 2), 3 layers, 2048 positions.
model_config random_config(int q_heads = 4, int head_dim = 64) {
  model_config c = test::tiny_config(test::tiny_vocab, 3, 2048);
  c.hidden_size = 96;
  c.intermediate_size = 160;
  c.num_attention_heads = q_heads;
  c.num_key_value_heads = 2;
  c.head_dim = head_dim;
  return c;
}

// random_config with tiny_gsa's chunk sizes as given.
llama_model random_model(std::vector<int> chunk, uint64_t seed, float init_std, int q_heads = 4, int head_dim = 64) {
  model_config c = random_config(q_heads, head_dim);
  c.gsa = gist::gsa_config_to_json(test::tiny_gsa(test::tiny_vocab, chunk));
  llama_model m(c);
  m.init_random(seed, init_std);
  return m;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); i++) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}


struct method_case {
  method meth;
  std::vector<int> chunk;
  int64_t budget;
  prefill_mode prefill = prefill_mode::automatic;
};

const method_case kCases[] = {{method::full, {8}, -1},      {method::gist, {8}, -1},
                              {method::gsa, {8}, -1},       {method::gsa, {8}, -1, prefill_mode::unfold},
                              {method::hgsa, {4, 2}, -1},   {method::streaming, {8}, 64},
                              {method::quest, {8}, 64},     {method::moba, {8}, 64},
                              {method::hgsa, {4, 2, 2}, -1},   // three levels: the walk's lower levels
                              {method::h2o, {8}, 64}};         // weights from the decode kernel's lse

// kv_write_rows (one launch for one decode step's appends, each row into its own session's pool) puts every row
// where the CPU backend's per-row writes put it, in f32 and bf16, pools of different sizes, rows in any order.
TEST(CudaKvWrite, RowsIntoSeveralPoolsAsTheCpu) {
  REQUIRE_GPU();
  const int P = 4, Hkv = 2, D = 64, n = 5;
  const std::vector<int64_t> pool_rows = {8, 16, 8, 24};     // frames x 2 P
  const std::vector<int> of = {2, 0, 3, 2, 1};               // the pool of each row
  const std::vector<int64_t> rows = {1, 2, 17, 3, 9};        // K rows of a frame of that pool (V: + P)
  for (dtype act : {dtype::f32, dtype::bf16}) {
    backend& gpu = get_backend(device::cuda, act);
    backend& cpu = cpu_backend();
    rng r(uint64_t(7 + int(act)));
    std::vector<float> kh(size_t(n) * Hkv * D), vh(kh.size());
    for (float& x : kh) x = r.normal();
    for (float& x : vh) x = r.normal();
    // Values the act type holds exactly, so that the two backends must agree to the bit.
    Tensor k0 = Tensor::borrow(kh.data(), {n, Hkv, D}), v0 = Tensor::borrow(vh.data(), {n, Hkv, D});
    Tensor kd = gpu.upload(k0, act), vd = gpu.upload(v0, act);
    Tensor kc = kd.host(dtype::f32), vc = vd.host(dtype::f32);
    std::vector<Tensor> gp, cp;
    for (int64_t pr : pool_rows) {
      std::vector<float> zero(size_t(pr) * Hkv * D, -1.0f);
      gp.push_back(gpu.upload(Tensor::borrow(zero.data(), {pr, Hkv, D}), act));
      cp.push_back(Tensor({pr, Hkv, D}, dtype::f32));
      std::fill_n(cp.back().f32(), cp.back().numel(), -1.0f);
    }
    std::vector<Tensor*> gpools;
    for (int i = 0; i < n; i++) {
      gpools.push_back(&gp[size_t(of[size_t(i)])]);
      cpu.kv_write(cp[size_t(of[size_t(i)])], P, {rows[size_t(i)]}, kc.slice_rows(i, i + 1), vc.slice_rows(i, i + 1));
    }
    gpu.kv_write_rows(gpools, P, rows, kd, vd);
    for (size_t p = 0; p < gp.size(); p++) {
      const Tensor got = gp[p].host(dtype::f32);
      for (int64_t e = 0; e < got.numel(); e++)
        ASSERT_EQ(got.f32()[e], cp[p].f32()[e]) << dtype_name(act) << " pool " << p << " element " << e;
    }
  }
}

// A GQA group of 3 (6 query heads over 2 KV heads, as the gpu20m and llama125m presets): decodes on the GPU as on
// the CPU.
TEST(CudaSession, GroupOfThreeAsTheCpu) {
  REQUIRE_GPU();
  for (method meth : {method::full, method::gsa}) {
    SCOPED_TRACE(method_name(meth));
    llama_model cpu_m = random_model({8}, 41, 0.3f, 6);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = meth;
    auto ref = run(cpu_m, o, 700, 16);
    auto got = run(gpu_m, o, 700, 16);
    expect_same_as_cpu(*got, *ref);
  }
}

// Head dim 32 (the shipped demo models' shape: 4 query / 2 KV heads of 32), which the GPU runs forward only:
// prefill (the plan kernels, the unfolding prefill's overlay) and decode as on the CPU (f32); training
// it is refused with what to do.
TEST(CudaSession, HeadDim32AsTheCpu) {
  REQUIRE_GPU();
  for (const method_case& cs : {method_case{method::full, {8}, -1}, method_case{method::gsa, {8}, -1},
                                method_case{method::gsa, {8}, -1, prefill_mode::unfold},
                                method_case{method::hgsa, {4, 2}, -1}, method_case{method::quest, {8}, 64}}) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill));
    llama_model cpu_m = random_model(cs.chunk, 57, 0.3f, 4, 32);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    o.prefill = cs.prefill;
    auto ref = run(cpu_m, o, 700, 16);
    auto got = run(gpu_m, o, 700, 16);
    expect_same_as_cpu(*got, *ref);
  }
  EXPECT_NE(get_backend(device::cuda, dtype::bf16).train_unsupported(32).find("--device cpu"), std::string::npos);
  EXPECT_EQ(get_backend(device::cuda, dtype::bf16).train_unsupported(64), "");
}

TEST(CudaSession, SameTokensKeysAndLogitsAsTheCpuInF32) {
  REQUIRE_GPU();
  for (const auto& cs : kCases)
    for (int ctx : {300, 700}) {  // 700: full's lists are long enough for the split-K path
      SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + prefill_mode_name(cs.prefill) + " ctx " +
                   std::to_string(ctx));
      llama_model cpu_m = random_model(cs.chunk, 3 + ctx, 0.3f);
      llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
      session_options o;
      o.meth = cs.meth;
      o.budget = cs.budget;
      o.prefill = cs.prefill;
      auto ref = run(cpu_m, o, ctx, 24);
      auto got = run(gpu_m, o, ctx, 24);
      EXPECT_GT(got->cache().bytes().device, 0) << "the rows live on the GPU";
      expect_same_as_cpu(*got, *ref);
      if (cs.meth == method::quest || cs.meth == method::moba) {  // the page routers select on the GPU too
        EXPECT_GE(got->listed_rows(), 24) << "quest / moba rows took the host path";
      }
    }
}

// A context prefilled in passes of at most 128 rows (session_options.prefill_pass: each pass attends over the
// earlier passes' keys through the attention kernels at q_offset > 0) decodes as the one-pass prefill on the GPU:
// same lists and tokens, logits to 1e-4. (Against the CPU engine: quest at this seed differs in one decoded row's
// pages after a one-pass prefill too, by the same 3.7e-2 logit error. The router's score arithmetic is
// page_select's operation for operation, so it is most likely a near tie flipped by the GEMMs' f32 rounding
// (cuBLAS and OpenBLAS sum in different orders), not measured. So the passes are compared on the GPU; the CPU
// side of the passes is PrefillPasses.EqualOnePass.) The unfolding prefill selects per pass on the GPU
// (select_chunks at q_row0 > 0 over the keys before the pass's end).
TEST(CudaSession, PrefillInPassesAsOnePass) {
  REQUIRE_GPU();
  for (const auto& cs : kCases) {
    SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + std::to_string(cs.chunk.size()) + " levels");
    llama_model cpu_m = random_model(cs.chunk, 11, 0.3f);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = cs.meth;
    o.budget = cs.budget;
    auto one = run(gpu_m, o, 700, 24);
    o.prefill_pass = 128;
    auto got = run(gpu_m, o, 700, 24);
    EXPECT_EQ(one->prefill_passes(), 1);
    EXPECT_GE(got->prefill_passes(), 5);
    expect_same_as_cpu(*got, *one);
  }
}

// Per-row selection (select_per_token) in the unfolding prefill: one pass keeps the selection on the device
// (select_rows, a row unfold on the gist mask); passes do the same per pass (select_rows at row0 > 0 over the
// pass's rebased rows and the keys before its end, a row unfold on the pass's gist mask). Both must give the same
// decode, one level and two.
TEST(CudaSession, UnfoldingPrefillPerRowInPassesAsOnePass) {
  REQUIRE_GPU();
  for (const std::vector<int>& chunk : {std::vector<int>{8}, std::vector<int>{4, 2}}) {
    SCOPED_TRACE(std::to_string(chunk.size()) + " levels");
    gist::gsa_config gc = test::tiny_gsa(test::tiny_vocab, chunk);
    gc.mode = gist::train_mode::unfold;
    gc.select_per_token = true;
    gc.select = gist::select_rule::adaptive;
    llama_model cpu_m = test::model_with_gsa(random_config(), gc, 13);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    session_options o;
    o.meth = chunk.size() > 1 ? method::hgsa : method::gsa;
    auto one = run(gpu_m, o, 700, 24);
    o.prefill_pass = 128;
    auto got = run(gpu_m, o, 700, 24);
    ASSERT_TRUE(one->prefill_unfolded());
    EXPECT_EQ(one->prefill_passes(), 1);
    EXPECT_GE(got->prefill_passes(), 5);
    expect_same_as_cpu(*got, *one);
  }
}

// gsa's and hgsa's selecting rows run on the GPU end to end (backend/decode-lists.h: gist scores, top-k, union
// or group, hgsa's top-down walk, the lists built by a kernel, no host round trip per layer): the same selection
// as the CPU engine under the fixed and adaptive rules, union and group scoring, g = 1 and 2, a sink that
// overlaps chunk 0, models whose selecting rows see every gist ("gists": "all": the selecting layers' own shared
// rows, decode-lists.h sel_base); and top-p, which the GPU still selects on the host.
struct selection_case {
  method meth;
  gist::select_rule rule;
  bool group;
  int g, sink;
  bool gists_all = false;
};

// One rule's decoded rows on the GPU's selection against the CPU engine's (see the test below).
void expect_device_selection_as_cpu(const selection_case& cs) {
  using R = gist::select_rule;
  SCOPED_TRACE(std::string(method_name(cs.meth)) + " " + gist::select_rule_name(cs.rule) +
               (cs.group ? " group" : " union") + " g " + std::to_string(cs.g) + " sink " + std::to_string(cs.sink) +
               (cs.gists_all ? " gists all" : ""));
  model_config mc = gqa4_config();
  gist::gsa_config gc =
      test::tiny_gsa(test::tiny_vocab, cs.meth == method::hgsa ? std::vector<int>{8, 4} : std::vector<int>{8});
  gc.select = cs.rule;
  gc.group_scoring = cs.group;
  gc.gists_per_chunk = cs.g;
  gc.sink = cs.sink;
  gc.top_p = 0.5f;
  gc.gists_all = cs.gists_all;
  llama_model cpu_m = test::model_with_gsa(mc, gc, 21);
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
  session_options o;
  o.meth = cs.meth;
  auto ref = run(cpu_m, o, 600, 20);
  auto got = run(gpu_m, o, 600, 20);
  EXPECT_EQ(got->stream().ids, ref->stream().ids) << "greedy tokens";
  ASSERT_EQ(got->records().size(), ref->records().size());
  int differing_lists = 0;
  double worst = 0;
  size_t longest = 0, shortest = SIZE_MAX;
  for (size_t i = 0; i < ref->records().size(); i++) {
    differing_lists += got->records()[i].keys != ref->records()[i].keys;
    worst = std::max(worst, test::max_rel_err(got->records()[i].logits, ref->records()[i].logits));
    for (const auto& k : got->records()[i].keys) longest = std::max(longest, k.size()), shortest = std::min(shortest, k.size());
  }
  EXPECT_EQ(differing_lists, 0) << "rows whose key lists differ";
  EXPECT_LT(worst, 1e-4) << "max relative logit error over the decoded rows";
  EXPECT_GT(longest, shortest) << "some layer unfolded chunks";
  if (cs.rule != R::top_p) {
    EXPECT_GE(got->listed_rows(), 15) << "the decoded rows on the device's lists";
  }
}

TEST(CudaSession, DeviceSelectionEqualsTheCpuUnderEveryRule) {
  REQUIRE_GPU();
  using R = gist::select_rule;
  const selection_case cases[] = {{method::gsa, R::fixed, false, 1, 2},     {method::gsa, R::fixed, true, 2, 0},
                     {method::gsa, R::adaptive, false, 2, 10}, {method::gsa, R::adaptive, true, 1, 2},
                     {method::gsa, R::top_p, false, 1, 2},     {method::hgsa, R::fixed, false, 1, 2},
                     {method::hgsa, R::adaptive, true, 2, 0},  {method::hgsa, R::adaptive, false, 1, 10},
                     {method::gsa, R::fixed, false, 1, 2, true},  {method::gsa, R::adaptive, true, 2, 10, true},
                     {method::hgsa, R::fixed, false, 1, 2, true}, {method::hgsa, R::adaptive, true, 2, 0, true}};
  for (const auto& cs : cases) expect_device_selection_as_cpu(cs);
}

// The same with every decode row's top-k, and every level of hgsa's walk, on the cluster kernels (select.h
// set_topk_cluster_min; by default only from 4096 candidates, which these small models do not reach).
TEST(CudaSession, DeviceSelectionOnTopKClustersEqualsTheCpu) {
  REQUIRE_GPU();
  using R = gist::select_rule;
  const int before = cuda::select_detail::set_topk_cluster_min(1);
  for (const selection_case& cs : {selection_case{method::gsa, R::fixed, false, 1, 2},
                                   selection_case{method::gsa, R::adaptive, true, 2, 10},
                                   selection_case{method::gsa, R::adaptive, true, 2, 10, true},
                                   selection_case{method::hgsa, R::fixed, false, 1, 2},
                                   selection_case{method::hgsa, R::adaptive, true, 2, 0}})
    expect_device_selection_as_cpu(cs);
  cuda::select_detail::set_topk_cluster_min(before);
}

TEST(CudaSession, BatchOfMethodsEqualsTheCpuBatch) {
  REQUIRE_GPU();
  llama_model cpu_m = random_model({8}, 5, 0.3f);
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
  auto batch = [&](const llama_model& m) {
    std::vector<std::unique_ptr<session>> ss;
    const method ms[] = {method::gsa, method::full, method::gist};
    for (int i = 0; i < 3; i++) {
      session_options o;
      o.meth = ms[i];
      o.record = true;
      ss.push_back(std::make_unique<session>(m, o));
      ss.back()->prefill(test::tiny_tokens(200 + 50 * i, 10 + i));
    }
    generate_options g;
    g.max_tokens = 12;
    generate({ss[0].get(), ss[1].get(), ss[2].get()}, g);
    return ss;
  };
  auto ref = batch(cpu_m), got = batch(gpu_m);
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(got[i]->stream().ids, ref[i]->stream().ids) << "session " << i;
    ASSERT_EQ(got[i]->records().size(), ref[i]->records().size());
    for (size_t r = 0; r < ref[i]->records().size(); r++)
      EXPECT_LT(test::max_rel_err(got[i]->records()[r].logits, ref[i]->records()[r].logits), 1e-4);
  }
}

// A batched step sends every device-lists row of a layer through one launch per kernel (scores, top-k,
// expansion, split-K decode; backend::decode_attention_lists_batch), each row with its own pool, lists and k.
// Sessions of eight lengths under gsa (adaptive, fixed top-k, a small budget), hgsa (walks row by row inside the
// batch), full, gist, streaming, quest and moba (page summaries on the GPU) decode together, under union and
// group scoring with g = 1 and 2: each the CPU batch's tokens, key lists and logits.
TEST(CudaSession, BatchedListsEqualTheCpuBatch) {
  REQUIRE_GPU();
  for (const bool group : {false, true}) {
    SCOPED_TRACE(group ? "group scoring, g 2" : "union, g 1");
    model_config mc = gqa4_config();
    gist::gsa_config gc = test::tiny_gsa(test::tiny_vocab, {8});
    gc.group_scoring = group;
    gc.gists_per_chunk = group ? 2 : 1;
    mc.gsa = gist::gsa_config_to_json(gc);
    llama_model cpu_m(mc);
    cpu_m.init_random(33, 0.3f);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
    struct c {
      method meth;
      int64_t budget;
      int topk;
    };
    const c cases[] = {{method::gsa, -1, -1}, {method::gsa, -1, 3},     {method::gsa, 48, -1},
                       {method::full, -1, -1}, {method::gist, -1, -1}, {method::streaming, 64, -1},
                       {method::gsa, -1, 1},  {method::quest, 64, -1}, {method::moba, 48, -1}};
    auto batch = [&](const llama_model& m) {
      std::vector<std::unique_ptr<session>> ss;
      std::vector<session*> ptrs;
      for (size_t i = 0; i < std::size(cases); i++) {
        session_options o;
        o.meth = cases[i].meth;
        o.budget = cases[i].budget;
        o.topk = cases[i].topk;
        o.record = true;
        ss.push_back(std::make_unique<session>(m, o));
        ss.back()->prefill(test::tiny_tokens(180 + 97 * int(i), 20 + int(i)));
        ptrs.push_back(ss.back().get());
      }
      generate_options g;
      g.max_tokens = 14;
      generate(ptrs, g);
      return ss;
    };
    auto ref = batch(cpu_m), got = batch(gpu_m);
    size_t unfolded_rows = 0;
    for (size_t i = 0; i < std::size(cases); i++) {
      SCOPED_TRACE("session " + std::to_string(i) + " " + method_name(cases[i].meth));
      expect_same_as_cpu(*got[i], *ref[i]);
      for (const auto& r : ref[i]->records()) {
        size_t lo = SIZE_MAX, hi = 0;
        for (const auto& k : r.keys) lo = std::min(lo, k.size()), hi = std::max(hi, k.size());
        unfolded_rows += cases[i].meth == method::gsa && hi > lo;
      }
    }
    EXPECT_GT(unfolded_rows, 0u) << "some gsa row's heads unfolded different chunks";
  }
}

TEST(CudaSession, Bf16IsCloseToTheCpu) {
  REQUIRE_GPU();
  for (method meth : {method::full, method::gsa}) {
    SCOPED_TRACE(method_name(meth));
    llama_model cpu_m = random_model({8}, 9, 0.02f);
    llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::bf16));
    session_options o;
    o.meth = meth;
    session ref(cpu_m, o), got(gpu_m, o);
    step_stats st[2];
    for (session* s : {&ref, &got}) {
      s->prefill(test::tiny_tokens(400, 1));
      (void)s->take_stats();
      s->append(test::tiny_tokens(20, 2));  // teacher-forced: both see the same tokens
      run_pending({s});
      st[s == &got] = s->take_stats();
    }
    EXPECT_LT(rel_l2(got.logits(), ref.logits()), 3e-2);
    // bytes_read in the stored type: the GPU's bf16 pool rows are half the CPU's f32 rows (full attention reads
    // the same rows on both).
    if (meth == method::full) {
      EXPECT_EQ(st[1].attended_tokens, st[0].attended_tokens);
      EXPECT_EQ(st[1].bytes_read * 2, st[0].bytes_read);
    }
  }
}

TEST(CudaSession, UnsupportedMethodsAndShapesAreRefused) {
  REQUIRE_GPU();
  auto expect_error = [](auto f, const std::string& what) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning '" << what << "'";
    } catch (const gsa::error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("--device cpu"), std::string::npos) << e.what();
    }
  };
  llama_model cpu_m = random_model({8}, 1, 0.3f);
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::f32));
  {
    session_options o;
    o.meth = method::gist;
    o.tier = kv::page_tier::file;
    expect_error([&] { session s(gpu_m, o); }, "--kv-tier memory");
  }
  // Head dim 8: the decode kernel has 64 and 128.
  llama_model small = test::tiny_model({4});
  llama_model small_gpu = to_backend(small, get_backend(device::cuda, dtype::f32));
  session_options o;
  o.meth = method::gsa;
  expect_error([&] { session s(small_gpu, o); }, "head dim 8");
}

}  // namespace
}  // namespace gsa::infer
