// The interleaved token stream (DESIGN 1.1, 1.4): raw tokens with gist tokens inserted after every complete
// chunk (and, in a hierarchy, higher-level gists after every complete group of lower-level chunks).
//
// Layout choices (build_stream):
// * Raw tokens are cut into level-0 chunks of c_0. After each complete chunk m come its g level-0 gists; if m
//   also completes a level-1 unit ((m+1) % c_1 == 0) the g level-1 gists follow them, then level 2 if
//   (m+1) % (c_1 c_2) == 0, and so on: levels ascend after a chunk, each level's g gists are contiguous.
// * A level-l "unit" u covers level-0 chunks [u P_l, (u+1) P_l), P_0 = 1, P_l = c_1 ... c_l; its gists sit after
//   chunk (u+1) P_l - 1 at offset l g from that chunk's first gist. Every gist's `chunk` is that chunk.
// * Gists take the position of the raw token before them (the chunk's last raw token).
// * labels[i] = ids[i+1] if stream token i+1 is raw, else ignore_label (and the last position is ignore): raw
//   tokens that end a chunk do not predict a gist; the last gist after a chunk (of the highest level there)
//   predicts the next chunk's first raw token.
// * A trailing incomplete chunk gets no gists, and no unit gets gists before all its chunks are complete.
#pragma once
#include <cstdint>
#include <vector>

#include "gist/config.h"

namespace gsa::gist {

constexpr int32_t ignore_label = -100;

struct stream {
  // One entry per stream position (n = size()).
  std::vector<int32_t> ids;       // token ids (raw or gist)
  std::vector<int32_t> pos;       // RoPE position: raw token t -> t; a gist -> position of the last raw token before it
  std::vector<int32_t> labels;    // next-token targets (HF shift applied: labels[i] = ids[i+1]), ignore_label when
                                  // ids[i+1] is a gist or i is last
  std::vector<int8_t> level;      // -1 for raw tokens; l for a level-l gist
  std::vector<int32_t> chunk;     // level-0 chunk index; a gist belongs to the chunk before it
  std::vector<int32_t> raw_index; // raw tokens: index in the original text; gists: -1
  // Where each level-0 chunk's raw tokens start/end in the stream, and where its gists sit.
  std::vector<int32_t> chunk_raw_begin, chunk_raw_end;  // (n_chunks)
  std::vector<int32_t> chunk_gist_begin;                // (n_chunks) first gist position, or -1 (incomplete chunk)

  int size() const { return int(ids.size()); }
  int n_chunks() const { return int(chunk_raw_begin.size()); }
  bool is_gist(int i) const { return level[i] >= 0; }
};

// Builds the stream for n raw tokens. A trailing incomplete chunk (or group) gets no gist. Validates cfg.
stream build_stream(const int32_t* raw, int n, const gsa_config& cfg);

// Level-0 chunks per level-l unit: P_0 = 1, P_l = c_1 * ... * c_l.
int chunks_per_unit(const gsa_config& cfg, int level);
// Number of level-l units whose gists are in the stream (complete units).
int unit_count(const stream& s, const gsa_config& cfg, int level);
// Stream position of the first of the g gists of level-l unit u, or -1 if that unit is not complete.
int unit_gist_position(const stream& s, const gsa_config& cfg, int level, int unit);
// The same from the chunks' first-gist positions alone (stream::chunk_gist_begin, for a caller without the
// stream), for a complete unit: its gists follow its last chunk's level-0 gists at offset level * g.
int unit_gist_position(const int32_t* chunk_gist_begin, const gsa_config& cfg, int level, int unit);
// Every level's gist positions: [l][u] = unit_gist_position(s, cfg, l, u) for the complete level-l units (level 0:
// the complete chunks' chunk_gist_begin), the tables gist::select_block scores from.
std::vector<std::vector<int32_t>> unit_gist_tables(const stream& s, const gsa_config& cfg);
// Number of complete level-0 chunks (those followed by gists).
int complete_chunk_count(const stream& s);
// Stream position of raw token t (0 <= t < raw count), given c_0.
inline int raw_position(const stream& s, int c0, int t) { return s.chunk_raw_begin[t / c0] + t % c0; }

}  // namespace gsa::gist
