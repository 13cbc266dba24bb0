// Per-row unfolding tables (contract: row-unfold.h): the host builder, the chunk ranges of a single-level stream,
// and the expansion into a plain plan that every backend can run.
#include "backend/row-unfold.h"

#include <algorithm>

#include "core/error.h"
#include "gist/config.h"
#include "gist/select.h"
#include "gist/stream.h"

namespace gsa {

void unfold_ranges(const gist::stream& s, const gist::gsa_config& cfg, std::vector<int32_t>& begin,
                   std::vector<int32_t>& end, std::vector<int32_t>* gist_end) {
  const int n = s.n_chunks(), c0 = cfg.chunk[0], g = cfg.gists_per_chunk;
  begin.resize(size_t(n));
  end.resize(size_t(n));
  if (gist_end) gist_end->resize(size_t(n));
  for (int m = 0; m < n; m++) {
    const int32_t b = s.chunk_raw_begin[m], e = s.chunk_raw_end[m];
    // Raw tokens of chunk m have raw indices m c0 + [0, e - b); those below the sink are in every base list.
    const int64_t in_sink = std::clamp<int64_t>(int64_t(cfg.sink) - int64_t(m) * c0, 0, e - b);
    begin[size_t(m)] = int32_t(b + in_sink);
    end[size_t(m)] = e;
    // A chunk's level-0 gists, when they follow its raw tokens (a complete chunk's do: row_unfold_applies).
    if (gist_end) (*gist_end)[size_t(m)] = s.chunk_gist_begin[m] == e ? e + g : e;
  }
}

std::vector<int32_t> row_listed_units(const attn_plan& base) {
  if (base.heads != 1) fail("row unfold: the base plan must have one list per block (heads 1), has {}", base.heads);
  const int nb = base.n_blocks();
  std::vector<int32_t> out(size_t(nb > 0 ? base.block_q.back() : 0) * 2, 0);
  for (int b = 0; b < nb; b++) {
    int32_t u0 = 0, u1 = 0, found = 0;
    for (int64_t i = base.seg_begin(b, 0); i < base.seg_end(b, 0); i++) {
      const key_seg& sg = base.segs[size_t(i)];
      if (sg.level != 0) continue;
      if (found++) fail("row unfold: block {} lists two segments of level-0 gist units", b);
      u0 = sg.begin;
      u1 = sg.end;
    }
    for (int r = base.block_q[b]; r < base.block_q[b + 1]; r++) {
      out[size_t(r) * 2] = u0;
      out[size_t(r) * 2 + 1] = u1;
    }
  }
  return out;
}

bool row_unfold_applies(const gist::stream& s, const gist::gsa_config& cfg) {
  if (cfg.levels() == 1) return true;
  const int n_complete = gist::complete_chunk_count(s);
  for (int m = 0; m < n_complete; m++)
    if (s.chunk_gist_begin[m] != s.chunk_raw_end[m]) return false;
  return true;
}

void check_gists_all_base(const gist::stream& s, const gist::gsa_config& cfg, const std::vector<int32_t>& listed,
                          int first_row, int row0) {
  if (!cfg.gists_all || cfg.levels() == 1) return;  // one level: the gist mask lists every gist already
  const int n_complete = gist::complete_chunk_count(s), n = int(listed.size() / 2);
  for (int r = std::max(0, first_row - row0); r < n; r++) {
    if (listed[size_t(r) * 2] != 0 && gist::row_unfolds(s, row0 + r, n_complete, cfg.local_chunks))
      fail("row unfold: with \"gists\": \"all\" row {} must list every earlier level-0 gist, its base lists units "
           "[{}, {}): build the base with gist::plan_unfold_base", row0 + r, listed[size_t(r) * 2],
           listed[size_t(r) * 2 + 1]);
  }
}

row_unfold host_row_unfold(const gist::stream& s, const gist::gsa_config& cfg, int Hkv, int row_begin,
                           const std::vector<std::vector<int32_t>>& selected, const attn_plan* base) {
  const int T = s.size();
  if (Hkv < 1) fail("row unfold: Hkv = {} must be >= 1", Hkv);
  if (row_begin < 0 || row_begin > T) fail("row unfold: first row {} outside [0, {}]", row_begin, T);
  if (int64_t(selected.size()) != int64_t(T - row_begin) * Hkv)
    fail("row unfold: {} selections for {} rows x {} KV heads", selected.size(), T - row_begin, Hkv);
  row_unfold u;
  u.Tq = T;
  u.Hkv = Hkv;
  u.n_chunks = s.n_chunks();
  for (const auto& v : selected) u.cap = std::max(u.cap, int(v.size()));
  u.count = Tensor({T, Hkv}, dtype::i32);
  u.ids = Tensor({T, Hkv, std::max(1, u.cap)}, dtype::i32);
  std::fill(u.count.i32(), u.count.i32() + u.count.numel(), 0);
  std::fill(u.ids.i32(), u.ids.i32() + u.ids.numel(), -1);
  if (!row_unfold_applies(s, cfg))
    fail("row unfold: this stream's unfolding needs gist::plan_unfold (gists apart from their chunk)");
  const bool levels = cfg.levels() > 1;
  if (levels && (!base || base->n_blocks() < 1 || base->block_q.back() != T))
    fail("row unfold: with {} gist levels it needs the rows' gist mask (a plan of {} rows)", cfg.levels(), T);
  std::vector<int32_t> b, e, ge, listed;
  unfold_ranges(s, cfg, b, e, levels ? &ge : nullptr);
  if (levels) {
    listed = row_listed_units(*base);
    check_gists_all_base(s, cfg, listed, row_begin);
  }
  u.chunk_begin = Tensor({std::max(1, u.n_chunks)}, dtype::i32);
  u.chunk_end = Tensor({std::max(1, u.n_chunks)}, dtype::i32);
  std::copy(b.begin(), b.end(), u.chunk_begin.i32());
  std::copy(e.begin(), e.end(), u.chunk_end.i32());
  if (levels) {
    u.gist_end = Tensor({std::max(1, u.n_chunks)}, dtype::i32);
    u.listed = Tensor({T, 2}, dtype::i32);
    std::copy(ge.begin(), ge.end(), u.gist_end.i32());
    std::copy(listed.begin(), listed.end(), u.listed.i32());
  }
  auto key_end = [&](int r, int32_t m) {
    return unfold_key_end(e.data(), levels ? ge.data() : nullptr, listed.data(), r, m);
  };
  int64_t chunks = 0, keys = 0;
  for (int r = row_begin; r < T; r++)
    for (int h = 0; h < Hkv; h++) {
      std::vector<int32_t> ids = selected[size_t(r - row_begin) * Hkv + h];
      std::sort(ids.begin(), ids.end());
      if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
        fail("row unfold: row {} head {} selects a chunk twice", r, h);
      for (int32_t m : ids)
        if (m < 0 || m >= u.n_chunks || key_end(r, m) > r)
          fail("row unfold: row {} head {} selects chunk {}, which is not a complete chunk before the row", r, h,
               m);
      u.count.i32()[size_t(r) * Hkv + h] = int32_t(ids.size());
      std::copy(ids.begin(), ids.end(), u.ids.i32() + (size_t(r) * Hkv + h) * std::max(1, u.cap));
      chunks += int64_t(ids.size());
      for (int32_t m : ids) keys += key_end(r, m) - b[size_t(m)];
    }
  u.totals = Tensor({2}, dtype::i64);
  static_cast<int64_t*>(u.totals.raw())[0] = chunks;
  static_cast<int64_t*>(u.totals.raw())[1] = keys;
  return u;
}

unfold_total unfold_totals(const row_unfold& u) {
  if (u.totals.empty()) fail("row unfold: its totals were not recorded");
  const Tensor t = u.totals.host(dtype::i64);
  const int64_t* v = static_cast<const int64_t*>(t.raw());
  return {v[0], v[1]};
}

namespace {

// Appends the segments of base list (b, 0) cut at key `last` (inclusive): ranges are shortened, gist units
// after it dropped, a unit whose g gists straddle it becomes a range of its gists up to it.
void append_cut(attn_plan& out, const attn_plan& base, int b, int32_t last) {
  const int g = base.gists_per_unit;
  for (int64_t i = base.seg_begin(b, 0); i < base.seg_end(b, 0); i++) {
    const key_seg& s = base.segs[size_t(i)];
    if (s.level < 0) {
      const int32_t e = std::min<int32_t>(s.end, last + 1);
      if (e > s.begin) out.segs.push_back(key_range(s.begin, e));
      continue;
    }
    const int32_t* pos = base.gist_pos.data() + base.gist_ptr[size_t(s.level)];
    // Units of [begin, end) whose last gist is <= last (positions ascend with the unit).
    const int32_t* whole = std::upper_bound(pos + s.begin, pos + s.end, last - (g - 1));
    const int32_t u1 = int32_t(whole - pos);
    if (u1 > s.begin) out.segs.push_back(gist_units(s.level, s.begin, u1));
    if (u1 < s.end && pos[u1] <= last) out.segs.push_back(key_range(pos[u1], last + 1));
  }
}

}  // namespace

attn_plan expand_row_unfold(const attn_plan& base, const row_unfold& u, int q_offset) {
  if (base.heads != 1) fail("expand_row_unfold: the base plan must have one list per block (heads 1), has {}",
                            base.heads);
  const int nb = base.n_blocks(), Hkv = u.Hkv, cap = std::max(1, u.cap);
  if (nb > 0 && base.block_q.back() != u.Tq)
    fail("expand_row_unfold: the plan has {} rows, the row unfold {}", base.block_q.back(), u.Tq);
  const Tensor count = u.count.host(dtype::i32), ids = u.ids.host(dtype::i32);
  const Tensor cb = u.chunk_begin.host(dtype::i32), ce = u.chunk_end.host(dtype::i32);
  const bool levels = !u.gist_end.empty();
  const Tensor ge = levels ? u.gist_end.host(dtype::i32) : Tensor(), ls = levels ? u.listed.host(dtype::i32) : Tensor();
  if (levels && (ge.numel() < u.n_chunks || ls.numel() != int64_t(u.Tq) * 2))
    fail("expand_row_unfold: gist tables of {} / {} entries for {} chunks and {} rows", ge.numel(), ls.numel(),
         u.n_chunks, u.Tq);
  if (count.numel() != int64_t(u.Tq) * Hkv || ids.numel() != int64_t(u.Tq) * Hkv * cap)
    fail("expand_row_unfold: tables of {} / {} entries for {} rows x {} heads x cap {}", count.numel(),
         ids.numel(), u.Tq, Hkv, cap);
  attn_plan out;
  out.heads = Hkv;
  out.gists_per_unit = base.gists_per_unit;
  out.gist_ptr = base.gist_ptr;
  out.gist_pos = base.gist_pos;
  out.block_q.push_back(0);
  out.seg_ptr.push_back(0);
  for (int b = 0; b < nb; b++) {
    const int r0 = base.block_q[b], r1 = base.block_q[b + 1];
    bool any = false;
    for (int64_t i = int64_t(r0) * Hkv; i < int64_t(r1) * Hkv && !any; i++) any = count.i32()[i] > 0;
    if (!any) {
      for (int h = 0; h < Hkv; h++) {
        for (int64_t i = base.seg_begin(b, 0); i < base.seg_end(b, 0); i++) out.segs.push_back(base.segs[size_t(i)]);
        out.seg_ptr.push_back(int64_t(out.segs.size()));
      }
      out.block_q.push_back(r1);
      continue;
    }
    for (int r = r0; r < r1; r++) {
      const int32_t last = q_offset + r;
      for (int h = 0; h < Hkv; h++) {
        append_cut(out, base, b, last);
        const int n = count.i32()[size_t(r) * Hkv + h];
        if (n < 0 || n > u.cap) fail("expand_row_unfold: row {} head {} has {} chunks, cap {}", r, h, n, u.cap);
        const int32_t* sel = ids.i32() + (size_t(r) * Hkv + h) * cap;
        for (int i = 0; i < n; i++) {
          const int32_t m = sel[i];
          if (m < 0 || m >= u.n_chunks || (i > 0 && m <= sel[i - 1]))
            fail("expand_row_unfold: row {} head {}: chunk ids must be ascending in [0, {})", r, h, u.n_chunks);
          const int32_t kb = cb.i32()[m];
          const int32_t ke = unfold_key_end(ce.i32(), levels ? ge.i32() : nullptr, levels ? ls.i32() : nullptr, r, m);
          if (ke > last + 1 || kb < 0 || ke < kb)
            fail("expand_row_unfold: row {} head {}: chunk {}'s keys [{}, {}) do not precede the row", r, h, m, kb,
                 ke);
          if (ke > kb) out.segs.push_back(key_range(kb, ke));
        }
        out.seg_ptr.push_back(int64_t(out.segs.size()));
      }
      out.block_q.push_back(r + 1);
    }
  }
  return out;
}

}  // namespace gsa
