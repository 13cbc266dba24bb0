// Shared by the scheduler tests (test_serve and test_cuda): step a scheduler until its jobs are done.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "serve/scheduler.h"

namespace gsa::serve {

// Steps until every job is done; returns the steps that did work (a test failure after 10000 steps).
inline int drain(scheduler& s, const std::vector<std::shared_ptr<job>>& jobs) {
  int steps = 0;
  for (int guard = 0; guard < 10000; guard++) {
    bool all = true;
    for (auto& j : jobs) all = all && j->state().done;
    if (all) return steps;
    if (s.step()) steps++;
  }
  ADD_FAILURE() << "jobs did not finish";
  return steps;
}

}  // namespace gsa::serve
