// Backend selection: the CPU backend always; the CUDA backend when this build has it (GSA_HAVE_CUDA).
#include "backend/backend.h"

#include <memory>

#include "core/error.h"
#ifdef GSA_HAVE_CUDA
#include "backend/cuda/cuda-backend.h"
#endif

namespace gsa {

backend& get_backend(device d, dtype act) {
  if (d == device::cpu) {
    if (act != dtype::f32)
      fail("the CPU backend computes in f32 only (asked for {}); use --precision f32 with --device cpu",
           dtype_name(act));
    return cpu_backend();
  }
#ifdef GSA_HAVE_CUDA
  static std::unique_ptr<backend> cuda;
  if (!cuda || cuda->act() != act) cuda = cuda::make_backend(act);
  return *cuda;
#else
  fail("this gsa was built without CUDA: rebuild with scripts/build.sh -DGSA_CUDA=ON on a machine with nvcc, or "
       "use --device cpu");
#endif
}

device parse_device(const std::string& s) {
  if (s == "cpu") return device::cpu;
  if (s == "cuda" || s == "gpu") return device::cuda;
  fail("unknown device '{}'; use cpu or cuda", s);
}

dtype parse_precision(const std::string& s) {
  if (s == "bf16") return dtype::bf16;
  if (s == "f32" || s == "fp32") return dtype::f32;
  fail("unknown precision '{}'; use bf16 or f32", s);
}

}  // namespace gsa
