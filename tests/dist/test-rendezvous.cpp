// The TCP rendezvous over localhost (threads as ranks) and the launcher of `gsa train --gpus N` (processes).
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "core/error.h"
#include "dist/launcher.h"
#include "dist/rendezvous.h"

namespace gsa {
namespace {

using namespace std::chrono_literals;

dist::process_group group(int rank, int world, int port) {
  dist::process_group g;
  g.rank = rank;
  g.world_size = world;
  g.local_rank = rank;
  g.master_addr = "127.0.0.1";
  g.master_port = port;
  return g;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "";
}

TEST(Rendezvous, EveryRankGetsRankZerosBytesIntact) {
  const int port = dist::free_local_port(), world = 4;
  std::vector<uint8_t> id(128);
  for (size_t i = 0; i < id.size(); i++) id[i] = uint8_t(i * 37 + 11);  // every byte value pattern, zeros included
  id[5] = 0;
  std::vector<std::future<std::vector<uint8_t>>> got;
  // Peers first: they retry until rank 0 listens.
  for (int r = world - 1; r >= 0; r--)
    got.push_back(std::async(std::launch::async, [&, r] {
      return dist::rendezvous_broadcast(group(r, world, port), r == 0 ? id : std::vector<uint8_t>{}, 10s);
    }));
  for (auto& f : got) EXPECT_EQ(f.get(), id);
}

TEST(Rendezvous, AMissingPeerTimesOutWithAClearError) {
  const int port = dist::free_local_port();
  const auto t0 = std::chrono::steady_clock::now();
  auto peer = std::async(std::launch::async, [&] {
    return dist::rendezvous_broadcast(group(1, 3, port), {}, 3s);
  });
  std::string e = error_of([&] { dist::rendezvous_broadcast(group(0, 3, port), {1, 2, 3}, 1500ms); });
  EXPECT_NE(e.find("rank(s) 2 of 3 did not connect within 1.5 s"), std::string::npos) << e;
  EXPECT_NE(e.find("GSA_DIST_TIMEOUT"), std::string::npos) << e;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  // Rank 1 connected but never got the id: it fails too, within its own timeout, naming rank 0.
  std::string e1 = error_of([&] { peer.get(); });
  EXPECT_FALSE(e1.empty());
}

TEST(Rendezvous, NoRankZeroTimesOut) {
  const int port = dist::free_local_port();
  std::string e = error_of([&] { dist::rendezvous_broadcast(group(1, 2, port), {}, 700ms); });
  EXPECT_NE(e.find("rank 1: cannot reach rank 0 at 127.0.0.1:" + std::to_string(port)), std::string::npos) << e;
}

TEST(Rendezvous, MismatchedWorldSizeIsNamed) {
  const int port = dist::free_local_port();
  auto peer = std::async(std::launch::async, [&] {
    try {
      dist::rendezvous_broadcast(group(1, 3, port), {}, 3s);
    } catch (const error&) {
    }
  });
  std::string e = error_of([&] { dist::rendezvous_broadcast(group(0, 2, port), {7}, 3s); });
  EXPECT_NE(e.find("rank 1 says WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2"), std::string::npos) << e;
  peer.get();
}

TEST(Rendezvous, AnUnresolvableAddressIsNamed) {
  auto g = group(1, 2, 29999);
  g.master_addr = "no-such-host.invalid";
  std::string e = error_of([&] { dist::rendezvous_broadcast(g, {}, 1s); });
  EXPECT_NE(e.find("MASTER_ADDR 'no-such-host.invalid' does not resolve"), std::string::npos) << e;
}

TEST(Launcher, ChildrenGetTheGroupsVariables) {
  auto r = dist::launch_local({"/bin/sh", "-c",
                               "[ \"$WORLD_SIZE\" = 3 ] && [ \"$RANK\" = \"$LOCAL_RANK\" ] && [ \"$RANK\" -lt 3 ] && "
                               "[ \"$MASTER_ADDR\" = 127.0.0.1 ] && [ \"$MASTER_PORT\" -gt 0 ] && [ \"$EXTRA\" = yes ]"},
                              3, {"EXTRA=yes"});
  EXPECT_EQ(r.failed_rank, -1) << r.what;
}

TEST(Launcher, OneFailingRankStopsTheOthersAndIsNamed) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = dist::launch_local({"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 60"}, 3);
  EXPECT_EQ(r.failed_rank, 1);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.what, "rank 1 exited with status 3");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s) << "the other ranks were not stopped";
}

TEST(Launcher, ASignalIsReported) {
  auto r = dist::launch_local({"/bin/sh", "-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; exec sleep 60"}, 2);
  EXPECT_EQ(r.failed_rank, 0);
  EXPECT_EQ(r.exit_code, 128 + 9);
  EXPECT_NE(r.what.find("rank 0 was killed by signal 9"), std::string::npos) << r.what;
}

// `gsa train --gpus N` stopped by a scheduler (SIGTERM) or Ctrl-C (SIGINT): the launcher passes the signal on to
// every rank once (each then saves its step and ends with 128 + the signal, as one process would), which is a
// stop, not a failure.
TEST(Launcher, AStopSignalIsPassedOnToEveryRankOnce) {
  for (int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(::strsignal(sig));
    const auto dir = std::filesystem::temp_directory_path() / ("gsa-launcher-stop-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::thread sender([&] {  // once both ranks run, the signal to this process (the launcher) only
      const auto t0 = std::chrono::steady_clock::now();
      while (!(std::filesystem::exists(dir / "started0") && std::filesystem::exists(dir / "started1")) &&
             std::chrono::steady_clock::now() - t0 < 20s)
        std::this_thread::sleep_for(10ms);
      ::kill(::getpid(), sig);
    });
    const std::string name = sig == SIGTERM ? "TERM" : "INT";
    auto r = dist::launch_local({"/bin/sh", "-c",
                                 "trap 'echo $RANK >> \"$D/stopped\"; exit " + std::to_string(128 + sig) + "' " +
                                     name + "; touch \"$D/started$RANK\"; while :; do sleep 0.05; done"},
                                2, {"D=" + dir.string()});
    sender.join();
    EXPECT_EQ(r.failed_rank, -1) << r.what;
    EXPECT_EQ(r.stopped_by, sig);
    std::ifstream f(dir / "stopped");
    std::vector<std::string> got;
    for (std::string line; std::getline(f, line);) got.push_back(line);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<std::string>{"0", "1"})) << "each rank asked to stop exactly once";
    std::filesystem::remove_all(dir);
  }
}

}  // namespace
}  // namespace gsa
