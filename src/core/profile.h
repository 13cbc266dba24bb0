// Named wall-time counters for benchmarks that want to see inside a step (`gsa bench train` with
// GSA_TRAIN_PROFILE=1). Code that is on a hot path checks profile_on() once and, only then, synchronises its
// device around a phase and adds the phase's milliseconds under a dotted name ("select.scores"). Off by default:
// nothing is timed and nothing is synchronised. Single-threaded use (the training loop's thread).
#pragma once
#include <map>
#include <string>

namespace gsa {

bool profile_on();                                     // GSA_TRAIN_PROFILE set in the environment
void profile_add(const std::string& name, double ms);  // adds to the counter (created at 0)
std::map<std::string, double> profile_take();          // the counters so far, then all cleared
double profile_clock_ms();                             // a steady clock in milliseconds, for the differences

}  // namespace gsa
