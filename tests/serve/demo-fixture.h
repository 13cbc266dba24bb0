// The shipped demo GSA model and its tokenizer, loaded once per test suite (the scheduler tests of test_serve).
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace gsa::serve {

inline const std::string demo_dir = std::string(GSA_SOURCE_DIR) + "/models/demo/gsa";

struct demo_fixture : ::testing::Test {
  static void SetUpTestSuite() {
    model = new llama_model(load_model(demo_dir));
    tok = new tokenizer(tokenizer::load(demo_dir));
  }
  static void TearDownTestSuite() {
    delete model;
    delete tok;
    model = nullptr;
    tok = nullptr;
  }
  inline static llama_model* model = nullptr;
  inline static tokenizer* tok = nullptr;
};

}  // namespace gsa::serve
