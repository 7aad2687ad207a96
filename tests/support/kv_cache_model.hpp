#pragma once
// Shared by the cache-writer GPU tests (kv_append, copy_blocks): a paged K/V pool in one byte
// buffer under the NHD / HND / combined / padded layouts, its byte-exact host model, and an
// fp8 e4m3 quantiser written independently of CUDA's (a table of the 127 non-negative finite
// codes, nearest value, ties to the even code, saturation at 448).

#include <cuda_fp8.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/core/views.hpp"
#include "support/device_buffer.hpp"

namespace radix_attention::test {

enum class Layout { kNhd, kHnd, kCombined, kPaddedNhd, kOddPaddedNhd };

inline std::string name_of(Layout l) {
  switch (l) {
    case Layout::kNhd:
      return "NHD";
    case Layout::kHnd:
      return "HND";
    case Layout::kCombined:
      return "combined";
    case Layout::kPaddedNhd:
      return "paddedNHD";
    case Layout::kOddPaddedNhd:
      return "oddPaddedNHD";
  }
  return "?";
}

/// Where K and V live inside the pool buffer (element offsets) and the view's strides.
struct PoolLayout {
  std::int64_t k_offset = 0, v_offset = 0;
  std::int64_t block_stride = 0, token_stride = 0, head_stride = 0;  // 0 = NHD default
  std::int64_t elements = 0;                                         // pool buffer size
};

/// Strides of `layout` for [num_blocks, bs, heads, D]; padded layouts leave gaps (16-byte
/// multiples for kPaddedNhd, one element for kOddPaddedNhd) that a writer must not touch.
inline PoolLayout make_pool_layout(Layout layout, int num_blocks, int bs, int heads, int D,
                                   int elem_bytes) {
  PoolLayout p;
  const std::int64_t block = std::int64_t(bs) * heads * D;
  const std::int64_t pad16 = 16 / elem_bytes;  // elements in 16 bytes
  switch (layout) {
    case Layout::kNhd:
      p.v_offset = block * num_blocks + pad16;  // a gap between K and V
      p.elements = p.v_offset + block * num_blocks + pad16;
      return p;
    case Layout::kHnd:
      p.head_stride = std::int64_t(bs) * D;
      p.token_stride = D;
      p.block_stride = block;
      p.v_offset = block * num_blocks;
      p.elements = 2 * block * num_blocks;
      return p;
    case Layout::kCombined:
      p.token_stride = std::int64_t(heads) * D;
      p.head_stride = D;
      p.block_stride = 2 * block;
      p.v_offset = block;
      p.elements = 2 * block * num_blocks;
      return p;
    case Layout::kPaddedNhd:
    case Layout::kOddPaddedNhd: {
      const std::int64_t pad = layout == Layout::kPaddedNhd ? pad16 : 1;
      p.head_stride = D + pad;
      p.token_stride = heads * p.head_stride + pad;
      p.block_stride = bs * p.token_stride + pad;
      p.k_offset = pad;
      p.v_offset = p.k_offset + p.block_stride * num_blocks + pad;
      p.elements = p.v_offset + p.block_stride * num_blocks + pad;
      return p;
    }
  }
  return p;
}

/// Element offset of (block, offset, head, elem) of K (is_v false) or V.
inline std::int64_t pool_index(const PoolLayout& p, int bs, int heads, int D, bool is_v, int block,
                               int offset, int head, int elem) {
  const std::int64_t hs = p.head_stride != 0 ? p.head_stride : D;
  const std::int64_t ts = p.token_stride != 0 ? p.token_stride : std::int64_t(heads) * D;
  const std::int64_t bst = p.block_stride != 0 ? p.block_stride : std::int64_t(bs) * heads * D;
  return (is_v ? p.v_offset : p.k_offset) + block * bst + offset * ts + head * hs + elem;
}

/// A device pool of T (any element type) and its host model, both initialised with the same
/// random poison bytes (never an fp8 NaN code, so a NaN in the pool was written).
template <class T>
struct Pool {
  PoolLayout layout;
  int num_blocks, bs, heads, D;
  std::vector<T> model;
  DeviceBuffer<T> device;

  Pool(Layout l, int num_blocks_, int bs_, int heads_, int D_, std::mt19937_64& rng)
      : layout(make_pool_layout(l, num_blocks_, bs_, heads_, D_, sizeof(T))),
        num_blocks(num_blocks_),
        bs(bs_),
        heads(heads_),
        D(D_),
        model(layout.elements) {
    std::vector<unsigned char> bytes(model.size() * sizeof(T));
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : bytes) {
      b = static_cast<unsigned char>(byte(rng));
      if ((b & 0x7F) == 0x7F) b ^= 0x01;
    }
    std::memcpy(model.data(), bytes.data(), bytes.size());
    device = DeviceBuffer<T>(model);
  }

  PagedKvCacheMutView<T> view() {
    return {device.data() + layout.k_offset,
            device.data() + layout.v_offset,
            num_blocks,
            bs,
            heads,
            D,
            layout.block_stride,
            layout.token_stride,
            layout.head_stride};
  }
  T& at(bool is_v, int block, int offset, int head, int elem) {
    return model[pool_index(layout, bs, heads, D, is_v, block, offset, head, elem)];
  }
};

/// NHD host K and V ([blocks, bs, heads, D] each) laid out in one buffer under `layout`, the
/// gaps of the padded layouts NaN (an attention kernel that read one would show it).
template <class T>
struct LaidOutKv {
  PoolLayout layout;
  std::vector<T> buffer;

  /// The read-only view of the laid-out pool at device copy `base` of `buffer`.
  PagedKvCacheView<T> view(const T* base, int num_blocks, int bs, int heads, int D) const {
    PagedKvCacheView<T> v{base + layout.k_offset, base + layout.v_offset, num_blocks, bs, heads, D};
    v.block_stride = layout.block_stride;
    v.token_stride = layout.token_stride;
    v.head_stride = layout.head_stride;
    return v;
  }
};

template <class T>
LaidOutKv<T> lay_out_kv(const std::vector<T>& k, const std::vector<T>& v, Layout layout,
                        int num_blocks, int bs, int heads, int D) {
  LaidOutKv<T> r;
  r.layout = make_pool_layout(layout, num_blocks, bs, heads, D, sizeof(T));
  r.buffer.assign(static_cast<std::size_t>(r.layout.elements), static_cast<T>(NAN));
  std::size_t i = 0;
  for (int b = 0; b < num_blocks; ++b)
    for (int o = 0; o < bs; ++o)
      for (int h = 0; h < heads; ++h)
        for (int d = 0; d < D; ++d, ++i) {
          r.buffer[pool_index(r.layout, bs, heads, D, false, b, o, h, d)] = k[i];
          r.buffer[pool_index(r.layout, bs, heads, D, true, b, o, h, d)] = v[i];
        }
  return r;
}

/// Bytes equal, except that any two fp8 NaN codes count as equal (cvt may set either sign).
template <class T>
bool same_element(const T& a, const T& b) {
  unsigned char x[sizeof(T)], y[sizeof(T)];
  std::memcpy(x, &a, sizeof(T));
  std::memcpy(y, &b, sizeof(T));
  if (sizeof(T) == 1 && (x[0] & 0x7F) == 0x7F && (y[0] & 0x7F) == 0x7F) return true;
  return std::memcmp(x, y, sizeof(T)) == 0;
}

/// Expects the device pool to equal its model everywhere; reports the first few differences.
template <class T>
void expect_pool_matches(const Pool<T>& pool) {
  const std::vector<T> got = pool.device.download();
  ASSERT_EQ(got.size(), pool.model.size());
  int bad = 0;
  std::size_t count = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (same_element(got[i], pool.model[i])) continue;
    ++count;
    if (bad++ < 5) ADD_FAILURE() << "pool element " << i << " differs from the model";
  }
  EXPECT_EQ(count, 0u) << "elements differing from the model";
}

/// The value of e4m3 code `c` (c in [0, 0x7E]), from its fields.
inline double e4m3_value(int c) {
  const int exp = (c >> 3) & 0xF, mant = c & 7;
  return exp == 0 ? std::ldexp(mant / 8.0, -6) : std::ldexp(1.0 + mant / 8.0, exp - 7);
}

/// Reference e4m3 quantiser: round to nearest, ties to even code; |x| beyond 448 (and Inf)
/// saturates to 448; NaN gives 0x7F.
inline unsigned char reference_e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const unsigned char sign = std::signbit(x) ? 0x80 : 0x00;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return sign | 0x7E;
  int lo = 0;
  while (lo + 1 <= 0x7E && e4m3_value(lo + 1) <= a) ++lo;
  if (lo == 0x7E) return sign | 0x7E;
  const double dl = a - e4m3_value(lo), dh = e4m3_value(lo + 1) - a;
  const int code = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) == 0 ? lo : lo + 1);
  return sign | static_cast<unsigned char>(code);
}

}  // namespace radix_attention::test
