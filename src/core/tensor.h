// Tensor: a shape, row-major strides, an element type and storage that is either owned (shared, so copies
// of a Tensor alias) or borrowed (a view into memory someone else keeps alive: an mmap'd checkpoint, an
// activation arena). Math kernels take raw pointers plus explicit sizes (llm.c style); Tensor is what
// parameters, checkpoints and caches are made of.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace gsa {

using shape_t = std::vector<int64_t>;

std::string shape_str(const shape_t& s);  // "[2, 3, 4]"
int64_t shape_numel(const shape_t& s);

class Tensor {
 public:
  Tensor() = default;
  // Owning, zero-initialised.
  Tensor(shape_t shape, dtype t = dtype::f32);
  // Borrowed view of contiguous memory (not freed by the tensor).
  static Tensor borrow(void* data, shape_t shape, dtype t = dtype::f32);

  const shape_t& shape() const { return shape_; }
  const shape_t& strides() const { return strides_; }  // in elements
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(type_); }
  dtype type() const { return type_; }
  bool empty() const { return data_ == nullptr; }
  bool owning() const { return bool(storage_); }
  bool contiguous() const;

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  float* f32();  // asserts dtype f32
  const float* f32() const;
  int32_t* i32();
  const int32_t* i32() const;

  // Same storage, new shape (must be contiguous and have the same numel).
  Tensor view(shape_t shape) const;
  // Rows [begin, end) along dimension 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Deep copy into an owning tensor of type t (conversion through f32 for floating types).
  Tensor to(dtype t) const;
  Tensor clone() const { return to(type_); }
  void zero();

 private:
  shape_t shape_, strides_;
  dtype type_ = dtype::f32;
  void* data_ = nullptr;
  std::shared_ptr<void> storage_;
};

}  // namespace gsa
