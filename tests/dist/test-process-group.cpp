// The group from torchrun's environment variables, and the errors a wrong one gives.
#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "dist/process-group.h"
#include "dist/shard.h"

namespace gsa {
namespace {

dist::process_group from(const std::map<std::string, std::string>& env) {
  return dist::process_group_from([&](const char* k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::map<std::string, std::string>& env) {
  try {
    from(env);
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

TEST(ProcessGroup, NoWorldSizeIsOneProcess) {
  auto g = from({{"RANK", "3"}});
  EXPECT_EQ(g.world_size, 1);
  EXPECT_EQ(g.rank, 0);
  EXPECT_FALSE(g.distributed());
  EXPECT_FALSE(from({{"WORLD_SIZE", "1"}}).distributed());
}

TEST(ProcessGroup, TorchrunVariables) {
  auto g = from({{"WORLD_SIZE", "16"}, {"RANK", "9"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node0"},
                 {"MASTER_PORT", "29500"}});
  EXPECT_TRUE(g.distributed());
  EXPECT_EQ(g.rank, 9);
  EXPECT_EQ(g.world_size, 16);
  EXPECT_EQ(g.local_rank, 1);
  EXPECT_EQ(g.master_addr, "node0");
  EXPECT_EQ(g.master_port, 29500);
  // LOCAL_RANK defaults to RANK (one host).
  EXPECT_EQ(from({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "1"}}).local_rank, 1);
}

TEST(ProcessGroup, ErrorsNameTheVariable) {
  const std::map<std::string, std::string> ok = {
      {"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}};
  auto with = [&](const std::string& k, const std::string& v) {
    auto e = ok;
    e[k] = v;
    return error_of(e);
  };
  auto without = [&](const std::string& k) {
    auto e = ok;
    e.erase(k);
    return error_of(e);
  };
  EXPECT_EQ(error_of(ok), "");
  EXPECT_NE(without("RANK").find("RANK is not set"), std::string::npos) << without("RANK");
  EXPECT_NE(without("MASTER_ADDR").find("MASTER_ADDR is not set"), std::string::npos);
  EXPECT_NE(without("MASTER_PORT").find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_NE(with("RANK", "2").find("RANK='2' is not a rank below WORLD_SIZE"), std::string::npos) << with("RANK", "2");
  EXPECT_NE(with("RANK", "-1").find("RANK='-1'"), std::string::npos);
  EXPECT_NE(with("RANK", "1x").find("RANK='1x'"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "0").find("WORLD_SIZE='0'"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "two").find("WORLD_SIZE='two'"), std::string::npos);
  EXPECT_NE(with("MASTER_PORT", "70000").find("MASTER_PORT='70000' is not a TCP port"), std::string::npos);
  EXPECT_NE(with("LOCAL_RANK", "x").find("LOCAL_RANK='x'"), std::string::npos);
}

TEST(Shards, BatchSlicesAreTheOneProcessBatchInOrder) {
  for (int64_t B : {1, 2, 3, 4, 7, 8, 64, 1000}) {
    for (int N : {1, 2, 3, 4, 8}) {
      if (B < N) continue;
      int64_t next = 0;
      for (int r = 0; r < N; r++) {
        const dist::range s = dist::batch_slice(B, N, r);
        EXPECT_EQ(s.begin, next) << B << " " << N << " " << r;
        EXPECT_GE(s.size(), B / N);
        EXPECT_LE(s.size(), B / N + 1);
        next = s.end;
      }
      EXPECT_EQ(next, B);
    }
  }
}

TEST(Shards, OptimizerRangesCoverTheBufferExactlyAndAligned) {
  for (int64_t n : {int64_t(1), int64_t(63), int64_t(64), int64_t(1000), int64_t(124475904), int64_t(6553600017)}) {
    for (int N : {1, 2, 3, 8, 64}) {
      for (int64_t align : {1, 64, 128}) {
        auto rs = dist::shard_ranges(n, N, align);
        ASSERT_EQ(int(rs.size()), N);
        int64_t next = 0, most = 0, least = n;
        for (auto& r : rs) {
          EXPECT_EQ(r.begin, next);
          EXPECT_LE(r.begin, r.end);
          EXPECT_TRUE(r.begin % align == 0 || r.begin == n) << n << " " << N << " " << align;
          next = r.end;
          most = std::max(most, r.size());
          least = std::min(least, r.size());
        }
        EXPECT_EQ(next, n);
        if (n >= N * align) EXPECT_LE(most - least, 2 * align) << "balanced to an aligned block and the short tail";
      }
    }
  }
  EXPECT_EQ(dist::intersect({10, 20}, 15, 30), (dist::range{15, 20}));
  EXPECT_EQ(dist::intersect({10, 20}, 20, 30).size(), 0);
}

}  // namespace
}  // namespace gsa
