// Tests of the GPU chunk selection (backend/cuda/select.h) against the CPU reference: gist::score_units +
// gist::select_chunks called block by block exactly as src/model/gsa-plans.cpp's select_for_blocks does, over
// streams from gist::build_stream, per-chunk blocks (plan_compress) and per-row blocks (plan_split_rows), bf16
// and f32, GQA 1/2/4, D 64/96/128, fixed and adaptive k, union and group scoring.
//
// Equality: the GPU computes every score with the CPU's operations in the CPU's order (select.h), so the
// selections should be identical. The comparison still tolerates a chunk that one side selects and the other
// does not when its CPU score is within 1e-4 (relative) of the CPU's k-th largest score of some head of the
// group (a near-tie that a last-bit rounding difference could flip); the number of tolerated chunks is printed
// and is expected to be 0. The tie test uses small-integer data whose scores are exact in any order, so there it
// demands exact equality (ties: lower index wins; NaN ranks as -inf).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "backend/cuda/runtime.h"
#include "backend/cuda/select.h"
#include "backend/row-unfold.h"
#include "core/dtype.h"
#include "core/error.h"
#include "gist/plan.h"
#include "gist/select.h"
#include "gist/stream.h"
#include "test-util.h"

namespace gsa::cuda {
namespace {

struct dbuf {
  void* p = nullptr;
  explicit dbuf(size_t b) : p(alloc(std::max<size_t>(1, b))) {}
  ~dbuf() { release(p); }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
};

struct sel_case {
  std::vector<int> chunk = {8};
  int g = 1, local = 1;
  gist::select_rule rule = gist::select_rule::adaptive;
  int topk = 4;
  bool group_scoring = false;
  int Hq = 4, Hkv = 4, D = 64;
  bool bf16 = false;
  bool per_token = true;
  int n_raw = 300;
  int first_row_frac = 0;      // > 0: b_begin = first block at row T * frac / 4 (suffix-style)
  int64_t scratch = 0;         // select_args::max_scratch_scores
  bool integer_data = false;   // small integers (exact scores, many ties) and some NaN gist keys
  int pad = 0;                 // > 0: q and k rows padded by this many elements (select_args row strides)
  bool walk = true;            // gsa_config::unfold_walk (a hierarchy walks top-down, else flat)
  bool exact = false;          // select_args::exact_scores
  bool clustered = false;      // keys = one vector per KV head + 1e-3 noise, every 64th key 40x larger: scores
                               // bunched far below a few outliers (the warp top-k's narrowing passes)
};

// Whether the case's scores run on tensor cores (select-mma.cu: per-token, bf16, D 64 / 128, 16-byte rows), the
// one path allowed to differ from the CPU, and only at near-ties.
bool tensor_core_scores(const sel_case& c) {
  return c.bf16 && c.per_token && !c.exact && (c.D == 64 || c.D == 128) && c.pad % 8 == 0;
}

gist::gsa_config make_cfg(const sel_case& c) {
  gist::gsa_config cfg;
  cfg.chunk = c.chunk;
  cfg.gists_per_chunk = c.g;
  cfg.gist_token_ids.clear();
  for (size_t l = 0; l < c.chunk.size(); l++) cfg.gist_token_ids.push_back(int32_t(1000 + l));
  cfg.local_chunks = c.local;
  cfg.select = c.rule;
  cfg.topk = c.topk;
  cfg.group_scoring = c.group_scoring;
  cfg.unfold_walk = c.walk;
  return cfg;
}

// The CPU reference, written as select_for_blocks (gist::select_block: flat, or the walk of a hierarchy); also
// keeps each selecting block's level-0 scores (Hq, n_cand).
void cpu_select(const gist::gsa_config& cfg, const gist::stream& s, const cpu::attn_plan& plan, int b_begin,
                const float* q, const float* k, int Hq, int Hkv, int D, std::vector<std::vector<int32_t>>& selected,
                std::vector<uint8_t>& unfolds, std::vector<std::vector<float>>& scores) {
  const int T = s.size(), nb = plan.n_blocks();
  const int n_complete = gist::complete_chunk_count(s);
  const std::vector<std::vector<int32_t>> tables = gist::unit_gist_tables(s, cfg);
  selected.assign(size_t(nb - b_begin) * Hkv, {});
  unfolds.assign(size_t(nb), 0);
  scores.assign(size_t(nb), {});
  for (int b = b_begin; b < nb; b++) {
    const int r0 = plan.block_q[b], r1 = plan.block_q[b + 1];
    if (s.level[r0] > 0) continue;
    const int chunk = s.chunk[r0];
    const int n_cand = gist::candidate_count(chunk, n_complete, cfg.local_chunks);
    if (n_cand <= 0) continue;
    std::vector<std::vector<float>> levels;
    auto sel = gist::select_block(q + size_t(r0) * Hq * D, r1 - r0, k, T, Hq, Hkv, D, tables, chunk, n_cand, cfg,
                                  &levels);
    scores[size_t(b)] = std::move(levels[0]);
    for (int h = 0; h < Hkv; h++) selected[size_t(b - b_begin) * Hkv + h] = std::move(sel[h]);
    unfolds[size_t(b)] = 1;
  }
}

float rank_value(float x) { return std::isnan(x) ? -INFINITY : x; }

// k-th largest CPU score (rank value) of one score row, the selection boundary of that head.
float kth_score(const float* s, int n, int k) {
  std::vector<float> v(s, s + n);
  for (auto& x : v) x = rank_value(x);
  k = std::clamp(k, 1, n);
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  return v[size_t(k - 1)];
}

// True when chunk u's score is within 1e-4 (relative) of the boundary of some selection row of KV head h.
// Two scores equal up to the tensor cores' rounding (relative 1e-4; non-finite ones exactly).
bool near(float a, float b) {
  if (!std::isfinite(a) || !std::isfinite(b)) return a == b;
  return std::fabs(a - b) <= 1e-4f * std::max(std::fabs(a), std::fabs(b)) + 1e-30f;
}

bool near_boundary(const std::vector<float>& sc, int Hq, int Hkv, int n, int k, bool group, int h, int u) {
  const int G = Hq / Hkv;
  if (group) {
    std::vector<float> sum(size_t(n), 0.0f);
    for (int i = 0; i < G; i++)
      for (int j = 0; j < n; j++) sum[j] += sc[size_t(h * G + i) * n + j];
    return near(rank_value(sum[u]), kth_score(sum.data(), n, k));
  }
  for (int i = 0; i < G; i++) {
    const float* row = sc.data() + size_t(h * G + i) * n;
    if (near(rank_value(row[u]), kth_score(row, n, k))) return true;
  }
  return false;
}

// Whether unit u of a symmetric difference has a partner v there with a (nearly) equal score for some query head
// of KV head h (or the group sum): the two swapped places at a near-tie.
bool swapped_near(const std::vector<float>& sc, int Hq, int Hkv, int n, bool group, int h, int u,
                  const std::vector<int32_t>& diff) {
  const int G = Hq / Hkv;
  auto score = [&](int i, int x) {
    if (!group) return sc[size_t(h * G + i) * n + x];
    float sum = 0.0f;
    for (int j = 0; j < G; j++) sum += sc[size_t(h * G + j) * n + x];
    return sum;
  };
  for (int32_t v : diff) {
    if (v == u || v < 0 || v >= n) continue;
    for (int i = 0; i < (group ? 1 : G); i++)
      if (near(rank_value(score(i, u)), rank_value(score(i, v)))) return true;
  }
  return false;
}

void check_case(const sel_case& c, uint64_t seed) {
  std::string why;
  if (!available(&why)) GTEST_SKIP() << why;
  SCOPED_TRACE(::testing::Message() << "c0 " << c.chunk[0] << " levels " << c.chunk.size() << " g " << c.g
                                    << " local " << c.local << " rule " << gist::select_rule_name(c.rule)
                                    << " group " << c.group_scoring << " Hq/Hkv " << c.Hq << "/" << c.Hkv << " D "
                                    << c.D << (c.bf16 ? " bf16" : " f32")
                                    << (c.per_token ? " per-token" : " per-chunk") << " n " << c.n_raw
                                    << (c.walk ? " walk" : " flat"));
  const gist::gsa_config cfg = make_cfg(c);
  std::vector<int32_t> raw(size_t(c.n_raw), 7);
  const gist::stream s = gist::build_stream(raw.data(), c.n_raw, cfg);
  const int T = s.size();
  cpu::attn_plan plan = gist::plan_compress(s, cfg);
  if (c.per_token) plan = gist::plan_split_rows(plan, 0);
  const int b_begin = c.first_row_frac > 0 ? gist::first_block_at(plan, T * c.first_row_frac / 4) : 0;

  rng r(seed);
  std::vector<float> q(size_t(T) * c.Hq * c.D), k(size_t(T) * c.Hkv * c.D);
  if (c.integer_data) {
    for (auto& x : q) x = float(int(r.below(3)) - 1);
    for (auto& x : k) x = float(int(r.below(3)) - 1);
    // A few gists get NaN keys (their scores are NaN for every row, so -inf after the max).
    for (int u = 0; u < s.n_chunks(); u++)
      if (s.chunk_gist_begin[u] >= 0 && r.below(7) == 0)
        for (int d = 0; d < c.D; d++) k[(size_t(s.chunk_gist_begin[u]) * c.Hkv) * c.D + d] = NAN;
  } else {
    q = test::randn(q.size(), r);
    k = test::randn(k.size(), r);
  }
  if (c.clustered) {
    const std::vector<float> base = test::randn(size_t(c.Hkv) * c.D, r);
    for (int t = 0; t < T; t++)
      for (int h = 0; h < c.Hkv; h++)
        for (int d = 0; d < c.D; d++) {
          float& x = k[(size_t(t) * c.Hkv + h) * c.D + d];
          x = t % 64 == 5 ? 40.0f * x : base[size_t(h) * c.D + d] + 1e-3f * x;
        }
  }
  const dtype type = c.bf16 ? dtype::bf16 : dtype::f32;
  const size_t es = dtype_size(type);
  std::vector<uint8_t> qh(q.size() * es), kh(k.size() * es);
  if (c.bf16) {  // the CPU reads exactly the bf16 values the GPU reads
    convert_from_f32(qh.data(), q.data(), type, q.size());
    convert_from_f32(kh.data(), k.data(), type, k.size());
    convert_to_f32(q.data(), qh.data(), type, q.size());
    convert_to_f32(k.data(), kh.data(), type, k.size());
  } else {
    std::memcpy(qh.data(), q.data(), qh.size());
    std::memcpy(kh.data(), k.data(), kh.size());
  }

  std::vector<std::vector<int32_t>> want;
  std::vector<uint8_t> want_unfolds;
  std::vector<std::vector<float>> scores;
  cpu_select(cfg, s, plan, b_begin, q.data(), k.data(), c.Hq, c.Hkv, c.D, want, want_unfolds, scores);

  const size_t q_row = size_t(c.Hq) * c.D, k_row = size_t(c.Hkv) * c.D;
  if (c.pad > 0) {  // rows q_row + pad / k_row + pad elements apart, the padding garbage
    std::vector<uint8_t> qp(size_t(T) * (q_row + c.pad) * es, 0xff), kp(size_t(T) * (k_row + c.pad) * es, 0xff);
    for (int t = 0; t < T; t++) {
      std::memcpy(qp.data() + t * (q_row + c.pad) * es, qh.data() + t * q_row * es, q_row * es);
      std::memcpy(kp.data() + t * (k_row + c.pad) * es, kh.data() + t * k_row * es, k_row * es);
    }
    qh.swap(qp);
    kh.swap(kp);
  }
  dbuf dq(qh.size()), dk(kh.size());
  copy_h2d(dq.p, qh.data(), qh.size());
  copy_h2d(dk.p, kh.data(), kh.size());
  select_args a;
  a.q = dq.p;
  a.k = dk.p;
  a.type = type;
  a.T = T;
  a.Hq = c.Hq;
  a.Hkv = c.Hkv;
  a.D = c.D;
  if (c.pad > 0) {
    a.q_stride_t = int64_t(q_row) + c.pad;
    a.k_stride_t = int64_t(k_row) + c.pad;
  }
  a.block_q = plan.block_q.data();
  a.n_blocks = plan.n_blocks();
  a.b_begin = b_begin;
  a.row_level = s.level.data();
  a.row_chunk = s.chunk.data();
  a.chunk_gist_begin = s.chunk_gist_begin.data();
  a.n_chunks = s.n_chunks();
  a.n_complete = gist::complete_chunk_count(s);
  a.cfg = &cfg;
  a.max_scratch_scores = c.scratch;
  a.exact_scores = c.exact;
  std::vector<std::vector<int32_t>> got;
  std::vector<uint8_t> got_unfolds;
  const int64_t total = select_blocks(a, got, got_unfolds);

  ASSERT_EQ(got_unfolds, want_unfolds);
  ASSERT_EQ(got.size(), want.size());
  int64_t want_total = 0, tolerated = 0, unfolding = 0;
  for (auto& v : want) want_total += int64_t(v.size());
  int64_t got_total = 0;
  for (auto& v : got) got_total += int64_t(v.size());
  EXPECT_EQ(total, got_total);
  const int n_complete = gist::complete_chunk_count(s);
  for (int b = b_begin; b < plan.n_blocks(); b++) {
    if (!want_unfolds[size_t(b)]) {
      for (int h = 0; h < c.Hkv; h++) EXPECT_TRUE(got[size_t(b - b_begin) * c.Hkv + h].empty()) << "block " << b;
      continue;
    }
    unfolding++;
    const int chunk = s.chunk[plan.block_q[b]];
    const int n = gist::candidate_count(chunk, n_complete, cfg.local_chunks);
    const int kk = gist::select_k(cfg, int64_t(chunk) * cfg.chunk[0], c.Hq / c.Hkv, n);
    for (int h = 0; h < c.Hkv; h++) {
      const auto& gv = got[size_t(b - b_begin) * c.Hkv + h];
      const auto& wv = want[size_t(b - b_begin) * c.Hkv + h];
      ASSERT_TRUE(std::is_sorted(gv.begin(), gv.end())) << "block " << b << " head " << h;
      ASSERT_TRUE(std::adjacent_find(gv.begin(), gv.end()) == gv.end()) << "duplicates, block " << b;
      if (gv == wv) continue;
      std::vector<int32_t> diff;
      std::set_symmetric_difference(gv.begin(), gv.end(), wv.begin(), wv.end(), std::back_inserter(diff));
      for (int32_t u : diff) {
        // A walk's level-0 top-k runs over the units it allows, so its k-th place is not the one over all n
        // candidates: there a near-tie shows as two swapped units of (nearly) equal scores.
        const bool ok = !c.integer_data && u >= 0 && u < n &&
                        (near_boundary(scores[size_t(b)], c.Hq, c.Hkv, n, kk, c.group_scoring, h, u) ||
                         (c.chunk.size() > 1 && c.walk &&
                          swapped_near(scores[size_t(b)], c.Hq, c.Hkv, n, c.group_scoring, h, u, diff)));
        ASSERT_TRUE(ok) << "block " << b << " KV head " << h << ": chunk " << u << " selected by "
                        << (std::binary_search(gv.begin(), gv.end(), u) ? "the GPU" : "the CPU") << " only (k "
                        << kk << ", " << n << " candidates)";
        tolerated++;
      }
    }
  }
  EXPECT_GT(unfolding, 0) << "the case selects nothing: make it longer";
  if (!tensor_core_scores(c)) {
    EXPECT_EQ(tolerated, 0) << "the exact scores must select as the CPU, bit for bit";
  }

  {  // A pass of a chunked prefill: the middle third of the blocks, q holding only their rows (q_row0 = their
     // first row), k the keys before their end. The same selection as the whole call's for those blocks.
    const int nb = plan.n_blocks(), pb0 = b_begin + (nb - b_begin) / 3;
    const int pb1 = std::max(pb0 + 1, nb - (nb - b_begin) / 3);
    const int r0 = plan.block_q[size_t(pb0)], r1 = plan.block_q[size_t(pb1)];
    const int64_t q_st = a.q_stride_t > 0 ? a.q_stride_t : int64_t(q_row);
    select_args p = a;
    p.q = static_cast<const uint8_t*>(dq.p) + size_t(r0) * size_t(q_st) * es;
    p.T = r1 - r0;
    p.q_row0 = r0;
    p.Tk = r1;
    p.b_begin = pb0;
    p.n_blocks = pb1;
    std::vector<std::vector<int32_t>> pass;
    std::vector<uint8_t> pass_unfolds;
    select_blocks(p, pass, pass_unfolds);
    ASSERT_EQ(pass_unfolds.size(), size_t(pb1));
    ASSERT_EQ(pass.size(), size_t(pb1 - pb0) * c.Hkv);
    for (int b = pb0; b < pb1; b++) {
      EXPECT_EQ(pass_unfolds[size_t(b)], got_unfolds[size_t(b)]) << "pass block " << b;
      for (int h = 0; h < c.Hkv; h++)
        EXPECT_EQ(pass[size_t(b - pb0) * c.Hkv + h], got[size_t(b - b_begin) * c.Hkv + h]) << "pass block " << b;
    }
    select_args outside = p;
    outside.q_row0 = r0 + 1;  // the first block's rows would start before q's
    EXPECT_THROW(select_blocks(outside, pass, pass_unfolds), gsa::error);
  }

  if (c.per_token) {  // the same selection kept on the device as per-row tables (select_rows, row-unfold.h)
    // Built for other inputs (q and k swapped) and rebound to these, as a training step's later layers reuse
    // the first layer's tables: the result must be this q and k's selection.
    select_args other = a;
    std::swap(other.q, other.k);
    const row_selection rows = row_selection(other).rebound(a);
    select_args bad = a;
    bad.b_begin = a.b_begin + 1;
    EXPECT_THROW(rows.rebound(bad), gsa::error) << "rebound to other tables";
    const int cap = std::max(1, rows.cap());
    std::vector<int32_t> kb, ke;
    unfold_ranges(s, cfg, kb, ke);
    dbuf t_count(size_t(T) * c.Hkv * 4), t_ids(size_t(T) * c.Hkv * cap * 4), d_kb(kb.size() * 4),
        d_ke(ke.size() * 4), d_tot(16);
    memset0(t_count.p, size_t(T) * c.Hkv * 4);
    memset0(d_tot.p, 16);
    copy_h2d(d_kb.p, kb.data(), kb.size() * 4);
    copy_h2d(d_ke.p, ke.data(), ke.size() * 4);
    rows.run(static_cast<int32_t*>(t_count.p), static_cast<int32_t*>(t_ids.p), cap, static_cast<const int32_t*>(d_kb.p),
             static_cast<const int32_t*>(d_ke.p), nullptr, nullptr, static_cast<unsigned long long*>(d_tot.p));
    std::vector<int32_t> count(size_t(T) * c.Hkv), ids(size_t(T) * c.Hkv * cap);
    unsigned long long tot[2];
    copy_d2h(count.data(), t_count.p, count.size() * 4);
    copy_d2h(ids.data(), t_ids.p, ids.size() * 4);
    copy_d2h(tot, d_tot.p, 16);
    std::vector<int> block_of(size_t(T), -1);
    for (int b = b_begin; b < plan.n_blocks(); b++) block_of[size_t(plan.block_q[b])] = b;
    unsigned long long keys = 0;
    for (int row = 0; row < T; row++)
      for (int h = 0; h < c.Hkv; h++) {
        const int b = block_of[size_t(row)];
        const std::vector<int32_t> none;
        const auto& gv = b >= 0 ? got[size_t(b - b_begin) * c.Hkv + h] : none;
        ASSERT_EQ(count[size_t(row) * c.Hkv + h], int(gv.size())) << "row " << row << " head " << h;
        for (size_t i = 0; i < gv.size(); i++) {
          ASSERT_EQ(ids[(size_t(row) * c.Hkv + h) * cap + i], gv[i]) << "row " << row << " head " << h;
          keys += (unsigned long long)(ke[size_t(gv[i])] - kb[size_t(gv[i])]);
        }
      }
    EXPECT_EQ(tot[0], (unsigned long long)got_total);
    EXPECT_EQ(tot[1], keys);
  }
  std::printf("  [select] %lld unfolding blocks, %lld chunks (CPU %lld), %lld near-tie mismatches tolerated\n",
              (long long)unfolding, (long long)got_total, (long long)want_total, (long long)tolerated);
}

using gist::select_rule;

TEST(CudaSelect, PerTokenAdaptiveF32) {
  sel_case c;
  c.chunk = {4};
  c.Hq = c.Hkv = 4;
  c.D = 64;
  check_case(c, 1);
}

TEST(CudaSelect, PerTokenFixedBf16Gqa2TwoGists) {
  sel_case c;
  c.chunk = {8};
  c.g = 2;
  c.local = 2;
  c.rule = select_rule::fixed;
  c.topk = 3;
  c.Hq = 8;
  c.Hkv = 4;
  c.D = 128;
  c.bf16 = true;
  check_case(c, 2);
}

TEST(CudaSelect, PerChunkAdaptiveBf16Gqa4) {
  sel_case c;
  c.chunk = {16};
  c.Hq = 8;
  c.Hkv = 2;
  c.D = 64;
  c.bf16 = true;
  c.per_token = false;
  c.n_raw = 1200;
  check_case(c, 3);
}

TEST(CudaSelect, PerChunkFixedF32Gqa4TwoGists) {
  sel_case c;
  c.chunk = {4};
  c.g = 2;
  c.rule = select_rule::fixed;
  c.topk = 5;  // early blocks have fewer candidates than k: all of them
  c.Hq = 4;
  c.Hkv = 1;
  c.D = 128;
  c.per_token = false;
  check_case(c, 4);
}

TEST(CudaSelect, PerTokenGroupScoringGqa2) {
  sel_case c;
  c.chunk = {8};
  c.local = 2;
  c.group_scoring = true;
  c.Hq = 8;
  c.Hkv = 4;
  c.D = 128;
  check_case(c, 5);
}

TEST(CudaSelect, PerChunkGroupScoringFixedBf16) {
  sel_case c;
  c.chunk = {16};
  c.g = 2;
  c.rule = select_rule::fixed;
  c.topk = 2;
  c.group_scoring = true;
  c.Hq = 2;
  c.Hkv = 1;
  c.D = 64;
  c.bf16 = true;
  c.per_token = false;
  c.n_raw = 900;
  check_case(c, 6);
}

TEST(CudaSelect, HierarchySkipsHigherLevelGistBlocks) {
  sel_case c;
  c.chunk = {4, 4};
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 64;
  c.bf16 = true;
  c.per_token = false;
  check_case(c, 7);
  c.per_token = true;
  check_case(c, 8);
}

// The training walk of a hierarchy (gist::select_block, select-walk.cu): the level-l units scored per block, the
// top-down walk per (block, KV head), equal to the CPU's; beside the flat selection over the same levels.
TEST(CudaSelect, HierarchyWalksAsTheCpu) {
  sel_case c;
  c.chunk = {4, 4};
  c.Hq = 8;
  c.Hkv = 2;
  c.bf16 = true;
  c.n_raw = 1200;
  check_case(c, 21);  // adaptive, per token: 16 x 16 tokens per level-1 unit
  c.walk = false;
  check_case(c, 21);
  c.walk = true;
  c.per_token = false;
  c.rule = select_rule::fixed;
  c.topk = 2;
  check_case(c, 22);
}

// Per-token walks score level 0 inside the walk (walk_args::score0), only at the units the walk allows: the
// vector path in bf16 with D 128 and two gists per chunk, a large fixed k (whole levels kept), the scalar path
// (D 96, f32), padded rows, and GQA 4 with group scoring.
TEST(CudaSelect, HierarchyPerTokenScoresLevelZeroInTheWalk) {
  sel_case c;
  c.chunk = {4, 2};
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 128;
  c.g = 2;
  c.bf16 = true;
  c.n_raw = 1500;
  check_case(c, 28);
  c.rule = select_rule::fixed;
  c.topk = 40;  // more than a short row's allowed units: every allowed unit kept
  check_case(c, 29);
  c.g = 1;
  c.D = 96;
  c.bf16 = false;
  c.rule = select_rule::adaptive;
  check_case(c, 30);
  c.D = 64;
  c.pad = 3;
  check_case(c, 31);
  c.pad = 0;
  c.Hq = 8;
  c.group_scoring = true;
  c.bf16 = true;
  check_case(c, 32);
}

// Scores bunched in a sliver of their range (a few outlier keys stretch it): the warp top-k's first histogram puts
// the bunch into one bin, more than it resolves by rank, and it narrows the range again. f32: exact, so the GPU
// must select as the CPU bit for bit; flat and walked, fixed and adaptive k, and group scoring.
TEST(CudaSelect, PerTokenTopKOfBunchedScores) {
  sel_case c;
  c.clustered = true;
  c.chunk = {4};
  c.Hq = 4;
  c.Hkv = 2;
  c.n_raw = 3000;
  check_case(c, 41);
  c.rule = select_rule::fixed;
  c.topk = 24;
  check_case(c, 42);
  c.chunk = {4, 2};
  check_case(c, 43);
  c.rule = select_rule::adaptive;
  c.group_scoring = true;
  check_case(c, 44);
}

TEST(CudaSelect, HierarchyWalkThreeLevelsGroupScoringAndTies) {
  sel_case c;
  c.chunk = {2, 2, 3};
  c.rule = select_rule::fixed;
  c.topk = 2;
  c.group_scoring = true;
  c.Hq = 4;
  c.Hkv = 2;
  c.n_raw = 700;
  check_case(c, 23);
  c.group_scoring = false;
  c.integer_data = true;  // exact scores, many ties at every level: the lower unit wins on both sides
  c.chunk = {4, 2};
  check_case(c, 24);
  c.scratch = 4096;  // batches: every level's scores restart with the batch
  c.integer_data = false;
  c.rule = select_rule::adaptive;
  check_case(c, 25);
}

TEST(CudaSelect, OddHeadDimUsesTheScalarPath) {
  sel_case c;
  c.chunk = {4};
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 96;
  check_case(c, 9);
}

TEST(CudaSelect, SuffixBlocksOnly) {
  sel_case c;
  c.chunk = {8};
  c.bf16 = true;
  c.first_row_frac = 3;
  check_case(c, 10);
  c.per_token = false;
  check_case(c, 11);
}

TEST(CudaSelect, StridedRows) {
  sel_case c;
  c.chunk = {8};
  c.Hq = 4;
  c.Hkv = 2;
  c.D = 128;
  c.bf16 = true;
  c.pad = 8;  // 16 bytes: the vector path
  check_case(c, 16);
  c.pad = 3;  // the scalar path
  c.per_token = false;
  check_case(c, 17);
}

TEST(CudaSelect, SmallScratchRunsInBatches) {
  sel_case c;
  c.chunk = {4};
  c.Hq = 8;
  c.Hkv = 2;
  c.scratch = 1000;  // a few blocks per batch
  check_case(c, 12);
}

TEST(CudaSelect, TiesPickTheLowerIndexAndNanRanksLast) {
  sel_case c;
  c.chunk = {4};
  c.integer_data = true;
  c.Hq = 4;
  c.Hkv = 2;
  check_case(c, 13);
  c.rule = select_rule::fixed;
  c.topk = 3;
  c.per_token = false;
  c.bf16 = true;
  check_case(c, 14);
  c.group_scoring = true;
  check_case(c, 15);
  c.per_token = true;  // the one-warp top-k of one-row blocks, with ties and NaN: group sum, then per head
  check_case(c, 16);
  c.group_scoring = false;
  check_case(c, 17);
}

// select_args::exact_scores: per-token selection on bf16 with the exact f32 kernel instead of tensor cores, the
// CPU's selection with no near-tie allowance (the default path is the other cases' bf16 per-token runs).
TEST(CudaSelect, PerTokenBf16ExactScoresEqualTheCpu) {
  sel_case c;
  c.chunk = {4};
  c.n_raw = 2400;
  c.Hq = 8;
  c.Hkv = 2;
  c.bf16 = true;
  c.exact = true;
  check_case(c, 26);
  c.g = 2;
  c.D = 128;
  c.rule = select_rule::fixed;
  c.topk = 12;
  check_case(c, 27);
}

// Per-token selection over long candidate lists (up to ~1200 chunks: many mask words per warp, several score
// rows per CTA with different candidate counts).
TEST(CudaSelect, PerTokenLongLists) {
  sel_case c;
  c.chunk = {4};
  c.n_raw = 4800;
  c.Hq = 6;
  c.Hkv = 2;
  c.bf16 = true;
  check_case(c, 18);
  c.rule = select_rule::fixed;
  c.topk = 40;
  check_case(c, 19);
}

TEST(CudaSelect, TopPIsRejectedWithAClearError) {
  std::string why;
  if (!available(&why)) GTEST_SKIP() << why;
  sel_case c;
  gist::gsa_config cfg = make_cfg(c);
  cfg.select = select_rule::top_p;
  select_args a;
  a.cfg = &cfg;
  try {
    std::vector<std::vector<int32_t>> sel;
    std::vector<uint8_t> unf;
    select_blocks(a, sel, unf);
    FAIL() << "expected gsa::error";
  } catch (const gsa::error& e) {
    EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gsa::cuda
