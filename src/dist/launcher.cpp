#include "dist/launcher.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "core/error.h"
#include "dist/rendezvous.h"

extern char** environ;

namespace gsa::dist {

namespace {

std::string describe_status(int rank, int status) {
  if (WIFEXITED(status)) return fmt::format("rank {} exited with status {}", rank, WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("rank {} was killed by signal {} ({})", rank, WTERMSIG(status),
                                              ::strsignal(WTERMSIG(status)));
  return fmt::format("rank {} ended with wait status {}", rank, status);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Stop requests to the launcher while its ranks run: counted here, forwarded by the wait loop.
volatile sig_atomic_t g_stop_sig = 0, g_stop_count = 0;
void on_stop(int sig) {
  g_stop_sig = sig;
  g_stop_count = g_stop_count + 1;
}

// SIGTERM and SIGINT handled by on_stop for the life of the object, the previous handlers restored after.
class stop_forwarding {
 public:
  stop_forwarding() {
    g_stop_sig = 0;
    g_stop_count = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, &old_term_);
    ::sigaction(SIGINT, &sa, &old_int_);
  }
  ~stop_forwarding() {
    ::sigaction(SIGTERM, &old_term_, nullptr);
    ::sigaction(SIGINT, &old_int_, nullptr);
  }
  stop_forwarding(const stop_forwarding&) = delete;
  stop_forwarding& operator=(const stop_forwarding&) = delete;

 private:
  struct sigaction old_term_ {}, old_int_ {};
};

}  // namespace

std::vector<std::string> self_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t a = 0;
  for (size_t i = 0; i < all.size(); i++)
    if (all[i] == '\0') args.push_back(all.substr(a, i - a)), a = i + 1;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec || args.empty()) fail("cannot read this program's command line from /proc/self: {}", ec.message());
  args[0] = exe.string();
  return args;
}

launch_result launch_local(const std::vector<std::string>& argv, int n, const std::vector<std::string>& extra_env) {
  GSA_ASSERT(!argv.empty() && n >= 1);
  const int port = free_local_port();
  // The environment each child gets: ours without the group's variables, then the group's.
  std::vector<std::string> base;
  for (char** e = environ; *e; e++) {
    std::string s(*e);
    bool ours = false;
    for (const char* v : {"RANK=", "LOCAL_RANK=", "WORLD_SIZE=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT="})
      ours |= s.rfind(v, 0) == 0;
    if (!ours) base.push_back(s);
  }
  for (auto& e : extra_env) base.push_back(e);
  stop_forwarding forward;
  const pid_t launcher = ::getpid();
  std::vector<pid_t> pids(size_t(n), -1);
  auto stop_all = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  };
  for (int r = 0; r < n; r++) {
    std::vector<std::string> env = base;
    for (auto& [k, v] : {std::pair<std::string, std::string>{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)},
                         {"WORLD_SIZE", std::to_string(n)}, {"LOCAL_WORLD_SIZE", std::to_string(n)},
                         {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}})
      env.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (auto& s : argv) cargv.push_back(const_cast<char*>(s.c_str()));
    cargv.push_back(nullptr);
    for (auto& s : env) cenv.push_back(const_cast<char*>(s.c_str()));
    cenv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      stop_all(SIGKILL);
      fail("cannot start rank {}: fork: {}", r, std::strerror(errno));
    }
    if (pid == 0) {
      // Each rank in a process group of its own, so a terminal's Ctrl-C reaches the launcher only, which forwards
      // it once (a rank that got it twice would end at once instead of saving its step); and a rank never
      // outlives the launcher: if it dies, the rank is asked to stop as by SIGTERM.
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(128 + SIGTERM);  // the launcher died before prctl
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      sigemptyset(&dfl.sa_mask);
      ::sigaction(SIGTERM, &dfl, nullptr);
      ::sigaction(SIGINT, &dfl, nullptr);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);  // exec failed: reported as status 127
    }
    pids[size_t(r)] = pid;
  }
  launch_result res;
  int running = n;
  auto stopping_since = std::chrono::steady_clock::time_point{};
  bool killed = false;
  int forwarded = 0;  // stop requests passed on to the ranks
  while (running > 0) {
    // A stop request (SIGTERM / SIGINT to the launcher): passed on to every rank still running, once per request,
    // so the group saves the step it reached and ends as one process would (a second request ends it at once).
    while (forwarded < g_stop_count) {
      forwarded++;
      res.stopped_by = int(g_stop_sig);
      stop_all(res.stopped_by);
    }
    int status = 0;
    const pid_t p = ::waitpid(-1, &status, WNOHANG);
    if (p < 0 && errno == EINTR) continue;
    if (p < 0) break;  // no children left
    if (p == 0) {
      // A failed group gets 15 s to end after SIGTERM (a rank in a collective may not notice), then SIGKILL.
      if (res.failed_rank >= 0 && !killed && std::chrono::steady_clock::now() - stopping_since > std::chrono::seconds(15)) {
        stop_all(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int rank = -1;
    for (int r = 0; r < n; r++)
      if (pids[size_t(r)] == p) rank = r;
    if (rank < 0) continue;  // not one of ours
    pids[size_t(rank)] = -1;
    running--;
    if ((WIFEXITED(status) && WEXITSTATUS(status) == 0) || res.failed_rank >= 0) continue;
    // A rank that ended because of a forwarded stop (128 + the signal, or killed by it) has not failed.
    if (res.stopped_by != 0 && exit_code_of(status) == 128 + res.stopped_by) continue;
    res.failed_rank = rank;
    res.exit_code = exit_code_of(status);
    res.what = describe_status(rank, status);
    stop_all(SIGTERM);
    stopping_since = std::chrono::steady_clock::now();
  }
  return res;
}

}  // namespace gsa::dist
