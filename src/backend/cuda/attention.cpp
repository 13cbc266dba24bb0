// Host side of plan-driven attention on CUDA: plan validation and upload, shape checks, the f32 scratch of the
// backward, launch wrappers. Contract: attention.h; kernels: attention-fwd.cu, attention-bwd.cu (seam:
// attention-kernels.h). Everything a caller can get wrong throws gsa::error before any kernel runs.
#include "backend/cuda/attention.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/attention.h"
#include "backend/cuda/attention-kernels.h"
#include "backend/cuda/runtime.h"
#include "core/error.h"
#include "core/profile.h"

namespace gsa::cuda {

namespace {

// cpu::validate_plan adapted to segments. Keys after a block's last row are allowed (the causal rule trims
// them); keys outside [0, Tk) are not. Disjointness of a list's segments is the builder's promise and is not
// checked here (it would cost O(keys)); a key listed twice would be counted twice by every backend.
void validate(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv) {
  cpu::validate_plan_layout(plan, Tq, Tk, q_offset, Hkv);
  const size_t n_lists = size_t(plan.n_blocks()) * plan.heads;

  // The gist table: every unit's g gists inside [0, Tk).
  const int g = plan.gists_per_unit;
  const int levels = plan.gist_ptr.empty() ? 0 : int(plan.gist_ptr.size()) - 1;
  if (plan.gist_ptr.empty() && !plan.gist_pos.empty())
    fail("attention plan: gist_pos has {} entries but gist_ptr is empty", plan.gist_pos.size());
  if (!plan.gist_ptr.empty()) {
    if (plan.gist_ptr[0] != 0) fail("attention plan: gist_ptr[0] is {}, must be 0", plan.gist_ptr[0]);
    if (size_t(plan.gist_ptr.back()) != plan.gist_pos.size())
      fail("attention plan: gist_ptr ends at {} but gist_pos has {} entries", plan.gist_ptr.back(),
           plan.gist_pos.size());
    for (int l = 0; l < levels; l++)
      if (plan.gist_ptr[l + 1] < plan.gist_ptr[l])
        fail("attention plan: gist level {} has gist_ptr [{}, {}): gist_ptr must be non-decreasing", l,
             plan.gist_ptr[l], plan.gist_ptr[l + 1]);
  }
  for (size_t u = 0; u < plan.gist_pos.size(); u++)
    if (plan.gist_pos[u] < 0 || int64_t(plan.gist_pos[u]) + g > Tk)
      fail("attention plan: gist table entry {} puts its {} gist(s) at [{}, {}), outside [0, Tk = {})", u, g,
           plan.gist_pos[u], int64_t(plan.gist_pos[u]) + g, Tk);

  for (size_t l = 0; l < n_lists; l++)
    for (int64_t i = plan.seg_ptr[l]; i < plan.seg_ptr[l + 1]; i++) {
      const key_seg& s = plan.segs[size_t(i)];
      const int b = int(l / plan.heads), h = int(l % plan.heads);
      if (s.level < -1)
        fail("attention plan: block {} head {} segment {} has level {}; use -1 (stream range) or a gist level", b,
             h, i, s.level);
      if (s.level == -1) {
        if (s.begin < 0 || s.end < s.begin || s.end > Tk)
          fail("attention plan: block {} head {} range [{}, {}) is not inside [0, Tk = {})", b, h, s.begin, s.end,
               Tk);
        continue;
      }
      if (s.level >= levels)
        fail("attention plan: block {} head {} names gist level {} but the gist table has {} level(s)", b, h,
             s.level, levels);
      const int32_t units = plan.gist_ptr[size_t(s.level) + 1] - plan.gist_ptr[size_t(s.level)];
      if (s.begin < 0 || s.end < s.begin || s.end > units)
        fail("attention plan: block {} head {} gist units [{}, {}) of level {} are not inside [0, {})", b, h,
             s.begin, s.end, s.level, units);
      if ((int64_t(s.end) - s.begin) * g > INT32_MAX)
        fail("attention plan: block {} head {} gist segment names more than 2^31 keys; split it", b, h);
    }
}

// The structured fast path's per-block descriptors, or false when the plan does not have that structure: heads 1,
// at most kSLV gist levels, every list at most kSNR stream ranges of at most kSMaxRange keys and at most one gist
// segment per level, and at most kSMaxB blocks meeting any aligned window of kSWindow rows. wide: the same
// holds for windows of kSWide rows.
bool structure_of(const attn_plan& plan, int Tq, std::vector<detail::sblock>& out, bool& wide) {
  out.clear();
  wide = false;
  const int nb = plan.n_blocks();
  const int levels = plan.gist_ptr.empty() ? 0 : int(plan.gist_ptr.size()) - 1;
  if (plan.heads != 1 || nb == 0 || Tq == 0 || levels > detail::kSLV) return false;
  for (int l = 0; l < levels; l++)  // gist indices u g + i and tags l << 27 | u stay in range
    if ((int64_t(plan.gist_ptr[l + 1]) - plan.gist_ptr[l]) * plan.gists_per_unit >= (int64_t(1) << 27))
      return false;
  out.resize(size_t(nb));
  for (int b = 0; b < nb; b++) {
    detail::sblock& d = out[size_t(b)];
    bool seen[detail::kSLV] = {};
    for (int64_t i = plan.seg_begin(b, 0); i < plan.seg_end(b, 0); i++) {
      const key_seg& s = plan.segs[size_t(i)];
      if (s.end <= s.begin) continue;
      if (s.level < 0) {
        if (d.nr == detail::kSNR || s.end - s.begin > detail::kSMaxRange) return false;
        d.r[d.nr][0] = s.begin;
        d.r[d.nr][1] = s.end;
        d.nr++;
      } else {
        if (seen[s.level]) return false;
        seen[s.level] = true;
        d.u[s.level][0] = s.begin;
        d.u[s.level][1] = s.end;
      }
    }
  }
  auto block_of = [&](int r) {  // the block holding row r
    return int(std::upper_bound(plan.block_q.begin(), plan.block_q.begin() + nb, r) - plan.block_q.begin()) - 1;
  };
  auto fits = [&](int window) {
    for (int w0 = 0; w0 < Tq; w0 += window)
      if (block_of(std::min(Tq, w0 + window) - 1) - block_of(w0) + 1 > detail::kSMaxB) return false;
    return true;
  };
  if (!fits(detail::kSWindow)) return false;
  wide = fits(detail::kSWide);
  return true;
}

constexpr int64_t kKPieceRows = 1024;  // query rows per CTA of the key-major backward, at most (one block more)

// The inverse of a structured plan (attn_plan_view::ktiles): for each tile of kKTile stream positions and each
// tile of kKTile gist indices of a level, the runs of consecutive blocks whose lists hold any of its keys, tiles
// sorted by the rows they visit (most first: the longest CTAs of the key-major backward start first). A stream
// range is cut at the block's last causal limit (later keys are never seen). Memory: O(tiles + runs).
void inverse_of(const attn_plan& plan, const std::vector<detail::sblock>& sb, int Tk, int q_offset,
                std::vector<detail::ktile>& tiles, std::vector<detail::krun>& runs) {
  constexpr int KT = detail::kKTile;
  const int nb = plan.n_blocks(), g = plan.gists_per_unit;
  const int levels = plan.gist_ptr.empty() ? 0 : int(plan.gist_ptr.size()) - 1;
  std::vector<int> base(size_t(levels) + 1);
  base[0] = (Tk + KT - 1) / KT;  // stream tiles first, then each level's gist tiles
  for (int l = 0; l < levels; l++) {
    const int64_t n = int64_t(plan.gist_ptr[l + 1] - plan.gist_ptr[l]) * g;
    base[size_t(l) + 1] = base[size_t(l)] + int((n + KT - 1) / KT);
  }
  std::vector<std::vector<detail::krun>> per(static_cast<size_t>(base[size_t(levels)]));
  auto add = [&](int t, int b) {
    auto& v = per[size_t(t)];
    if (!v.empty() && v.back().b1 == b + 1) return;  // this block is in already (another of its ranges)
    if (!v.empty() && v.back().b1 == b)
      v.back().b1 = b + 1;
    else
      v.push_back({b, b + 1});
  };
  for (int b = 0; b < nb; b++) {
    const detail::sblock& d = sb[size_t(b)];
    const int64_t key_end = int64_t(q_offset) + plan.block_q[b + 1];  // keys < key_end can be seen
    for (int r = 0; r < d.nr; r++) {
      const int64_t a = d.r[r][0], e = std::min<int64_t>(d.r[r][1], key_end);
      for (int64_t t = a / KT; a < e && t <= (e - 1) / KT; t++) add(int(t), b);
    }
    for (int l = 0; l < levels; l++) {
      const int64_t a = int64_t(d.u[l][0]) * g, e = int64_t(d.u[l][1]) * g;
      for (int64_t t = a / KT; a < e && t <= (e - 1) / KT; t++) add(base[size_t(l)] + int(t), b);
    }
  }
  // A tile seen by many rows (a gist tile of an early unit, the sink's tile) is cut into pieces of at most
  // kKPieceRows rows (at block boundaries), one CTA each: without the cut a few CTAs would walk every row while
  // the rest of the device idles. Pieces of one tile add into the same scratch entries (atomics).
  struct piece {
    int64_t rows;
    int t;
    std::vector<detail::krun> runs;
  };
  std::vector<piece> pieces;
  for (int t = 0; t < int(per.size()); t++) {
    piece cur{0, t, {}};
    for (const detail::krun& r : per[size_t(t)])
      for (int b = r.b0; b < r.b1; b++) {
        const int rows = plan.block_q[b + 1] - plan.block_q[b];
        if (cur.rows > 0 && cur.rows + rows > kKPieceRows) {
          pieces.push_back(std::move(cur));
          cur = piece{0, t, {}};
        }
        if (!cur.runs.empty() && cur.runs.back().b1 == b)
          cur.runs.back().b1 = b + 1;
        else
          cur.runs.push_back({b, b + 1});
        cur.rows += rows;
      }
    if (cur.rows > 0) pieces.push_back(std::move(cur));
  }
  std::stable_sort(pieces.begin(), pieces.end(), [](const piece& x, const piece& y) { return x.rows > y.rows; });
  tiles.clear();
  runs.clear();
  for (const piece& pc : pieces) {
    const int level = int(std::upper_bound(base.begin(), base.end(), pc.t) - base.begin()) - 1;
    detail::ktile k;
    k.level = level;  // -1: a stream tile (t < base[0])
    k.first = (pc.t - (level < 0 ? 0 : base[size_t(level)])) * KT;
    k.run_begin = int32_t(runs.size());
    runs.insert(runs.end(), pc.runs.begin(), pc.runs.end());
    k.run_end = int32_t(runs.size());
    tiles.push_back(k);
  }
}

size_t align16(size_t x) { return (x + 15) & ~size_t(15); }
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

detail::unfold_view unfold_view_of(const device_plan& p) {
  detail::unfold_view u;
  if (!p.unfold) return u;
  u.cap = std::max(1, p.unfold->cap);
  u.n_chunks = p.unfold->n_chunks;
  u.count = static_cast<const int32_t*>(p.unfold->count.raw());
  u.ids = static_cast<const int32_t*>(p.unfold->ids.raw());
  u.key_begin = static_cast<const int32_t*>(p.unfold->chunk_begin.raw());
  u.key_end = static_cast<const int32_t*>(p.unfold->chunk_end.raw());
  if (!p.unfold->gist_end.empty()) {
    u.gist_end = static_cast<const int32_t*>(p.unfold->gist_end.raw());
    u.listed = static_cast<const int32_t*>(p.unfold->listed.raw());
  }
  return u;
}

detail::attn_plan_view view(const device_plan& p) {
  detail::attn_plan_view v;
  v.heads = p.heads;
  v.gists_per_unit = p.gists_per_unit;
  v.n_blocks = p.n_blocks;
  v.max_block_rows = p.max_block_rows;
  v.block_q = p.block_q;
  v.seg_ptr = p.seg_ptr;
  v.segs = p.segs;
  v.gist_ptr = p.gist_ptr;
  v.gist_pos = p.gist_pos;
  v.levels = p.levels;
  return v;
}

// The structured kernels serve bf16 runs of structured plans whose stacked row tiles (64 or 128 rows) hold whole
// GQA groups.
void choose_kernels(detail::attn_plan_view& v, const device_plan& p, const detail::attn_dims& d) {
  const int G = d.Hq / d.Hkv;
  v.sblocks = p.structured && p.sblocks && d.bf16 && 64 % G == 0 ? static_cast<const detail::sblock*>(p.sblocks)
                                                                   : nullptr;
  if (v.sblocks) {
    v.wide = p.wide;
    v.n_ktiles = p.n_ktiles;
    v.ktiles = static_cast<const detail::ktile*>(p.ktiles);
    v.kruns = static_cast<const detail::krun*>(p.kruns);
  }
}

// Checks shared by forward and backward; returns the kernel sizes.
detail::attn_dims check_run(const char* op, const device_plan& plan, int Tq, int Tk, int q_offset, int Hq, int Hkv,
                            int D, dtype t, bool backward) {
  std::string why;
  if (!attention_supported(D, t, &why, backward)) fail("{}: {}", op, why);
  if (Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0)
    fail("{}: Hq ({}) must be a positive multiple of Hkv ({})", op, Hq, Hkv);
  if (!plan.storage) fail("{}: the plan was not uploaded; make it with gsa::cuda::upload_plan", op);
  if (plan.Tq != Tq || plan.Tk != Tk || plan.q_offset != q_offset || plan.Hkv != Hkv)
    fail("{}: the plan was uploaded for Tq={}, Tk={}, q_offset={}, Hkv={} but is run with Tq={}, Tk={}, "
         "q_offset={}, Hkv={}; upload it again for these sizes",
         op, plan.Tq, plan.Tk, plan.q_offset, plan.Hkv, Tq, Tk, q_offset, Hkv);
  detail::attn_dims d;
  d.Tq = Tq;
  d.Tk = Tk;
  d.q_offset = q_offset;
  d.Hq = Hq;
  d.Hkv = Hkv;
  d.D = D;
  d.bf16 = t == dtype::bf16;
  return d;
}

void need(const char* op, const void* p, const char* name) {
  if (!p) fail("{}: {} is null", op, name);
  if (!aligned16(p)) fail("{}: {} must be 16-byte aligned (vector loads)", op, name);
}

// Scratch of the backward: n values of `bytes` each (f32 or int64 fixed point), zeroed; released (back to the
// cache, stream-ordered) on scope exit.
struct scratch {
  void* p = nullptr;
  scratch(bool want, size_t n, size_t bytes) {
    if (!want || n == 0) return;
    p = alloc(n * bytes);
    memset0(p, n * bytes);
  }
  ~scratch() {
    if (p) release(p);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
};

}  // namespace

bool attention_plan_is_structured(const device_plan& plan) { return plan.structured && plan.sblocks; }

bool unfold_supported(int Hq, int Hkv, int D, dtype t) {
  return t == dtype::bf16 && (D == 32 || D == 64 || D == 128) && Hkv > 0 && Hq % Hkv == 0 && Hq / Hkv <= 16;
}

void attach_unfold(device_plan& plan, std::shared_ptr<const row_unfold> u) {
  if (!u) {
    plan.unfold = nullptr;
    return;
  }
  const char* op = "attention row unfold (cuda)";
  if (u->Tq != plan.Tq || u->Hkv != plan.Hkv)
    fail("{}: the unfold has {} rows x {} KV heads, the plan {} x {}", op, u->Tq, u->Hkv, plan.Tq, plan.Hkv);
  const int cap = std::max(1, u->cap);
  for (const Tensor* t : {&u->count, &u->ids, &u->chunk_begin, &u->chunk_end})
    if (t->where() != device::cuda || t->type() != dtype::i32)
      fail("{}: its tables must be i32 tensors on the GPU", op);
  if (u->count.numel() != int64_t(u->Tq) * u->Hkv || u->ids.numel() != int64_t(u->Tq) * u->Hkv * cap ||
      u->chunk_begin.numel() < u->n_chunks || u->chunk_end.numel() < u->n_chunks)
    fail("{}: table sizes {} / {} / {} do not match {} rows x {} heads x cap {} and {} chunks", op, u->count.numel(),
         u->ids.numel(), u->chunk_begin.numel(), u->Tq, u->Hkv, cap, u->n_chunks);
  if (u->gist_end.empty() != u->listed.empty())
    fail("{}: gist_end and listed come together (several gist levels) or not at all", op);
  if (!u->gist_end.empty()) {
    for (const Tensor* t : {&u->gist_end, &u->listed})
      if (t->where() != device::cuda || t->type() != dtype::i32)
        fail("{}: its tables must be i32 tensors on the GPU", op);
    if (u->gist_end.numel() < u->n_chunks || u->listed.numel() != int64_t(u->Tq) * 2)
      fail("{}: gist tables of {} / {} entries for {} chunks and {} rows", op, u->gist_end.numel(),
           u->listed.numel(), u->n_chunks, u->Tq);
  }
  plan.unfold = std::move(u);
}

namespace {
int deterministic_mode = -1;  // -1: not read yet
int keymajor_mode = -2;  // -2: GSA_CUDA_BWD not read yet
int bwd_rows_mode = -1;  // -1: GSA_CUDA_BWD_ROWS not read yet
int fwd_rows_mode = -1;  // -1: GSA_CUDA_FWD_ROWS not read yet
int wgmma_mode = -2;  // -2: GSA_CUDA_WGMMA not read yet

// Row-tile overrides of the structured kernels: row_tile reads the environment variable `name` once into mode
// (a or b; anything else 0, automatic); allowed_rows keeps a setter's value when it is a or b, else 0.
int row_tile(int& mode, const char* name, int a, int b) {
  if (mode < 0) {
    const char* e = std::getenv(name);
    const std::string v = e ? e : "";
    mode = v == std::to_string(a) ? a : v == std::to_string(b) ? b : 0;
  }
  return mode;
}
int allowed_rows(int rows, int a, int b) { return rows == a || rows == b ? rows : 0; }
}  // namespace

int backward_scheme() {
  if (keymajor_mode == -2) {
    const char* e = std::getenv("GSA_CUDA_BWD");
    const std::string v = e ? e : "";
    keymajor_mode = v == "keymajor" ? 1 : v == "atomic" ? 0 : -1;
  }
  return keymajor_mode;
}

void set_backward_scheme(int s) { keymajor_mode = s < 0 ? -1 : s > 0 ? 1 : 0; }

int structured_backward_rows() { return row_tile(bwd_rows_mode, "GSA_CUDA_BWD_ROWS", 128, 256); }
void set_structured_backward_rows(int rows) { bwd_rows_mode = allowed_rows(rows, 128, 256); }
int structured_forward_rows() { return row_tile(fwd_rows_mode, "GSA_CUDA_FWD_ROWS", 64, 128); }
void set_structured_forward_rows(int rows) { fwd_rows_mode = allowed_rows(rows, 64, 128); }
int structured_wgmma() {
  if (wgmma_mode == -2) {
    const char* e = std::getenv("GSA_CUDA_WGMMA");
    const std::string v = e ? e : "";
    wgmma_mode = v == "0" ? 0 : v == "1" ? 1 : v == "2" ? 2 : -1;
  }
  return wgmma_mode;
}
void set_structured_wgmma(int k) { wgmma_mode = k < 0 ? -1 : k > 2 ? 2 : k; }

bool keymajor_backward() {
  const int s = backward_scheme();
  return s < 0 ? deterministic_backward() : s == 1;  // automatic: key-major exactly when deterministic
}

bool deterministic_backward() {
  if (deterministic_mode < 0) {
    const char* e = std::getenv("GSA_CUDA_DETERMINISTIC");
    deterministic_mode = e && *e && std::string(e) != "0" ? 1 : 0;
  }
  return deterministic_mode == 1;
}

void set_deterministic_backward(bool on) { deterministic_mode = on ? 1 : 0; }

bool attention_supported(int D, dtype t, std::string* why, bool backward) {
  if (D == 32 && backward) {
    if (why) *why = "head dim 32 runs forward only on the GPU (generate, eval, perplexity, demo); train it with "
                    "--device cpu, or use head dim 64 or 128";
    return false;
  }
  if (D != 32 && D != 64 && D != 128) {
    if (why) *why = "head dim " + std::to_string(D) + " is not compiled; use 64 or 128 (32 for inference only)";
    return false;
  }
  if (t != dtype::bf16 && t != dtype::f32) {
    if (why) *why = std::string("activation type ") + dtype_name(t) + " is not compiled; use bf16 or f32";
    return false;
  }
  return true;
}

device_plan upload_plan(const attn_plan& plan, int Tq, int Tk, int q_offset, int Hkv) {
  const double t0 = profile_on() ? profile_clock_ms() : 0;
  validate(plan, Tq, Tk, q_offset, Hkv);
  device_plan d;
  d.heads = plan.heads;
  d.gists_per_unit = plan.gists_per_unit;
  d.n_blocks = plan.n_blocks();
  d.n_segs = int64_t(plan.segs.size());
  for (int b = 0; b < d.n_blocks; b++) d.max_block_rows = std::max(d.max_block_rows, plan.block_q[b + 1] - plan.block_q[b]);
  d.Tq = Tq;
  d.Tk = Tk;
  d.q_offset = q_offset;
  d.Hkv = Hkv;
  d.levels = plan.gist_ptr.empty() ? 0 : int(plan.gist_ptr.size()) - 1;
  std::vector<detail::sblock> sb;
  bool wide = false;
  const bool structured = structure_of(plan, Tq, sb, wide);
  std::vector<detail::ktile> kt;
  std::vector<detail::krun> kr;
  if (structured && keymajor_backward()) inverse_of(plan, sb, Tk, q_offset, kt, kr);  // only the key-major pass reads it

  // One allocation, each array 16-byte aligned (segs are read as int4).
  const size_t o_block_q = 0;
  const size_t o_seg_ptr = align16(o_block_q + plan.block_q.size() * sizeof(int32_t));
  const size_t o_segs = align16(o_seg_ptr + plan.seg_ptr.size() * sizeof(int64_t));
  const size_t o_gist_ptr = align16(o_segs + plan.segs.size() * sizeof(key_seg));
  const size_t o_gist_pos = align16(o_gist_ptr + plan.gist_ptr.size() * sizeof(int32_t));
  const size_t o_sblocks = align16(o_gist_pos + plan.gist_pos.size() * sizeof(int32_t));
  const size_t o_ktiles = align16(o_sblocks + sb.size() * sizeof(detail::sblock));
  const size_t o_kruns = align16(o_ktiles + kt.size() * sizeof(detail::ktile));
  const size_t total = std::max<size_t>(16, align16(o_kruns + kr.size() * sizeof(detail::krun)));
  std::vector<unsigned char> host(total, 0);
  auto put = [&](size_t off, const void* src, size_t bytes) {
    if (bytes) std::memcpy(host.data() + off, src, bytes);
  };
  put(o_block_q, plan.block_q.data(), plan.block_q.size() * sizeof(int32_t));
  put(o_seg_ptr, plan.seg_ptr.data(), plan.seg_ptr.size() * sizeof(int64_t));
  put(o_segs, plan.segs.data(), plan.segs.size() * sizeof(key_seg));
  put(o_gist_ptr, plan.gist_ptr.data(), plan.gist_ptr.size() * sizeof(int32_t));
  put(o_gist_pos, plan.gist_pos.data(), plan.gist_pos.size() * sizeof(int32_t));
  put(o_sblocks, sb.data(), sb.size() * sizeof(detail::sblock));
  put(o_ktiles, kt.data(), kt.size() * sizeof(detail::ktile));
  put(o_kruns, kr.data(), kr.size() * sizeof(detail::krun));

  // The deleter runs in destructors: it must not throw, and a failing release of a plan buffer leaves nothing
  // to recover, so its error is dropped there (the next checked CUDA call reports a broken context).
  d.storage = std::shared_ptr<void>(alloc(total), [](void* p) {
    try {
      release(p);
    } catch (...) {
    }
  });
  copy_h2d(d.storage.get(), host.data(), total);
  auto* base = static_cast<unsigned char*>(d.storage.get());
  d.block_q = reinterpret_cast<const int32_t*>(base + o_block_q);
  d.seg_ptr = reinterpret_cast<const int64_t*>(base + o_seg_ptr);
  d.segs = reinterpret_cast<const key_seg*>(base + o_segs);
  d.gist_ptr = plan.gist_ptr.empty() ? nullptr : reinterpret_cast<const int32_t*>(base + o_gist_ptr);
  d.gist_pos = plan.gist_pos.empty() ? nullptr : reinterpret_cast<const int32_t*>(base + o_gist_pos);
  d.structured = structured;
  d.sblocks = structured ? base + o_sblocks : nullptr;
  d.wide = wide;  // structure_of leaves it false for a plan without the structure
  d.n_ktiles = int(kt.size());
  d.ktiles = kt.empty() ? nullptr : base + o_ktiles;
  d.kruns = kr.empty() ? nullptr : base + o_kruns;
  if (profile_on())
    profile_add("attention.upload_plan", profile_clock_ms() - t0);
  return d;
}

void attention_forward(void* out, float* lse, const void* q, const void* k, const void* v, const device_plan& plan,
                       int Tq, int Tk, int q_offset, int Hq, int Hkv, int D, dtype t) {
  const char* op = "attention forward (cuda)";
  const detail::attn_dims d = check_run(op, plan, Tq, Tk, q_offset, Hq, Hkv, D, t, false);
  if (Tq == 0) return;
  need(op, out, "out");
  need(op, lse, "lse");
  need(op, q, "q");
  if (Tk > 0) {
    need(op, k, "k");
    need(op, v, "v");
  }
  detail::attn_fwd_args a;
  a.d = d;
  a.p = view(plan);
  choose_kernels(a.p, plan, d);
  a.out = out;
  a.lse = lse;
  a.q = q;
  a.k = k;
  a.v = v;
  a.rows = structured_forward_rows();
  a.kernel = structured_wgmma();
  a.uf = unfold_view_of(plan);
  if (a.uf.cap > 0 && !unfold_supported(Hq, Hkv, D, t))
    fail("{}: a row unfold runs on the bf16 kernels with at most 16 query heads per KV head; expand it "
         "(expand_row_unfold) for this run", op);
  const context& c = ctx();
  int rc = detail::launch_attention_forward(a, c.sm_count, c.stream);
  if (rc == 0) rc = detail::launch_unfold_forward(a, c.sm_count, c.stream);
  if (rc != 0) fail("{}: launch failed: {}", op, cudaGetErrorString(cudaError_t(rc)));
}

void attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, const device_plan& plan, int Tq, int Tk, int q_offset,
                        int Hq, int Hkv, int D, dtype t) {
  const char* op = "attention backward (cuda)";
  const detail::attn_dims d = check_run(op, plan, Tq, Tk, q_offset, Hq, Hkv, D, t, true);
  if (Tq == 0 || Tk == 0 || (!dq && !dk && !dv)) return;  // no key: every gradient is zero
  need(op, dout, "dout");
  need(op, q, "q");
  need(op, k, "k");
  need(op, v, "v");
  need(op, out, "out");
  need(op, lse, "lse");
  const size_t n_kv = size_t(Tk) * Hkv * D;
  const bool fixed = deterministic_backward();
  const size_t acc_bytes = fixed ? sizeof(int64_t) : sizeof(float);
  scratch dk_acc(dk != nullptr, n_kv, acc_bytes), dv_acc(dv != nullptr, n_kv, acc_bytes);
  scratch overflow(fixed, 4, sizeof(unsigned));
  detail::attn_bwd_args a;
  a.p = view(plan);
  choose_kernels(a.p, plan, d);
  a.keymajor = a.p.sblocks && a.p.n_ktiles > 0 && keymajor_backward() && (dk || dv);
  a.rows = structured_backward_rows();
  a.wgmma = structured_wgmma() != 0;  // the key-major pass: wgmma unless told otherwise (docs/cuda.md)
  scratch di(a.keymajor, size_t(Tq) * Hq, sizeof(float));  // D_i of every row (zero where the row sees no key)
  a.di = static_cast<float*>(di.p);
  a.fixed = fixed;
  a.overflow = static_cast<unsigned*>(overflow.p);
  a.d = d;
  a.dq = dq;
  a.dk = dk;
  a.dv = dv;
  a.dk_acc = dk_acc.p;
  a.dv_acc = dv_acc.p;
  a.dout = dout;
  a.q = q;
  a.k = k;
  a.v = v;
  a.out = out;
  a.lse = lse;
  a.uf = unfold_view_of(plan);
  if (a.uf.cap > 0 && !unfold_supported(Hq, Hkv, D, t))
    fail("{}: a row unfold runs on the bf16 kernels with at most 16 query heads per KV head; expand it "
         "(expand_row_unfold) for this run", op);
  const context& c = ctx();
  const int rc = detail::launch_attention_backward(a, c.sm_count, c.stream);
  if (rc != 0) fail("{}: launch failed: {}", op, cudaGetErrorString(cudaError_t(rc)));
}

}  // namespace gsa::cuda
