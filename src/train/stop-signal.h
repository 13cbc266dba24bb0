// Stopping a training run cleanly. After install_stop_signals(), the first SIGTERM (a scheduler's, or `timeout`'s
// at its deadline) or SIGINT (Ctrl-C) only records the request: the trainer finishes the step it is in, writes a
// checkpoint at that step and returns (train_result::stopped_by), so that rerunning the same command resumes
// there, bit-exact. A second signal within a second of the first is the same stop delivered twice and changes
// nothing (coreutils' `timeout` signals the command and then its process group: without this the trainer died at
// every deadline without its checkpoint); two seconds or more after it, a second signal ends the process at once
// (the default action; in between, whole seconds of the monotonic clock decide).
#pragma once

namespace gsa {

void install_stop_signals();
// The signal that asked for a stop (SIGTERM / SIGINT), 0 if none.
int stop_signal();
// Forgets a request (tests).
void clear_stop_signal();

}  // namespace gsa
