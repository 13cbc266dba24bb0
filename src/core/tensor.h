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

// Where a tensor's memory lives. CPU tensors are plain host memory; device tensors are allocated by a backend
// (backend/backend.h) and reach the host only through copies (to_host, or the backend's download).
enum class device : uint8_t { cpu, cuda };
const char* device_name(device d);

// Copies between host and device memory, installed by the backend that owns device memory (the CUDA runtime
// installs them when it starts). Without them, device tensors cannot exist.
struct device_copy_hooks {
  void (*to_host)(void* dst, const void* src, size_t bytes) = nullptr;
  void (*to_device)(void* dst, const void* src, size_t bytes) = nullptr;
};
void set_device_copy_hooks(device d, const device_copy_hooks& hooks);

std::string shape_str(const shape_t& s);  // "[2, 3, 4]"
int64_t shape_numel(const shape_t& s);

class Tensor {
 public:
  Tensor() = default;
  // Owning, zero-initialised.
  Tensor(shape_t shape, dtype t = dtype::f32);
  // Borrowed view of contiguous memory (not freed by the tensor).
  static Tensor borrow(void* data, shape_t shape, dtype t = dtype::f32);
  // A tensor over memory of device d that `storage` keeps alive (storage may be null: borrowed). For backends.
  static Tensor wrap(std::shared_ptr<void> storage, void* data, shape_t shape, dtype t, device d);

  const shape_t& shape() const { return shape_; }
  const shape_t& strides() const { return strides_; }  // in elements
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(type_); }
  dtype type() const { return type_; }
  device where() const { return device_; }
  bool on_host() const { return device_ == device::cpu; }
  bool empty() const { return data_ == nullptr; }
  bool owning() const { return bool(storage_); }
  bool contiguous() const;

  // Any device. The typed accessors below are for host code and assert that the tensor is on the CPU.
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
  // The tensor on the host as type t: itself (sharing storage) when it already is a host tensor of type t,
  // else a copy (device -> host through the installed hooks, then a conversion).
  Tensor host(dtype t = dtype::f32) const;
  void zero();

 private:
  shape_t shape_, strides_;
  dtype type_ = dtype::f32;
  device device_ = device::cpu;
  void* data_ = nullptr;
  std::shared_ptr<void> storage_;
};

}  // namespace gsa
