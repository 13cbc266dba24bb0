// The stop request of a training run (see stop-signal.h): a flag the handler sets and the trainer polls per step.
#include "train/stop-signal.h"

#include <csignal>
#include <ctime>

namespace gsa {

namespace {

volatile std::sig_atomic_t requested = 0;
volatile std::sig_atomic_t first_second = 0;  // CLOCK_MONOTONIC seconds of the first request

// Only async-signal-safe calls here (clock_gettime, signal, raise).
void on_stop(int sig) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (!requested) {
    requested = sig;
    first_second = std::sig_atomic_t(now.tv_sec);
    return;
  }
  // The same stop delivered again (coreutils' timeout signals the command, then its whole process group, so the
  // trainer gets SIGTERM twice at once) is not a second request; one in a later second but the next ends the process.
  if (now.tv_sec - first_second >= 2) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

void install_stop_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() { return int(requested); }

void clear_stop_signal() { requested = 0; }

}  // namespace gsa
