// safetensors header and data offsets (src/io/safetensors): the input is a whole .safetensors file. Opened, every
// tensor must lie inside the file and the tensors must cover the data section exactly (checked here again,
// independently of the reader); each floating-point tensor is then loaded and viewed.
#include <cstring>

#include "fuzz-util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gsa;
  const std::string path = fuzz::write_input("model.safetensors", {reinterpret_cast<const char*>(data), size});
  fuzz::expect_clean(path, [&] {
    safetensors_file f = safetensors_file::open(path);
    uint64_t header = 0;
    std::memcpy(&header, data, 8);  // open() succeeded: at least 8 bytes
    uint64_t covered = 0;
    for (const st_tensor_info& t : f.tensors()) {
      if (t.offset + t.nbytes > size - 8 - header) fuzz::defect("a tensor runs past the file", t.name);
      if (uint64_t(shape_numel(t.shape)) * dtype_size(t.type) != t.nbytes)
        fuzz::defect("a tensor's bytes do not match its shape", t.name);
      covered += t.nbytes;
      if (t.type == dtype::f32 || t.type == dtype::bf16 || t.type == dtype::f16) {
        Tensor x = f.load_f32(t.name);
        volatile float sink = x.numel() ? x.f32()[x.numel() - 1] : 0.0f;
        (void)sink;
      }
      try {
        (void)f.view(t.name);
      } catch (const gsa::error& e) {  // unaligned data (an unpadded header) is refused by name
        if (std::string_view(e.what()).find(t.name) == std::string_view::npos) throw;
      }
    }
    if (covered != size - 8 - header) fuzz::defect("the tensors do not cover the data section", path);
    for (auto& [k, v] : f.metadata()) (void)v.size();
  });
  return 0;
}
