#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace gsa {

const char* device_name(device d) { return d == device::cpu ? "cpu" : "cuda"; }

namespace {
device_copy_hooks g_hooks[2];
}

void set_device_copy_hooks(device d, const device_copy_hooks& hooks) { g_hooks[int(d)] = hooks; }

std::string shape_str(const shape_t& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const shape_t& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

static shape_t row_major_strides(const shape_t& s) {
  shape_t st(s.size());
  int64_t acc = 1;
  for (int i = int(s.size()) - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor::Tensor(shape_t shape, dtype t) : shape_(std::move(shape)), type_(t) {
  for (auto d : shape_)
    if (d < 0) fail("tensor shape {} has a negative dimension", shape_str(shape_));
  strides_ = row_major_strides(shape_);
  size_t bytes = nbytes();
  // 64-byte alignment for SIMD loads; at least one byte so data_ is never null for an owning tensor.
  size_t alloc = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, alloc ? alloc : 64);
  if (!p) fail_oom("out of memory allocating a tensor of shape {} ({} bytes)", shape_str(shape_), bytes);
  std::memset(p, 0, alloc ? alloc : 64);
  storage_ = std::shared_ptr<void>(p, std::free);
  data_ = p;
}

Tensor Tensor::borrow(void* data, shape_t shape, dtype t) {
  Tensor out;
  out.shape_ = std::move(shape);
  out.strides_ = row_major_strides(out.shape_);
  out.type_ = t;
  out.data_ = data;
  return out;
}

Tensor Tensor::wrap(std::shared_ptr<void> storage, void* data, shape_t shape, dtype t, device d) {
  Tensor out;
  out.shape_ = std::move(shape);
  out.strides_ = row_major_strides(out.shape_);
  out.type_ = t;
  out.device_ = d;
  out.data_ = data;
  out.storage_ = std::move(storage);
  return out;
}

Tensor Tensor::host(dtype t) const {
  if (on_host()) return t == type_ ? *this : to(t);
  GSA_ASSERT(contiguous());
  const auto& hooks = g_hooks[int(device_)];
  if (!hooks.to_host) fail("a {} tensor cannot be read: that backend is not running", device_name(device_));
  Tensor out(shape_, type_);
  hooks.to_host(out.data_, data_, nbytes());
  return t == type_ ? out : out.to(t);
}

bool Tensor::contiguous() const { return strides_ == row_major_strides(shape_); }

float* Tensor::f32() {
  GSA_ASSERT(device_ == device::cpu, "a {} tensor read as host memory; copy it with host()", device_name(device_));
  GSA_ASSERT(type_ == dtype::f32, "tensor is {}", dtype_name(type_));
  return static_cast<float*>(data_);
}
const float* Tensor::f32() const {
  GSA_ASSERT(device_ == device::cpu, "a {} tensor read as host memory; copy it with host()", device_name(device_));
  GSA_ASSERT(type_ == dtype::f32, "tensor is {}", dtype_name(type_));
  return static_cast<const float*>(data_);
}
int32_t* Tensor::i32() {
  GSA_ASSERT(device_ == device::cpu, "a {} tensor read as host memory; copy it with host()", device_name(device_));
  GSA_ASSERT(type_ == dtype::i32, "tensor is {}", dtype_name(type_));
  return static_cast<int32_t*>(data_);
}
const int32_t* Tensor::i32() const {
  GSA_ASSERT(device_ == device::cpu, "a {} tensor read as host memory; copy it with host()", device_name(device_));
  GSA_ASSERT(type_ == dtype::i32, "tensor is {}", dtype_name(type_));
  return static_cast<const int32_t*>(data_);
}

Tensor Tensor::view(shape_t shape) const {
  GSA_ASSERT(contiguous());
  if (shape_numel(shape) != numel()) fail("cannot view a tensor of shape {} as {}", shape_str(shape_), shape_str(shape));
  Tensor out = *this;
  out.shape_ = std::move(shape);
  out.strides_ = row_major_strides(out.shape_);
  return out;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  GSA_ASSERT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0]);
  Tensor out = *this;
  out.shape_[0] = end - begin;
  out.data_ = static_cast<char*>(data_) + begin * strides_[0] * int64_t(dtype_size(type_));
  return out;
}

Tensor Tensor::to(dtype t) const {
  GSA_ASSERT(contiguous());
  if (!on_host()) return host(t);
  Tensor out(shape_, t);
  if (t == type_) {
    std::memcpy(out.data_, data_, nbytes());
  } else if (t == dtype::f32) {
    convert_to_f32(static_cast<float*>(out.data_), data_, type_, size_t(numel()));
  } else if (type_ == dtype::f32) {
    convert_from_f32(out.data_, static_cast<const float*>(data_), t, size_t(numel()));
  } else {
    Tensor tmp = to(dtype::f32);
    return tmp.to(t);
  }
  return out;
}

void Tensor::zero() {
  GSA_ASSERT(contiguous());
  GSA_ASSERT(on_host(), "zero() of a {} tensor: use its backend's zero()", device_name(device_));
  std::memset(data_, 0, nbytes());
}

}  // namespace gsa
