// The model against PyTorch + transformers: logits, loss and every parameter gradient of tiny random Llama and
// Qwen2 models (scripts/make-goldens.py wrote tests/data/golden on a machine with torch), plus the Llama on a gist
// stream with the DESIGN 1.2 mask given to transformers as a 4D attention mask.
#include <nlohmann/json.hpp>

#include <fstream>

#include "io/safetensors.h"
#include "model/llama.h"
#include "test-util.h"

namespace gsa {
namespace {

std::string golden_dir(const char* name) { return (test::source_dir() / "tests/data/golden" / name).string(); }

std::vector<int32_t> to_vec(const Tensor& t) {
  Tensor c = t.type() == dtype::i32 ? t : t.to(dtype::i32);
  return std::vector<int32_t>(c.i32(), c.i32() + c.numel());
}

// HF labels are unshifted (position i is scored on labels[i+1]); ours are shifted targets.
std::vector<int32_t> shift(const std::vector<int32_t>& labels) {
  std::vector<int32_t> t(labels.size(), -100);
  for (size_t i = 0; i + 1 < labels.size(); i++) t[i] = labels[i + 1];
  return t;
}

void check_against_golden(const llama_model& m, const std::string& dir, const plan_provider* plans,
                          const std::vector<int32_t>* positions = nullptr) {
  auto g = safetensors_file::open(dir + "/golden.safetensors");
  auto ids = to_vec(g.view("input_ids"));
  auto labels = to_vec(g.view("labels"));
  std::vector<int32_t> pos(ids.size());
  for (size_t i = 0; i < pos.size(); i++) pos[i] = int32_t(i);
  if (positions) pos = *positions;
  forward_state st;
  forward(m, st, ids, pos, shift(labels), plans);
  Tensor ref_logits = g.load_f32("logits");
  Tensor got = logits(m, st);
  ASSERT_EQ(got.numel(), ref_logits.numel());
  EXPECT_LT(test::max_rel_err(got.f32(), ref_logits.f32(), got.numel()), 1e-4) << "logits";
  float ref_loss = g.load_f32("loss").f32()[0];
  EXPECT_NEAR(st.loss(), ref_loss, 1e-4 * std::fabs(ref_loss)) << "loss";

  llama_weights grads = make_grads(m);
  backward(m, st, grads);
  auto ref = safetensors_file::open(dir + "/grads.safetensors");
  auto list = grad_list(m, grads);
  int checked = 0;
  for (auto& [name, t] : list) {
    ASSERT_TRUE(ref.has(name)) << name;
    Tensor r = ref.load_f32(name, t->shape());
    EXPECT_LT(test::max_rel_err(t->f32(), r.f32(), t->numel()), 1e-4) << "gradient of " << name;
    checked++;
  }
  EXPECT_EQ(checked, int(ref.names().size())) << "every gradient transformers computed is compared";
}

TEST(Golden, LlamaMatchesTransformers) {
  llama_model m = load_model(golden_dir("llama"));
  EXPECT_EQ(m.config.architecture, "llama");
  EXPECT_EQ(m.config.num_key_value_heads, 2);
  EXPECT_EQ(m.config.rope_scaling.type, rope_scaling_config::kind::llama3);
  check_against_golden(m, golden_dir("llama"), nullptr);
}

TEST(Golden, Qwen2MatchesTransformers) {
  llama_model m = load_model(golden_dir("qwen2"));
  EXPECT_EQ(m.config.architecture, "qwen2");
  EXPECT_TRUE(m.config.tie_word_embeddings);
  EXPECT_TRUE(m.config.qkv_bias);
  check_against_golden(m, golden_dir("qwen2"), nullptr);
}

// The mask transformers saw, turned into a plan of one-row blocks: checks model + plan-driven attention on the
// gist stream (positions repeat at gists, labels ignore gist targets) independently of gist/.
TEST(Golden, LlamaGistStreamMatchesTransformers) {
  llama_model m = load_model(golden_dir("llama"));
  auto g = safetensors_file::open(golden_dir("llama-gist") + "/golden.safetensors");
  auto pos = to_vec(g.view("position_ids"));
  Tensor mask = g.view("mask");
  const int T = int(mask.dim(0));
  const uint8_t* mk = static_cast<const uint8_t*>(mask.raw());
  cpu::attn_plan plan;
  plan.block_q.push_back(0);
  plan.seg_ptr.push_back(0);
  std::vector<int32_t> keys;
  for (int q = 0; q < T; q++) {
    keys.clear();
    for (int k = 0; k <= q; k++)
      if (mk[q * T + k]) keys.push_back(k);
    cpu::plan_push_keys(plan, keys);
    plan.block_q.push_back(q + 1);
  }
  plan_provider plans = [&](int, const layer_qk&) { return plan; };
  check_against_golden(m, golden_dir("llama-gist"), &plans, &pos);
}

TEST(Golden, SaveAndReloadIsExact) {
  llama_model m = load_model(golden_dir("qwen2"));
  auto dir = std::filesystem::temp_directory_path() / "gsa-test-save-qwen2";
  save_model(m, dir.string());
  llama_model r = load_model(dir.string());
  EXPECT_EQ(r.config.architecture, "qwen2");
  EXPECT_EQ(r.config.tie_word_embeddings, true);
  auto a = m.parameters();
  auto b = r.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); i++) {
    EXPECT_EQ(a[i].first, b[i].first);
    ASSERT_EQ(a[i].second->numel(), b[i].second->numel());
    EXPECT_EQ(0, std::memcmp(a[i].second->raw(), b[i].second->raw(), a[i].second->nbytes())) << a[i].first;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gsa
