// A Hugging Face model directory: config.json plus model.safetensors (or model.safetensors.index.json and its
// shards). Opening checks up front that every tensor the configuration implies is present, floating point and
// of the right shape, so a bad checkpoint fails with one message naming the file and the tensor before any
// weights are copied. Tokenizer files in the same directory are read elsewhere (tokenizer/).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/hf-config.h"
#include "io/safetensors.h"

namespace gsa {

struct model_dir {
  std::string path;
  model_config config;
  safetensors_set weights;  // keeps the mappings alive; views into it live as long as this does
};

// Throws gsa::error naming config.json or the weight file and the field or tensor at fault.
model_dir open_model_dir(const std::string& dir);

// Every tensor of expected_tensors(cfg) is in `weights` with that shape and a floating-point dtype. Extra
// tensors (an lm_head beside tied embeddings, old rotary buffers) are allowed.
void check_weights(const safetensors_set& weights, const model_config& cfg);

// Every tensor of expected_tensors(cfg) holds only finite values; otherwise throws naming the file, the tensor
// and the first bad element (NaN or Inf weights make every loss NaN).
void check_finite_weights(const safetensors_set& weights, const model_config& cfg);

// Creates `dir` if needed and writes config.json and model.safetensors (each atomically). The safetensors
// metadata gets "format": "pt", which transformers requires when any metadata is present.
void save_model_dir(const std::string& dir, const model_config& cfg,
                    const std::vector<std::pair<std::string, Tensor>>& tensors, const char* torch_dtype = "float32",
                    const std::map<std::string, std::string>& metadata = {});

}  // namespace gsa
