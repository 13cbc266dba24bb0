// `gsa train --gpus N` on one host: starts N copies of this program (the same arguments) with the environment
// torchrun would give them (RANK = LOCAL_RANK = i, WORLD_SIZE = N, MASTER_ADDR = 127.0.0.1, MASTER_PORT = a free
// port), waits for all of them, and when one fails stops the others (SIGTERM, then SIGKILL after a grace period)
// so that none waits forever in a collective. A SIGTERM or SIGINT to the launcher is passed on to every rank (each
// rank runs in a process group of its own, so a terminal's Ctrl-C reaches it through the launcher, once), and a
// rank is sent SIGTERM if the launcher dies.
#pragma once
#include <string>
#include <vector>

namespace gsa::dist {

struct launch_result {
  int failed_rank = -1;   // the first rank that failed, -1 when all exited with 0
  int exit_code = 0;      // its exit status, or 128 + signal
  std::string what;       // "rank 1 exited with status 3", "rank 0 was killed by signal 9"
  int stopped_by = 0;     // the last stop signal (SIGTERM / SIGINT) passed on to the ranks, 0 if none; a rank
                          // that then ends with 128 + it (or is killed by it) has not failed
};

// Runs `argv` (argv[0] an executable path) N times with the group's variables added to the environment
// (plus `extra_env`, NAME=VALUE). Blocks until every child has exited.
launch_result launch_local(const std::vector<std::string>& argv, int n, const std::vector<std::string>& extra_env = {});

// This program's path and arguments, as the kernel started it (/proc/self/exe and /proc/self/cmdline).
std::vector<std::string> self_command_line();

}  // namespace gsa::dist
