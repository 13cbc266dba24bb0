#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json-util.h"
#include "io/atomic-file.h"

namespace gsa {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is every host gsa targets");

namespace {

// The reference implementation refuses headers above 100 MB; a larger length means a corrupt file.
constexpr uint64_t max_header_bytes = 100'000'000;

const char* supported_dtypes = "F32, BF16, F16, I32, I64, U8";

bool is_float(dtype t) { return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16; }

// A JSON non-negative integer, or false.
bool get_u64(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = uint64_t(j.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

struct safetensors_file::mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~mapping() {
    if (addr) ::munmap(addr, size);
  }
};

safetensors_file safetensors_file::open(const std::string& path) {
  safetensors_file f;
  f.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open the safetensors file: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("{}: cannot stat the file: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: truncated safetensors file: {} bytes, shorter than the 8-byte header length", path, size);
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (addr == MAP_FAILED) fail("{}: cannot mmap the file: {}", path, std::strerror(map_errno));
  auto m = std::make_shared<mapping>();
  m->addr = addr;
  m->size = size;
  f.map_ = m;
  auto base = static_cast<const unsigned char*>(addr);

  uint64_t n = 0;
  std::memcpy(&n, base, 8);
  if (n > max_header_bytes)
    fail("{}: header length {} is larger than the 100 MB limit: the file is corrupt or not a safetensors file", path, n);
  if (n > size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes): the file is truncated or not a "
         "safetensors file", path, n, size);
  f.data_ = base + 8 + n;
  size_t data_size = size - 8 - size_t(n);

  const nlohmann::json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(base) + 8, size_t(n)), path + " (header)");
  if (!header.is_object()) fail("{}: the header is not a JSON object: the file is corrupt", path);

  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) fail("{}: '__metadata__' is not an object of strings", path);
      for (auto& [k, s] : v.items()) {
        if (!s.is_string()) fail("{}: '__metadata__' entry '{}' is not a string", path, k);
        f.metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail("{}: tensor '{}': header entry is not an object", path, name);
    st_tensor_info ti;
    ti.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail("{}: tensor '{}': missing or non-string 'dtype'", path, name);
    if (!dtype_from_safetensors_name(dt->get<std::string>(), &ti.type))
      fail("{}: tensor '{}' has dtype '{}', which gsa does not read (supported: {})", path, name,
           dt->get<std::string>(), supported_dtypes);
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': missing or non-array 'shape'", path, name);
    uint64_t numel = 1, nonzero = 1;
    bool overflow = false, too_large = false;
    for (auto& d : *sh) {
      uint64_t x;
      if (!get_u64(d, &x) || x > uint64_t(INT64_MAX))
        fail("{}: tensor '{}': shape {} has an entry that is not a non-negative integer", path, name, sh->dump());
      ti.shape.push_back(int64_t(x));
      overflow |= __builtin_mul_overflow(numel, x, &numel);
      too_large |= x != 0 && (__builtin_mul_overflow(nonzero, x, &nonzero) || nonzero > uint64_t(INT64_MAX));
    }
    auto off = v.find("data_offsets");
    uint64_t b = 0, e = 0;
    if (off == v.end() || !off->is_array() || off->size() != 2 || !get_u64((*off)[0], &b) || !get_u64((*off)[1], &e))
      fail("{}: tensor '{}': missing 'data_offsets' or it is not [begin, end] with non-negative integers", path, name);
    if (e < b) fail("{}: tensor '{}': data_offsets [{}, {}] end before they begin", path, name, b, e);
    uint64_t want = 0;
    overflow |= __builtin_mul_overflow(numel, uint64_t(dtype_size(ti.type)), &want);
    if (overflow || e - b != want)
      fail("{}: tensor '{}': data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}: the header is corrupt",
           path, name, b, e, e - b, shape_str(ti.shape), dt->get<std::string>(),
           overflow ? std::string("more than 2^64") : std::to_string(want));
    // An empty tensor may still name huge dimensions ([0, 2^40, 2^40]); its row strides would overflow int64
    // (found by fuzz/fuzz-safetensors.cpp: signed overflow in core/tensor.cpp). No real tensor needs them.
    if (too_large)
      fail("{}: tensor '{}': shape {} multiplies past 2^63 elements (ignoring zero dimensions): the header is "
           "corrupt", path, name, sh->dump());
    if (e > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] run past the end of the data section ({} bytes): the file is "
           "truncated or corrupt", path, name, b, e, data_size);
    ti.offset = size_t(b);
    ti.nbytes = size_t(e - b);
    f.tensors_.push_back(std::move(ti));
  }

  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const st_tensor_info& a, const st_tensor_info& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  // The tensors must cover the data section exactly, as the reference safetensors library requires: contiguous
  // from byte 0, no gap, no overlap, the last one ending at the end of the file. A header length that is off by a
  // byte (the JSON still parses thanks to its padding) shifts every tensor and is caught here, not loaded as
  // garbage. Empty tensors occupy no bytes.
  const st_tensor_info* prev = nullptr;
  size_t next = 0;
  for (auto& t : f.tensors_) {
    if (t.nbytes == 0) continue;
    if (t.offset < next)
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap in the data section: the header is corrupt", path,
           prev->name, prev->offset, prev->offset + prev->nbytes, t.name, t.offset, t.offset + t.nbytes);
    if (t.offset > next)
      fail("{}: {} bytes of the data section before tensor '{}' (at {}) belong to no tensor: the header is corrupt "
           "(or its length field is off)", path, t.offset - next, t.name, t.offset);
    next = t.offset + t.nbytes;
    prev = &t;
  }
  if (next != data_size)
    fail("{}: the tensors end at byte {} of the data section but it has {} bytes: the header length field or the "
         "offsets are off, or the file was cut or extended", path, next, data_size);
  for (size_t i = 0; i < f.tensors_.size(); i++) f.index_[f.tensors_[i].name] = i;
  return f;
}

std::vector<std::string> safetensors_file::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (auto& t : tensors_) out.push_back(t.name);
  return out;
}

const st_tensor_info& safetensors_file::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail("{}: no tensor named '{}' in the checkpoint", path_, name);
  return tensors_[it->second];
}

Tensor safetensors_file::view(const std::string& name) const {
  auto& ti = info(name);
  const unsigned char* p = data_ + ti.offset;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(ti.type) != 0)
    fail("{}: tensor '{}' is not aligned to its {}-byte elements in the file and cannot be viewed in place; "
         "load a copy instead", path_, name, dtype_size(ti.type));
  return Tensor::borrow(const_cast<unsigned char*>(p), ti.shape, ti.type);
}

Tensor safetensors_file::load_f32(const std::string& name) const {
  auto& ti = info(name);
  if (!is_float(ti.type))
    fail("{}: tensor '{}' has dtype {}, but a floating-point tensor (F32, BF16, F16) is expected", path_, name,
         dtype_safetensors_name(ti.type));
  Tensor out(ti.shape, dtype::f32);
  const unsigned char* p = data_ + ti.offset;
  size_t n = size_t(out.numel());
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(ti.type) == 0) {
    convert_to_f32(out.f32(), p, ti.type, n);
  } else {  // unpadded header: copy to aligned memory first
    Tensor tmp(ti.shape, ti.type);
    std::memcpy(tmp.raw(), p, ti.nbytes);
    convert_to_f32(out.f32(), tmp.raw(), ti.type, n);
  }
  return out;
}

int64_t safetensors_file::first_non_finite(const std::string& name) const {
  auto& ti = info(name);
  if (!is_float(ti.type)) return -1;
  const size_t es = dtype_size(ti.type), n = ti.nbytes / es, block = 1 << 16;
  std::vector<unsigned char> raw(std::min(n, block) * es);  // aligned copy: the mapping may not be
  std::vector<float> f(std::min(n, block));
  for (size_t b = 0; b < n; b += block) {
    const size_t m = std::min(block, n - b);
    std::memcpy(raw.data(), data_ + ti.offset + b * es, m * es);
    convert_to_f32(f.data(), raw.data(), ti.type, m);
    for (size_t i = 0; i < m; i++)
      if (!std::isfinite(f[i])) return int64_t(b + i);
  }
  return -1;
}

Tensor safetensors_file::load_f32(const std::string& name, const shape_t& expected_shape) const {
  auto& ti = info(name);
  if (ti.shape != expected_shape)
    fail("{}: tensor '{}' has shape {} but the model expects {}", path_, name, shape_str(ti.shape),
         shape_str(expected_shape));
  return load_f32(name);
}

// --- sets of shards ---

safetensors_set safetensors_set::open(const std::string& path_in) {
  namespace fs = std::filesystem;
  safetensors_set s;
  fs::path p = path_in;
  fs::path index;
  if (fs::is_directory(p)) {
    if (fs::exists(p / "model.safetensors.index.json")) {
      index = p / "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      p = p / "model.safetensors";
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json in this directory", path_in);
    }
  } else if (p.filename().string().ends_with(".index.json")) {
    index = p;
  }

  if (index.empty()) {
    s.path_ = p.string();
    s.files_.push_back(safetensors_file::open(s.path_));
    for (auto& t : s.files_[0].tensors()) s.where_[t.name] = 0;
    return s;
  }

  s.path_ = index.string();
  nlohmann::json j;
  {
    j = read_json_file_bounded(s.path_, "safetensors index");
  }
  auto wm = j.is_object() ? j.find("weight_map") : j.end();
  if (wm == j.end() || !wm->is_object())
    fail("{}: missing field 'weight_map' (an object mapping each tensor name to its shard file)", s.path_);
  std::map<std::string, size_t> shard_index;  // shard file name -> index into files_
  fs::path dir = index.parent_path();
  for (auto& [name, shard] : wm->items()) {
    if (!shard.is_string()) fail("{}: weight_map entry for tensor '{}' is not a file name", s.path_, name);
    std::string file = shard.get<std::string>();
    fs::path rel = file;
    // Shards live beside the index; refusing other paths keeps a bad index from reading arbitrary files.
    if (file.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; }))
      fail("{}: weight_map entry for tensor '{}' names '{}', which is not a file beside the index", s.path_, name,
           file);
    auto [it, inserted] = shard_index.emplace(file, s.files_.size());
    if (inserted) s.files_.push_back(safetensors_file::open((dir / rel).string()));
    const safetensors_file& f = s.files_[it->second];
    if (!f.has(name))
      fail("{}: tensor '{}' is listed in {} but missing from the shard", f.path(), name, s.path_);
    s.where_[name] = it->second;
  }
  return s;
}

std::vector<std::string> safetensors_set::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (auto& [n, i] : where_) out.push_back(n);
  std::sort(out.begin(), out.end());
  return out;
}

const safetensors_file& safetensors_set::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("{}: no tensor named '{}' in the checkpoint", path_, name);
  return files_[it->second];
}

const st_tensor_info& safetensors_set::info(const std::string& name) const { return file_of(name).info(name); }

// --- writing ---

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the header in the order the tensors are written, which makes files easy to read.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      fail("{}: cannot write a tensor named '{}': the name is reserved or empty", path, name);
    if (header.contains(name)) fail("{}: tensor '{}' is given twice", path, name);
    GSA_ASSERT(!t.empty() || t.numel() == 0, "tensor '{}' has no data", name);
    GSA_ASSERT(t.contiguous(), "tensor '{}' is not contiguous", name);
    nlohmann::ordered_json e;
    e["dtype"] = dtype_safetensors_name(t.type());
    e["shape"] = t.shape();
    e["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = std::move(e);
    offset += t.nbytes();
  }
  std::string hs;
  try {
    hs = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: cannot encode the header ({}): tensor names and metadata must be valid UTF-8", path, e.what());
  }
  // Padding keeps the data section 8-byte aligned, so mmapped tensors can be used in place.
  hs.append((8 - hs.size() % 8) % 8, ' ');
  uint64_t n = hs.size();
  unsigned char len[8];
  std::memcpy(len, &n, 8);

  atomic_file_writer w(path);
  w.write(len, 8);
  w.write(hs);
  for (auto& [name, t] : tensors)
    if (t.nbytes()) w.write(t.raw(), t.nbytes());
  w.commit();
}

}  // namespace gsa
