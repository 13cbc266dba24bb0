// safetensors checkpoints (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the
// data section; offsets are relative to its start, tensors are contiguous row-major.
//
// Reading mmaps the file read-only and validates the whole header up front (lengths, JSON, dtypes, sizes,
// offsets in range, no overlaps), so a bad file fails at open() with one message naming the file and the
// tensor, never later with a crash. Views borrow the mapping: they stay valid as long as any copy of the
// safetensors_file (or safetensors_set) that produced them lives, and they are read-only memory.
//
// Writing follows the reference implementation: header padded with spaces to a multiple of 8 bytes, tensors
// in the given order, back to back; the file is written to "<path>.tmp" and renamed (atomic-file.h).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace gsa {

struct st_tensor_info {
  std::string name;
  dtype type = dtype::f32;
  shape_t shape;
  size_t offset = 0;  // from the start of the data section
  size_t nbytes = 0;
};

class safetensors_file {
 public:
  safetensors_file() = default;
  // Throws gsa::error naming the file (and the tensor, when one is at fault).
  static safetensors_file open(const std::string& path);

  const std::string& path() const { return path_; }
  // In file (offset) order.
  std::vector<std::string> names() const;
  const std::vector<st_tensor_info>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const st_tensor_info& info(const std::string& name) const;  // throws when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Borrowed, read-only tensor pointing into the mapping (any dtype). Throws when the data is not aligned to
  // its element size (only possible in files whose header is not padded; use load_f32 then).
  Tensor view(const std::string& name) const;
  // Owning f32 copy; bf16/f16 are converted exactly. Throws if the tensor is not floating point.
  Tensor load_f32(const std::string& name) const;
  // Same, and throws "<file>: tensor '<name>' has shape [..] but the model expects [..]" on mismatch.
  Tensor load_f32(const std::string& name, const shape_t& expected_shape) const;
  // Index of the first NaN or Inf of a floating-point tensor, or -1 when every value is finite. Reads the
  // mapping in blocks (no copy of the whole tensor).
  int64_t first_non_finite(const std::string& name) const;

 private:
  struct mapping;
  std::string path_;
  std::shared_ptr<const mapping> map_;
  const unsigned char* data_ = nullptr;  // start of the data section, inside map_
  std::vector<st_tensor_info> tensors_;  // sorted by offset
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model directory: model.safetensors, or the shards listed by model.safetensors.index.json
// ("weight_map": {tensor: shard file}). Lookups go to the right shard; errors name the shard file.
class safetensors_set {
 public:
  safetensors_set() = default;
  // `path` is a model directory, a .safetensors file or a model.safetensors.index.json file.
  static safetensors_set open(const std::string& path);

  const std::string& path() const { return path_; }  // the file opened, or the index file
  std::vector<std::string> names() const;            // sorted
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const st_tensor_info& info(const std::string& name) const;
  const safetensors_file& file_of(const std::string& name) const;  // throws when absent
  const std::vector<safetensors_file>& files() const { return files_; }

  Tensor view(const std::string& name) const { return file_of(name).view(name); }
  Tensor load_f32(const std::string& name) const { return file_of(name).load_f32(name); }
  Tensor load_f32(const std::string& name, const shape_t& expected_shape) const {
    return file_of(name).load_f32(name, expected_shape);
  }

 private:
  std::string path_;
  std::vector<safetensors_file> files_;
  std::unordered_map<std::string, size_t> where_;  // tensor -> index into files_
};

// Writes tensors (any dtype, contiguous) in the given order. Names must be unique and non-empty.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace gsa
