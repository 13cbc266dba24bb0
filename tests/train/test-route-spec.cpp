// The routing distillation in training (gsa "route_loss"; backend/route-loss.h): which rows and chunks a
// sequence distils (make_route_specs), at one level and at every level of a walking hierarchy, and runs that log
// the KL and lower it.
#include <gtest/gtest.h>

#include <fstream>

#include "gist/select.h"
#include "train/sequence.h"
#include "train/trainer.h"
#include "train-test-util.h"

namespace gsa {
namespace {

gist::gsa_config route_cfg(int rows) {
  gist::gsa_config c;
  c.chunk = {4};
  c.gist_token_ids = {63};
  c.sink = 2;
  c.local_chunks = 1;
  c.dense_layers = {0};
  c.route_loss = 0.5f;
  c.route_rows = rows;
  return c;
}

train_sequence sample(const gist::gsa_config& c, int loss_begin) {
  train_sample x;
  for (int i = 0; i < 60; i++) x.raw.push_back(i % 50);
  x.loss_begin = loss_begin;
  return make_sequence(x, &c, 8);
}

TEST(RouteSpec, RowsChunksAndLayers) {
  const gist::gsa_config all_rows = route_cfg(1000);
  const train_sequence q = sample(all_rows, 40);
  const std::vector<route_spec> specs = make_route_specs(q, all_rows, 3);
  ASSERT_EQ(specs.size(), 1u) << "one level: one spec";
  const route_spec& s = specs[0];
  EXPECT_EQ(s.span, 1);
  EXPECT_EQ(s.level, 0);
  EXPECT_EQ(s.layers, (std::vector<uint8_t>{0, 1, 1})) << "dense layer 0 does not select, so it does not distil";
  EXPECT_EQ(s.g, 1);
  EXPECT_EQ(s.weight, 0.5f);
  // Every raw row with two or more candidate chunks, in order, and nothing else.
  const int complete = gist::complete_chunk_count(q.s);
  std::vector<int32_t> want;
  for (int t = 0; t < q.s.size(); t++)
    if (!q.s.is_gist(t) && gist::candidate_count(q.s.chunk[t], complete, 1) >= 2) want.push_back(t);
  ASSERT_GT(want.size(), 20u);
  EXPECT_EQ(s.rows, want);
  for (int r = 0; r < s.R(); r++)
    EXPECT_EQ(s.n_cand[size_t(r)], gist::candidate_count(q.s.chunk[s.rows[size_t(r)]], complete, 1));
  // Chunk tables: the raw keys less the sink, the first gist.
  ASSERT_EQ(s.max_cand(), s.n_cand.back());
  EXPECT_EQ(s.raw_begin[0], 2);
  EXPECT_EQ(s.raw_end[0], 4);
  for (int u = 1; u < s.max_cand(); u++) {
    EXPECT_EQ(s.raw_begin[size_t(u)], q.s.chunk_raw_begin[size_t(u)]);
    EXPECT_EQ(s.raw_end[size_t(u)], q.s.chunk_raw_end[size_t(u)]);
    EXPECT_EQ(s.gist_begin[size_t(u)], q.s.chunk_gist_begin[size_t(u)]);
  }
  s.check(q.s.size());

  // Capped: at most route_rows rows, the answer's first rows among them, spread over the sequence.
  const gist::gsa_config few = route_cfg(8);
  const route_spec f = make_route_specs(sample(few, 40), few, 3).at(0);
  ASSERT_EQ(f.R(), 8);
  const auto first_answer = std::lower_bound(want.begin(), want.end(), q.answer_begin);
  ASSERT_NE(first_answer, want.end());
  EXPECT_TRUE(std::binary_search(f.rows.begin(), f.rows.end(), *first_answer)) << "the answer's first row distils";
  EXPECT_EQ(f.rows.front(), want.front());
  EXPECT_TRUE(std::is_sorted(f.rows.begin(), f.rows.end()));
}

// A hierarchy that selects with the top-down walk distils every level: level 1's candidates are the whole units
// of two chunks before the row's own chunk and window, its student the unit's level-1 gist, its teacher the raw
// keys of both chunks; the flat rule scores level 0 only, so distils level 0 only.
TEST(RouteSpec, AWalkingHierarchyDistilsEachLevel) {
  gist::gsa_config c = route_cfg(1000);
  c.chunk = {4, 2};
  c.gist_token_ids = {63, 62};
  c.unfold_walk = true;
  const train_sequence q = sample(c, 0);
  const std::vector<route_spec> specs = make_route_specs(q, c, 3);
  ASSERT_EQ(specs.size(), 2u);
  const route_spec &s0 = specs[0], &s1 = specs[1];
  EXPECT_EQ(s0.level, 0);
  EXPECT_EQ(s1.level, 1);
  EXPECT_EQ(s1.span, 2);
  EXPECT_EQ(s1.layers, s0.layers);
  const int complete = gist::complete_chunk_count(q.s);
  std::vector<int32_t> want;
  for (int t = 0; t < q.s.size(); t++)
    if (!q.s.is_gist(t) && gist::candidate_count(q.s.chunk[t], complete, 1) / 2 >= 2) want.push_back(t);
  ASSERT_GT(want.size(), 10u);
  EXPECT_EQ(s1.rows, want);
  ASSERT_LT(s1.rows.size(), s0.rows.size()) << "level 1 needs two whole units";
  for (int r = 0; r < s1.R(); r++)
    EXPECT_EQ(s1.n_cand[size_t(r)], gist::candidate_count(q.s.chunk[s1.rows[size_t(r)]], complete, 1) / 2);
  ASSERT_EQ(s1.max_cand(), s1.n_cand.back());
  ASSERT_EQ(s1.raw_begin.size(), size_t(2 * s1.max_cand()));
  EXPECT_EQ(s1.raw_begin[0], 2) << "the sink left out";
  for (int u = 0; u < s1.max_cand(); u++) {
    const int gp = s1.gist_begin[size_t(u)];
    EXPECT_EQ(gp, gist::unit_gist_position(q.s, c, 1, u));
    EXPECT_EQ(q.s.level[size_t(gp)], 1) << "unit " << u << "'s student is its level-1 gist";
    EXPECT_GT(gp, q.s.chunk_raw_end[size_t(2 * u + 1)]) << "after the unit's second chunk";
    EXPECT_EQ(s1.raw_end[size_t(2 * u + 1)], q.s.chunk_raw_end[size_t(2 * u + 1)]);
  }
  s1.check(q.s.size());
  c.unfold_walk = false;
  const std::vector<route_spec> flat = make_route_specs(q, c, 3);
  ASSERT_EQ(flat.size(), 1u);
  EXPECT_EQ(flat[0].span, 1);
  EXPECT_EQ(flat[0].rows, s0.rows);
}

// A run with "route_loss" logs the KL each step; with a real weight it ends far below a run of the same recipe
// whose weight is negligible (1e-6: the KL is measured but does not pull), as the model's attention moves under
// both; so does level 1's KL (route_kl_l1) in a walking hierarchy; a run without the key logs none.
TEST(RouteSpec, TrainingLogsAndLowersTheKl) {
  auto dir = test::train_temp_dir("route");
  auto data = test::make_tiny_dataset(dir / "data");
  auto tail_kl = [&](const std::string& name, double weight, const char* key = "route_kl", bool walk = false) {
    train_options o = test::tiny_run(data, (dir / name).string());
    o.gsa["train_mode"] = "unfold";
    if (walk) {  // a hierarchy of 4 x 2 that selects with the top-down walk: level 1 distils too
      o.gsa["chunk"] = {4, 2};
      o.gsa["unfold_select"] = "walk";
      o.seq_len = 64;
    }
    o.gsa["route_loss"] = weight;
    o.gsa["route_rows"] = 32;
    o.steps = 60;
    o.eval_every = 0;
    o.save_every = 0;
    run_training(o);
    const auto kl = test::logged(o.out + "/log.jsonl", key);
    EXPECT_EQ(kl.size(), 60u);
    double tail = 0;
    for (size_t i = kl.size() - std::min<size_t>(kl.size(), 10); i < kl.size(); i++) tail += kl[i] / 10;
    return tail;
  };
  const double pulled = tail_kl("pulled", 4.0), measured = tail_kl("measured", 1e-6);
  EXPECT_GT(measured, 0.01);
  EXPECT_LT(pulled, 0.5 * measured) << "route_kl over the last 10 steps: " << pulled << " pulled, " << measured
                                     << " measured";
  EXPECT_TRUE(test::logged(dir / "pulled/log.jsonl", "route_kl_l1").empty()) << "one level";
  const double pulled1 = tail_kl("walk-pulled", 4.0, "route_kl_l1", true);
  const double measured1 = tail_kl("walk-measured", 1e-6, "route_kl_l1", true);
  EXPECT_GT(measured1, 0.01);
  EXPECT_LT(pulled1, 0.5 * measured1) << "level 1's route_kl over the last 10 steps: " << pulled1 << " pulled, "
                                      << measured1 << " measured";
  train_options off = test::tiny_run(data, (dir / "off").string());
  off.steps = 2;
  run_training(off);
  EXPECT_TRUE(test::logged(off.out + "/log.jsonl", "route_kl").empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gsa
