// Shared by the CUDA test programs: skip a test, with the reason, on a machine without a usable GPU.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "backend/cuda/runtime.h"

#define REQUIRE_GPU()                                         \
  do {                                                        \
    std::string why;                                          \
    if (!::gsa::cuda::available(&why)) GTEST_SKIP() << why;   \
  } while (0)
