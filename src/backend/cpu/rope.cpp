// Rotary position embedding, Hugging Face "rotate_half" convention: in each head of x (T, H, D), dimension i
// pairs with i + D/2 (i < D/2) and the pair rotates by angle pos[t] * inv_freq[i]:
//   x1' = x1 cos - x2 sin,  x2' = x2 cos + x1 sin.
// Both directions work in place. rope_backward applies the inverse rotation to a gradient (it transforms, it does
// not accumulate: dx is both the incoming and the outgoing gradient).
//
// Precision: the angle is formed as a float product pos * inv_freq, exactly as transformers does
// (inv_freq @ position_ids in f32), and cos / sin of that float are then evaluated in double. At position 32k the
// f32 rounding of the angle itself is ~1e-3 rad; reproducing the same rounding is what makes us agree with the
// PyTorch reference to ~1e-6, whereas an "exact" double angle would disagree by that 1e-3.
#include <cmath>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/error.h"

namespace gsa::cpu {

std::vector<float> rope_inv_freq(int D, float theta, const rope_scaling& s) {
  if (D <= 0 || D % 2 != 0) fail("rope: head dimension {} must be positive and even (check head_dim in the config)", D);
  if (!(theta > 0.0f)) fail("rope: rope_theta {} must be positive (check the model config)", theta);
  const int half = D / 2;
  std::vector<float> inv(half);
  // transformers: 1.0 / (base ** (arange(0, D, 2).float() / D)), all in f32.
  for (int i = 0; i < half; i++) {
    const float e = float(2 * i) / float(D);
    inv[i] = 1.0f / float(std::pow(double(theta), double(e)));
  }
  if (!s.llama3) return inv;
  if (!(s.factor > 0.0f) || !(s.high_freq_factor > s.low_freq_factor) || s.low_freq_factor <= 0.0f ||
      s.original_max_position <= 0)
    fail("rope: bad llama3 rope_scaling (factor {}, low_freq_factor {}, high_freq_factor {}, "
         "original_max_position_embeddings {}): need factor > 0, 0 < low < high, original > 0",
         s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position);
  // transformers' _compute_llama3_parameters, step by step in f32 like its tensor ops.
  const float old_len = float(s.original_max_position);
  const float low_freq_wavelen = old_len / s.low_freq_factor;
  const float high_freq_wavelen = old_len / s.high_freq_factor;
  const float two_pi = float(2.0 * M_PI);
  for (int i = 0; i < half; i++) {
    const float f = inv[i];
    const float wavelen = two_pi / f;
    if (wavelen > low_freq_wavelen) {  // low frequencies: fully scaled
      inv[i] = f / s.factor;
    } else if (wavelen >= high_freq_wavelen) {  // medium: interpolate between scaled and unscaled
      const float smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      inv[i] = (1.0f - smooth) * f / s.factor + smooth * f;
    }  // high frequencies: unchanged
  }
  return inv;
}

namespace {

// sign = +1: forward rotation; -1: inverse rotation (the transpose, since the rotation is orthogonal).
void rope_apply(float* x, const int32_t* pos, const float* inv_freq, int T, int H, int D, float sign) {
  const int half = D / 2;
#pragma omp parallel if (int64_t(T) * H * D >= (1 << 14))
  {
    std::vector<float> cs(half), sn(half);
#pragma omp for schedule(static)
    for (int t = 0; t < T; t++) {
      const float p = float(pos[t]);
      for (int i = 0; i < half; i++) {
        const float angle = p * inv_freq[i];  // f32 product on purpose: see the file comment
        cs[i] = float(std::cos(double(angle)));
        sn[i] = sign * float(std::sin(double(angle)));
      }
      for (int h = 0; h < H; h++) {
        float* x1 = x + (int64_t(t) * H + h) * D;
        float* x2 = x1 + half;
        for (int i = 0; i < half; i++) {
          const float a = x1[i], b = x2[i];
          x1[i] = a * cs[i] - b * sn[i];
          x2[i] = b * cs[i] + a * sn[i];
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int T, int H, int D) {
  rope_apply(x, pos, inv_freq, T, H, D, 1.0f);
}

void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int T, int H, int D) {
  rope_apply(dx, pos, inv_freq, T, H, D, -1.0f);
}

}  // namespace gsa::cpu
