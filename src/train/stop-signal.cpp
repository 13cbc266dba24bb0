// The stop request of a training run (see stop-signal.h): a flag the handler sets and the trainer polls per step.
#include "train/stop-signal.h"

#include <csignal>

namespace gsa {

namespace {

volatile std::sig_atomic_t requested = 0;

void on_stop(int sig) { requested = sig; }

}  // namespace

void install_stop_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // the second signal takes the default action: the process ends
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() { return int(requested); }

void clear_stop_signal() { requested = 0; }

}  // namespace gsa
