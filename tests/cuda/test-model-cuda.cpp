// The whole model on the GPU: the same forward/backward (model/llama.cpp) through the CUDA backend against
//  * the transformers goldens with head dim 64 (tests/data/golden/*-d64, scripts/make-goldens.py), in f32 and bf16;
//  * the CPU model on random GSA models (compress, unfold per token, suffix-unfold), logits, loss and gradients;
//  * the optimizer: AdamW steps on the GPU against the CPU's, and a GPU checkpoint read back on the CPU.
// Tolerances: f32 runs use cuBLASLt in f32 (no TF32) and f32 kernels, so they agree with the CPU to rounding
// (1e-4 relative to the tensor's scale, as the CPU golden tests). bf16 runs round every activation and weight to
// 8 bits of mantissa (relative error 2^-9 per rounding) through ~20 roundings per layer: a relative L2 error of a
// few 1e-3 is expected; 3e-2 is the bound (the same bound a naive bf16 PyTorch run meets against its f32 twin).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "cuda/cuda-test-util.h"
#include "backend/cuda/runtime.h"
#include "backend/row-unfold.h"
#include "core/error.h"
#include "gist/plan.h"
#include "gist/stream.h"
#include "io/safetensors.h"
#include "model/gsa-plans.h"
#include "model/llama.h"
#include "test-models.h"
#include "test-util.h"
#include "train/optimizer.h"

namespace gsa {
namespace {

double rel_l2(const Tensor& got, const Tensor& ref) {
  Tensor a = got.host(), b = ref.host();
  EXPECT_EQ(a.numel(), b.numel());
  double num = 0, den = 1e-30;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); i++) {
    const double d = double(a.f32()[i]) - double(b.f32()[i]);
    if (!std::isfinite(a.f32()[i])) return INFINITY;
    num += d * d;
    den += double(b.f32()[i]) * double(b.f32()[i]);
  }
  return std::sqrt(num / den);
}

double max_rel(const Tensor& got, const Tensor& ref) {
  Tensor a = got.host(), b = ref.host();
  for (int64_t i = 0; i < a.numel(); i++)
    if (!std::isfinite(a.f32()[i])) return INFINITY;
  return test::max_rel_err(a.f32(), b.f32(), size_t(std::min(a.numel(), b.numel())));
}

std::string golden_dir(const char* name) { return (test::source_dir() / "tests/data/golden" / name).string(); }

std::vector<int32_t> to_vec(const Tensor& t) {
  Tensor c = t.type() == dtype::i32 ? t : t.to(dtype::i32);
  return std::vector<int32_t>(c.i32(), c.i32() + c.numel());
}

struct golden_case {
  std::vector<int32_t> ids, pos, targets;
  std::vector<uint8_t> mask;  // (T, T) or empty
};

golden_case read_case(const std::string& dir) {
  auto g = safetensors_file::open(dir + "/golden.safetensors");
  golden_case c;
  c.ids = to_vec(g.view("input_ids"));
  auto labels = to_vec(g.view("labels"));
  c.targets.assign(labels.size(), -100);
  for (size_t i = 0; i + 1 < labels.size(); i++) c.targets[i] = labels[i + 1];
  c.pos.resize(c.ids.size());
  for (size_t i = 0; i < c.pos.size(); i++) c.pos[i] = int32_t(i);
  if (g.has("position_ids")) c.pos = to_vec(g.view("position_ids"));
  if (g.has("mask")) {
    Tensor m = g.view("mask");
    const uint8_t* p = static_cast<const uint8_t*>(m.raw());
    c.mask.assign(p, p + m.numel());
  }
  return c;
}

// The mask as a plan of one-row blocks, each key a one-position range (independent of gist/).
cpu::attn_plan plan_from_mask(const std::vector<uint8_t>& mask, int T) {
  cpu::attn_plan plan;
  plan.block_q.push_back(0);
  plan.seg_ptr.push_back(0);
  for (int q = 0; q < T; q++) {
    for (int k = 0; k <= q; k++)
      if (mask[size_t(q) * T + k]) plan.segs.push_back(key_range(k, k + 1));
    plan.block_q.push_back(q + 1);
    plan.seg_ptr.push_back(int64_t(plan.segs.size()));
  }
  return plan;
}

void check_golden(const char* name, dtype precision, double tol_logits, double tol_grads, bool l2) {
  const std::string dir = golden_dir(name);
  if (!std::filesystem::exists(dir + "/golden.safetensors"))
    GTEST_SKIP() << dir << " is missing: run scripts/make-goldens.py where torch is (scripts/device-run.sh does)";
  llama_model host = load_model(dir.find("-gist") != std::string::npos ? golden_dir("llama-d64") : dir);
  llama_model m = to_backend(host, get_backend(device::cuda, precision));
  golden_case c = read_case(dir);
  cpu::attn_plan plan;
  plan_provider plans = [&](int, const layer_qk&) { return plan; };
  if (!c.mask.empty()) plan = plan_from_mask(c.mask, int(c.ids.size()));
  forward_state st;
  forward(m, st, c.ids, c.pos, c.targets, c.mask.empty() ? nullptr : &plans);
  auto g = safetensors_file::open(dir + "/golden.safetensors");
  Tensor ref_logits = g.load_f32("logits");
  Tensor got = logits(m, st);
  const double e = l2 ? rel_l2(got, ref_logits) : max_rel(got, ref_logits);
  EXPECT_LT(e, tol_logits) << "logits";
  const float ref_loss = g.load_f32("loss").f32()[0];
  EXPECT_NEAR(st.loss(), ref_loss, tol_logits * std::fabs(ref_loss)) << "loss";
  llama_weights grads = make_grads(m);
  backward(m, st, grads);
  auto ref = safetensors_file::open(dir + "/grads.safetensors");
  int checked = 0;
  for (auto& [pname, t] : grad_list(m, grads)) {
    ASSERT_TRUE(ref.has(pname)) << pname;
    Tensor r = ref.load_f32(pname, t->shape());
    const double ge = l2 ? rel_l2(*t, r) : max_rel(*t, r);
    EXPECT_LT(ge, tol_grads) << "gradient of " << pname;
    checked++;
  }
  EXPECT_EQ(checked, int(ref.names().size()));
}

TEST(CudaModel, LlamaD64MatchesTransformersF32) {
  REQUIRE_GPU();
  check_golden("llama-d64", dtype::f32, 1e-4, 1e-4, false);
}
TEST(CudaModel, Qwen2D64MatchesTransformersF32) {
  REQUIRE_GPU();
  check_golden("qwen2-d64", dtype::f32, 1e-4, 1e-4, false);
}
TEST(CudaModel, LlamaD64GistStreamMatchesTransformersF32) {
  REQUIRE_GPU();
  check_golden("llama-d64-gist", dtype::f32, 1e-4, 1e-4, false);
}
TEST(CudaModel, LlamaD64MatchesTransformersBf16) {
  REQUIRE_GPU();
  check_golden("llama-d64", dtype::bf16, 3e-2, 3e-2, true);
}
TEST(CudaModel, Qwen2D64GistMatchesTransformersBf16) {
  REQUIRE_GPU();
  check_golden("llama-d64-gist", dtype::bf16, 3e-2, 3e-2, true);
}

// A random GSA model with head dim 64 (the kernels' smallest), GQA 2. init_std 0.3 makes attention sharp (index
// errors show at once in f32); bf16 comparisons use the usual 0.02 init: with 0.3 the scores are so large that
// one bf16 rounding of q or k moves a softmax far from its f32 value (measured on the H200: 6% on the logits,
// 30% on the gradients at 0.3, for a kernel that passes the f32 comparison and its own bf16 tests).
llama_model random_gsa_model(const std::string& mode, uint64_t seed, bool tied = false, float init_std = 0.3f,
                             const std::vector<int>& chunks = {8}, bool gists_all = false) {
  model_config c = test::tiny_config(test::tiny_vocab, 3, 1024);
  c.hidden_size = 96;
  c.intermediate_size = 160;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.tie_word_embeddings = tied;
  gist::gsa_config g = test::tiny_gsa(test::tiny_vocab, chunks);
  g.mode = gist::train_mode_from_name(mode);
  g.select_per_token = true;
  g.gists_all = gists_all;
  c.gsa = gist::gsa_config_to_json(g);
  llama_model m(c);
  m.init_random(seed, init_std);
  return m;
}

// The GPU run (model, forward state, gradients) against the CPU run: logits, loss, every layer's attention output
// and lse, every gradient; f32 by the largest relative error, bf16 by the relative L2 error.
void expect_same_run(const llama_model& gpu_m, const forward_state& gs, llama_weights& gg, const llama_model& cpu_m,
                     const forward_state& cs, llama_weights& cg, dtype precision, double tol, const std::string& mode) {
  auto err = [&](const Tensor& a, const Tensor& b) { return precision == dtype::f32 ? max_rel(a, b) : rel_l2(a, b); };
  EXPECT_LT(err(logits(gpu_m, gs), logits(cpu_m, cs)), tol) << mode << " logits";
  EXPECT_NEAR(gs.loss(), cs.loss(), tol * std::fabs(cs.loss())) << mode << " loss";
  for (int l = 0; l < 3; l++) {
    EXPECT_LT(err(gs.layers[l].attn, cs.layers[l].attn), tol) << mode << " attention output of layer " << l;
    EXPECT_LT(err(gs.layers[l].lse, cs.layers[l].lse), tol) << mode << " lse of layer " << l;
  }
  auto a = grad_list(gpu_m, gg), b = grad_list(cpu_m, cg);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); i++) EXPECT_LT(err(*a[i].second, *b[i].second), tol) << mode << " " << a[i].first;
}

// CPU model vs GPU model on the same stream and mode. f32: every tensor to rounding. The selection of the
// unfolding modes is taken from the CPU run and replayed on the GPU (frozen plans), so that rounding cannot
// flip a near-tie between two chunks' scores.
void compare_cpu_gpu(const std::string& mode, dtype precision, double tol, int n_raw) {
  llama_model cpu_m = random_gsa_model(mode, 11 + n_raw, false, precision == dtype::f32 ? 0.3f : 0.02f);
  const gist::gsa_config cfg = gist::gsa_config_from_json(cpu_m.config.gsa);
  auto raw = test::tiny_tokens(n_raw, 5 + n_raw);
  gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
  const int ctx_end = s.size() - 9;
  plan_provider live = make_gsa_plans(cpu_m, cfg, s, cfg.mode, ctx_end);
  std::vector<cpu::attn_plan> rec;
  plan_provider recorder = [&](int l, const layer_qk& qk) {
    rec.push_back(live(l, qk));
    return rec.back();
  };
  forward_state cs;
  forward(cpu_m, cs, s.ids, s.pos, s.labels, &recorder);
  llama_weights cg = make_grads(cpu_m);
  backward(cpu_m, cs, cg);

  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, precision));
  plan_provider frozen = frozen_plans(rec);
  forward_state gs;
  forward(gpu_m, gs, s.ids, s.pos, s.labels, &frozen);
  llama_weights gg = make_grads(gpu_m);
  backward(gpu_m, gs, gg);

  expect_same_run(gpu_m, gs, gg, cpu_m, cs, cg, precision, tol, mode);
}

TEST(CudaModel, CompressMatchesCpuF32) {
  REQUIRE_GPU();
  compare_cpu_gpu("compress", dtype::f32, 1e-4, 150);
}
TEST(CudaModel, UnfoldPerTokenMatchesCpuF32) {
  REQUIRE_GPU();
  compare_cpu_gpu("unfold", dtype::f32, 1e-4, 150);
}
TEST(CudaModel, SuffixUnfoldMatchesCpuF32) {
  REQUIRE_GPU();
  compare_cpu_gpu("suffix-unfold", dtype::f32, 1e-4, 150);
}
TEST(CudaModel, UnfoldMatchesCpuBf16) {
  REQUIRE_GPU();
  compare_cpu_gpu("unfold", dtype::bf16, 3e-2, 300);
}

// The per-token unfolding as GPU training runs it: the selection made and kept on the device, a row unfold on the
// gist mask (overlay kernels in bf16, its expansion in f32), recorded and replayed on the CPU model (whose
// backend expands it): logits, loss, attention and every gradient agree.
void compare_device_rows(const std::string& mode, dtype precision, double tol, int n_raw,
                         const std::vector<int>& chunks = {8}, bool gists_all = false) {
  llama_model cpu_m =
      random_gsa_model(mode, 23 + n_raw, false, precision == dtype::f32 ? 0.3f : 0.02f, chunks, gists_all);
  const gist::gsa_config cfg = gist::gsa_config_from_json(cpu_m.config.gsa);
  auto raw = test::tiny_tokens(n_raw, 9 + n_raw);
  gist::stream s = gist::build_stream(raw.data(), int(raw.size()), cfg);
  const int ctx_end = s.size() - 9;
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, precision));
  plan_provider live = make_gsa_plans(gpu_m, cfg, s, cfg.mode, ctx_end);
  std::vector<cpu::attn_plan> rec;
  plan_provider recorder = [&](int l, const layer_qk& qk) {
    rec.push_back(live(l, qk));
    return rec.back();
  };
  forward_state gs;
  forward(gpu_m, gs, s.ids, s.pos, s.labels, &recorder);
  llama_weights gg = make_grads(gpu_m);
  backward(gpu_m, gs, gg);
  ASSERT_EQ(rec.size(), 3u);
  EXPECT_FALSE(rec[0].unfold) << "layer 0 is dense (keeps the gist mask)";
  for (int l = 1; l < 3; l++) {
    ASSERT_TRUE(rec[size_t(l)].unfold) << mode << ": layer " << l << " did not keep its selection on the device";
    EXPECT_GT(unfold_totals(*rec[size_t(l)].unfold).chunks, 0) << mode << ": layer " << l << " unfolded nothing";
    if (gists_all) {  // the overlay went on the base that lists every gist (gist::plan_unfold_base)
      cpu::attn_plan b = rec[size_t(l)];
      b.unfold = nullptr;
      EXPECT_GT(cpu::attended_pairs(b, 1), cpu::attended_pairs(rec[0], 1)) << mode << ": layer " << l;
    }
  }

  plan_provider frozen = frozen_plans(rec);
  forward_state cs;
  forward(cpu_m, cs, s.ids, s.pos, s.labels, &frozen);
  llama_weights cg = make_grads(cpu_m);
  backward(cpu_m, cs, cg);

  expect_same_run(gpu_m, gs, gg, cpu_m, cs, cg, precision, tol, mode);
}

TEST(CudaModel, DeviceRowUnfoldMatchesCpuBf16) {
  REQUIRE_GPU();
  compare_device_rows("unfold", dtype::bf16, 3e-2, 300);
  compare_device_rows("suffix-unfold", dtype::bf16, 3e-2, 300);
}
TEST(CudaModel, DeviceRowUnfoldMatchesCpuF32) {
  REQUIRE_GPU();
  compare_device_rows("unfold", dtype::f32, 1e-4, 150);
  compare_device_rows("suffix-unfold", dtype::f32, 1e-4, 150);
}
// H-GSA (two gist levels, chunks of 4 in units of 2): the overlay also brings the level-0 gists of chunks outside
// the row's own group (row-unfold.h); tests/model/test-row-unfold.cpp checks that expansion against plan_unfold.
TEST(CudaModel, DeviceRowUnfoldTwoLevelsMatchesCpu) {
  REQUIRE_GPU();
  compare_device_rows("unfold", dtype::bf16, 3e-2, 300, {4, 2});
  compare_device_rows("suffix-unfold", dtype::bf16, 3e-2, 300, {4, 2});
  compare_device_rows("unfold", dtype::f32, 1e-4, 150, {4, 2});
}
// "gists": "all" in H-GSA: the overlay goes on gist::plan_unfold_base (every gist listed for unfolding rows) and
// adds raw tokens only; the CPU test checks that this is plan_unfold's visibility.
TEST(CudaModel, DeviceRowUnfoldGistsAllMatchesCpu) {
  REQUIRE_GPU();
  compare_device_rows("unfold", dtype::bf16, 3e-2, 300, {4, 2}, true);
  compare_device_rows("suffix-unfold", dtype::bf16, 3e-2, 300, {4, 2}, true);
  compare_device_rows("unfold", dtype::f32, 1e-4, 150, {4, 2}, true);
}

// AdamW on the GPU (packed master weights, one launch per half) against the CPU's, tensor by tensor, after three
// steps on the same gradients; then the master weights round-trip to a host model exactly.
TEST(CudaModel, AdamWStepsMatchCpu) {
  REQUIRE_GPU();
  llama_model cpu_m = random_gsa_model("compress", 3, /*tied=*/true);
  llama_model gpu_m = to_backend(cpu_m, get_backend(device::cuda, dtype::bf16));
  adamw_optimizer co(cpu_m), go(gpu_m, &cpu_m);
  for (auto* o : {&co, &go}) {
    o->hp.weight_decay = 0.1f;
    o->max_grad_norm = 0.5f;
  }
  rng r(17);
  for (int step = 0; step < 3; step++) {
    llama_weights cg = make_grads(cpu_m), gg = make_grads(gpu_m);
    auto cl = grad_list(cpu_m, cg), gl = grad_list(gpu_m, gg);
    for (size_t i = 0; i < cl.size(); i++) {
      float* p = cl[i].second->f32();
      for (int64_t j = 0; j < cl[i].second->numel(); j++) p[j] = r.normal() * 0.3f;
      gpu_m.ops().copy(*gl[i].second, gpu_m.ops().upload(*cl[i].second, dtype::f32));
    }
    const double cn = co.step(cpu_m, cg, 1e-2f), gn = go.step(gpu_m, gg, 1e-2f);
    EXPECT_NEAR(gn, cn, 1e-5 * cn) << "gradient norm, step " << step;
  }
  llama_model back = cpu_m;
  for (auto& [n, t] : back.parameters()) *t = Tensor(t->shape());
  go.master_to_host(gpu_m, back);
  auto a = back.parameters(), b = cpu_m.parameters();
  for (size_t i = 0; i < a.size(); i++) EXPECT_LT(max_rel(*a[i].second, *b[i].second), 1e-5) << a[i].first;
  // The bf16 compute copy is the master rounded once.
  auto dev = gpu_m.parameters();
  for (size_t i = 0; i < a.size(); i++) {
    Tensor rounded = a[i].second->to(dtype::bf16).to(dtype::f32);
    EXPECT_EQ(max_rel(*dev[i].second, rounded), 0.0) << dev[i].first;
  }
}

TEST(CudaModel, UnsupportedHeadDimIsAClearError) {
  REQUIRE_GPU();
  llama_model host = test::tiny_model({4});  // head dim 8: no CUDA attention variant
  llama_model m = to_backend(host, get_backend(device::cuda, dtype::bf16));
  auto raw = test::tiny_tokens(20, 1);
  std::vector<int32_t> pos(raw.size());
  for (size_t i = 0; i < pos.size(); i++) pos[i] = int32_t(i);
  forward_state st;
  try {
    forward(m, st, raw, pos, {}, nullptr);
    FAIL() << "head dim 8 ran on CUDA";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa
