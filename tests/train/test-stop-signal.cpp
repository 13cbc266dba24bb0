// The stop request (train/stop-signal.h) in a forked child, which calls only async-signal-safe functions: the
// same SIGTERM delivered twice at once (coreutils' timeout signals the command and then its process group) is one
// request the trainer answers with a checkpoint; one a second or more later ends the process, as a user's second
// Ctrl-C should.
#include <gtest/gtest.h>

#include <csignal>
#include <ctime>

#include <sys/wait.h>
#include <unistd.h>

#include "train/stop-signal.h"

namespace gsa {
namespace {

// Runs body in a forked child; its exit code, or -signal when a signal ended it.
template <class F>
int in_child(F body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? -WTERMSIG(st) : -1000;
}

void sleep_ms(long ms) {
  timespec t{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) != 0) {
  }
}

TEST(StopSignal, TheSameStopDeliveredTwiceIsOneRequest) {
  const int code = in_child([] {
    install_stop_signals();
    raise(SIGTERM);  // timeout's signal to the command ...
    raise(SIGTERM);  // ... and to its process group, handled one after the other
    return stop_signal() == SIGTERM ? 42 : 1;
  });
  EXPECT_EQ(code, 42) << "the second delivery of one stop ended the process (or the request was lost)";
}

TEST(StopSignal, ASecondRequestLaterEndsTheProcess) {
  const int code = in_child([] {
    install_stop_signals();
    raise(SIGINT);
    sleep_ms(2100);
    raise(SIGINT);  // a second Ctrl-C: the default action
    return 42;
  });
  EXPECT_EQ(code, -SIGINT);
}

TEST(StopSignal, NoRequestWithoutASignal) {
  const int code = in_child([] {
    install_stop_signals();
    return stop_signal() == 0 ? 42 : 1;
  });
  EXPECT_EQ(code, 42);
}

}  // namespace
}  // namespace gsa
