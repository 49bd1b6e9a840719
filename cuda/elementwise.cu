/* elementwise.cu: CUDA elementwise kernels: fill copy unary binary clamp where tri arange
 * rand softplus adamw. Semantics are those of core/cpu/elementwise.c, which the tests compare
 * against:
 *  - compute types: float32 and bfloat16 in float, float64 in double, int64/uint8/bool
 *    in int64 (wrapping); conversions to integers truncate, NaN -> 0, saturate at the
 *    int64 range; to bool test != 0; casts between dtypes go through double for float
 *    inputs and through int64 for integer inputs;
 *  - rand: element i (row-major) uses philox4x32(offset + i, seed) with the CPU's mapping
 *    from the four words to uniform/normal/bernoulli/int, all in double with every product
 *    and sum rounded separately (no fused multiply-add), so the numbers equal the CPU's;
 *  - every operand may be strided (up to 8 dims): the Iter (common.cuh) collapses
 *    contiguous tensors to one dim, which is the fast path; contiguous float32/bfloat16
 *    binary ops and casts between the two go eight elements a thread (vec_io.cuh); the
 *    one-element-a-thread kernel took 20 us for a bf16 residual add of 8192 x 512 (ncu on
 *    an H100, in the byte LM's step). */
#include "kernels.cuh"
#include "vec_io.cuh"
#include <string.h>

namespace {

const int THREADS = 256;

/* ---- conversions that match the CPU kernels --------------------------------------------- */
__host__ __device__ __forceinline__ int64_t d2i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

/* double -> storage of DT, as the CPU's st_K_d */
template <int DT> __device__ __forceinline__ void store_d(void *p, double v) {
    if constexpr (DT == EFLA_FLOAT32) *(float *)p = (float)v;
    else if constexpr (DT == EFLA_FLOAT64) *(double *)p = v;
    else if constexpr (DT == EFLA_BFLOAT16) *(bf16 *)p = __float2bfloat16((float)v);
    else if constexpr (DT == EFLA_INT64) *(int64_t *)p = d2i64(v);
    else if constexpr (DT == EFLA_UINT8) *(uint8_t *)p = (uint8_t)d2i64(v);
    else *(uint8_t *)p = v != 0;
}

template <int DT> using S_ = typename DT_<DT>::S;
template <int DT> using C_ = typename DT_<DT>::C;

/* ---- fill ---------------------------------------------------------------------------------- */
template <typename T> __global__ void fill_kernel(Iter<1> it, T v) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[1];
        iter_offsets<1>(it, i, off);
        ((T *)it.data[0])[off[0]] = v;
    }
}

/* The bytes of `value` stored as dtype (host side, as the CPU's st_K_d). */
uint64_t fill_bits(efla_dtype dt, double value) {
    uint64_t bits = 0;
    switch (dt) {
    case EFLA_FLOAT32: { float f = (float)value; memcpy(&bits, &f, 4); break; }
    case EFLA_FLOAT64: memcpy(&bits, &value, 8); break;
    case EFLA_BFLOAT16: { uint16_t h = efla_f32_to_bf16((float)value); memcpy(&bits, &h, 2); break; }
    case EFLA_INT64: { int64_t i = d2i64(value); memcpy(&bits, &i, 8); break; }
    case EFLA_UINT8: bits = (uint8_t)d2i64(value); break;
    case EFLA_BOOL: bits = value != 0; break;
    }
    return bits;
}

/* ---- copy ------------------------------------------------------------------------------------ */
template <typename T> __global__ void copy_kernel(Iter<2> it) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[2];
        iter_offsets<2>(it, i, off);
        ((T *)it.data[0])[off[0]] = ((const T *)it.data[1])[off[1]];
    }
}

template <int DI, int DO> __global__ void cast_kernel(Iter<2> it) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[2];
        iter_offsets<2>(it, i, off);
        const S_<DI> *src = (const S_<DI> *)it.data[1] + off[1];
        S_<DO> *dst = (S_<DO> *)it.data[0] + off[0];
        if constexpr (DT_<DI>::fp) store_d<DO>(dst, ld_d<DI>(src));
        else st_i<DO>(dst, ld_i<DI>(src));
    }
}

struct CastTo {
    template <int DO> static int run(int di, const Iter<2> &it) {
        unsigned g = cu_blocks(it.n, THREADS);
        switch (di) {
        case EFLA_FLOAT32: cast_kernel<EFLA_FLOAT32, DO><<<g, THREADS>>>(it); break;
        case EFLA_FLOAT64: cast_kernel<EFLA_FLOAT64, DO><<<g, THREADS>>>(it); break;
        case EFLA_BFLOAT16: cast_kernel<EFLA_BFLOAT16, DO><<<g, THREADS>>>(it); break;
        case EFLA_INT64: cast_kernel<EFLA_INT64, DO><<<g, THREADS>>>(it); break;
        case EFLA_UINT8: cast_kernel<EFLA_UINT8, DO><<<g, THREADS>>>(it); break;
        case EFLA_BOOL: cast_kernel<EFLA_BOOL, DO><<<g, THREADS>>>(it); break;
        default: return efla_fail("copy: invalid dtype %d", di);
        }
        CU_CHECK_LAUNCH("copy");
        return 0;
    }
};

/* ---- unary -------------------------------------------------------------------------------------- */
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ double f_exp(double x) { return exp(x); }
__device__ __forceinline__ float f_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double f_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }
__device__ __forceinline__ double f_log(double x) { return log(x); }
__device__ __forceinline__ float f_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double f_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float f_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double f_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float f_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double f_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float f_erf(float x) { return erff(x); }
__device__ __forceinline__ double f_erf(double x) { return erf(x); }
__device__ __forceinline__ float f_sin(float x) { return sinf(x); }
__device__ __forceinline__ double f_sin(double x) { return sin(x); }
__device__ __forceinline__ float f_cos(float x) { return cosf(x); }
__device__ __forceinline__ double f_cos(double x) { return cos(x); }
__device__ __forceinline__ float f_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double f_abs(double x) { return fabs(x); }
__device__ __forceinline__ float f_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double f_pow(double x, double y) { return pow(x, y); }

template <typename C> __device__ __forceinline__ C unary_float(int op, C x) {
    switch (op) {
    case EFLA_NEG: return -x;
    case EFLA_EXP: return f_exp(x);
    case EFLA_EXPM1: return f_expm1(x);
    case EFLA_LOG: return f_log(x);
    case EFLA_LOG1P: return f_log1p(x);
    case EFLA_SQRT: return f_sqrt(x);
    case EFLA_RSQRT: return (C)1 / f_sqrt(x);
    case EFLA_ABS: return f_abs(x);
    case EFLA_TANH: return f_tanh(x);
    case EFLA_SIGMOID: return (C)1 / ((C)1 + f_exp(-x));
    case EFLA_RELU: return x < 0 ? (C)0 : x;
    case EFLA_GELU: return (C)0.5 * x * ((C)1 + f_erf(x * (C)0.70710678118654752440));
    case EFLA_SILU: return x / ((C)1 + f_exp(-x));
    case EFLA_SIN: return f_sin(x);
    case EFLA_COS: return f_cos(x);
    case EFLA_SIGN: return x > 0 ? (C)1 : x < 0 ? (C)-1 : x;
    case EFLA_SQUARE: return x * x;
    case EFLA_RECIPROCAL: return (C)1 / x;
    }
    return x;
}

__device__ __forceinline__ int64_t unary_int(int op, int64_t x) {
    switch (op) {
    case EFLA_NEG: return (int64_t)(0 - (uint64_t)x);
    case EFLA_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case EFLA_SIGN: return (int64_t)((x > 0) - (x < 0));
    case EFLA_SQUARE: return (int64_t)((uint64_t)x * (uint64_t)x);
    case EFLA_RELU: return x < 0 ? 0 : x;
    }
    return x;
}

template <int DT> __global__ void unary_kernel(Iter<2> it, int op) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[2];
        iter_offsets<2>(it, i, off);
        C_<DT> x = ld<DT>((const S_<DT> *)it.data[1] + off[1]);
        C_<DT> y;
        if constexpr (DT_<DT>::fp) y = unary_float<C_<DT>>(op, x);
        else y = unary_int(op, x);
        st<DT>((S_<DT> *)it.data[0] + off[0], y);
    }
}

struct UnaryLaunch {
    template <int DT> static int run(const Iter<2> &it, int op) {
        unary_kernel<DT><<<cu_blocks(it.n, THREADS), THREADS>>>(it, op);
        CU_CHECK_LAUNCH("unary");
        return 0;
    }
};

/* ---- softplus: log(1 + e^(beta x)) / beta = (max(z, 0) + log1p(e^-|z|)) / beta, z = beta x ---- */
template <int DT> __global__ void softplus_kernel(Iter<2> it, double beta) {
    typedef C_<DT> C;
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[2];
        iter_offsets<2>(it, i, off);
        C z = (C)beta * ld<DT>((const S_<DT> *)it.data[1] + off[1]);
        st<DT>((S_<DT> *)it.data[0] + off[0], (max(z, (C)0) + log1p(exp(-fabs(z)))) / (C)beta);
    }
}

struct SoftplusLaunch {
    template <int DT> static int run(const Iter<2> &it, double beta) {
        softplus_kernel<DT><<<cu_blocks(it.n, THREADS), THREADS>>>(it, beta);
        CU_CHECK_LAUNCH("softplus");
        return 0;
    }
};

/* ---- binary ------------------------------------------------------------------------------------- */
template <typename C> __device__ __forceinline__ C binary_float(int op, C x, C y) {
    switch (op) {
    case EFLA_ADD: return x + y;
    case EFLA_SUB: return x - y;
    case EFLA_MUL: return x * y;
    case EFLA_DIV: return x / y;
    case EFLA_POW: return f_pow(x, y);
    case EFLA_MAXIMUM: return (x > y || x != x) ? x : y;
    case EFLA_MINIMUM: return (x < y || x != x) ? x : y;
    }
    return x;
}

__device__ __forceinline__ int64_t idiv(int64_t x, int64_t y) {
    if (y == 0) return 0;
    if (y == -1) return (int64_t)(0 - (uint64_t)x);
    return x / y;
}
__device__ __forceinline__ int64_t ipow(int64_t x, int64_t y) {
    if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x;
    while (y) { if (y & 1) r *= b; b *= b; y >>= 1; }
    return (int64_t)r;
}
__device__ __forceinline__ int64_t binary_int(int op, int64_t x, int64_t y) {
    switch (op) {
    case EFLA_ADD: return (int64_t)((uint64_t)x + (uint64_t)y);
    case EFLA_SUB: return (int64_t)((uint64_t)x - (uint64_t)y);
    case EFLA_MUL: return (int64_t)((uint64_t)x * (uint64_t)y);
    case EFLA_DIV: return idiv(x, y);
    case EFLA_POW: return ipow(x, y);
    case EFLA_MAXIMUM: return x > y ? x : y;
    case EFLA_MINIMUM: return x < y ? x : y;
    }
    return x;
}
template <typename C> __device__ __forceinline__ bool compare(int op, C x, C y) {
    switch (op) {
    case EFLA_EQ: return x == y;
    case EFLA_NE: return x != y;
    case EFLA_LT: return x < y;
    case EFLA_LE: return x <= y;
    case EFLA_GT: return x > y;
    default: return x >= y;
    }
}

template <int DT, bool CMP> __global__ void binary_kernel(Iter<3> it, int op) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[3];
        iter_offsets<3>(it, i, off);
        C_<DT> x = ld<DT>((const S_<DT> *)it.data[1] + off[1]);
        C_<DT> y = ld<DT>((const S_<DT> *)it.data[2] + off[2]);
        if constexpr (CMP) {
            ((uint8_t *)it.data[0])[off[0]] = compare(op, x, y);
        } else {
            C_<DT> z;
            if constexpr (DT_<DT>::fp) z = binary_float<C_<DT>>(op, x, y);
            else z = binary_int(op, x, y);
            st<DT>((S_<DT> *)it.data[0] + off[0], z);
        }
    }
}

/* contiguous float32/bfloat16 operands, n % 8 == 0, 16-byte aligned */
template <class T> __global__ void binary8_kernel(T *o, const T *a, const T *b, int64_t n8, int op) {
    CU_GRID_STRIDE(i, n8) {
        float x[8], y[8];
        load8(a + i * 8, x);
        load8(b + i * 8, y);
#pragma unroll
        for (int k = 0; k < 8; k++) x[k] = binary_float<float>(op, x[k], y[k]);
        store8(o + i * 8, x);
    }
}
template <class TI, class TO> __global__ void cast8_kernel(TO *o, const TI *a, int64_t n8) {
    CU_GRID_STRIDE(i, n8) {
        float x[8];
        load8(a + i * 8, x);
        store8(o + i * 8, x);
    }
}
/* Is the iterator one contiguous run of n % 8 == 0 float32/bfloat16 elements, aligned for load8? */
template <int N> bool vec8_ok(const Iter<N> &it, const efla_dtype *dts) {
    if (!fast_paths_enabled() || it.ndim != 1 || it.n % 8 != 0) return false;
    for (int k = 0; k < N; k++)
        if (it.strides[k][0] != 1 || !aligned_to(it.data[k], 16) ||
            (dts[k] != EFLA_FLOAT32 && dts[k] != EFLA_BFLOAT16))
            return false;
    return true;
}

struct BinaryLaunch {
    template <int DT> static int run(const Iter<3> &it, int op, bool cmp) {
        if (cmp) binary_kernel<DT, true><<<cu_blocks(it.n, THREADS), THREADS>>>(it, op);
        else binary_kernel<DT, false><<<cu_blocks(it.n, THREADS), THREADS>>>(it, op);
        CU_CHECK_LAUNCH("binary");
        return 0;
    }
};

/* ---- clamp ----------------------------------------------------------------------------------------- */
template <int DT> __global__ void clamp_kernel(Iter<2> it, C_<DT> lo, C_<DT> hi) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[2];
        iter_offsets<2>(it, i, off);
        C_<DT> x = ld<DT>((const S_<DT> *)it.data[1] + off[1]);
        C_<DT> a = x < lo ? lo : x;
        st<DT>((S_<DT> *)it.data[0] + off[0], a > hi ? hi : a);
    }
}

struct ClampLaunch {
    template <int DT> static int run(const Iter<2> &it, double lo, double hi) {
        C_<DT> l, h;
        if constexpr (DT_<DT>::fp) { l = (C_<DT>)lo; h = (C_<DT>)hi; }
        else {
            /* the integers inside [lo, hi] */
            l = isinf(lo) && lo < 0 ? INT64_MIN : d2i64(ceil(lo));
            h = isinf(hi) && hi > 0 ? INT64_MAX : d2i64(floor(hi));
        }
        clamp_kernel<DT><<<cu_blocks(it.n, THREADS), THREADS>>>(it, l, h);
        CU_CHECK_LAUNCH("clamp");
        return 0;
    }
};

/* ---- where ------------------------------------------------------------------------------------------ */
template <typename T> __global__ void where_kernel(Iter<4> it) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[4];
        iter_offsets<4>(it, i, off);
        bool c = ((const uint8_t *)it.data[1])[off[1]] != 0;
        ((T *)it.data[0])[off[0]] = c ? ((const T *)it.data[2])[off[2]] : ((const T *)it.data[3])[off[3]];
    }
}

/* ---- tri ---------------------------------------------------------------------------------------------- */
struct TriArgs {
    int ndim;
    int64_t shape[EFLA_MAX_DIMS], so[EFLA_MAX_DIMS], si[EFLA_MAX_DIMS];
    char *out;
    const char *in;
    int64_t n, k;
    int upper;
};

template <typename T> __global__ void tri_kernel(TriArgs a) {
    CU_GRID_STRIDE(e, a.n) {
        int64_t rem = e, oo = 0, oi = 0, i = 0, j = 0;
        for (int d = a.ndim - 1; d >= 0; d--) {
            int64_t q = rem / a.shape[d], c = rem - q * a.shape[d];
            rem = q;
            if (d == a.ndim - 1) j = c;
            if (d == a.ndim - 2) i = c;
            oo += c * a.so[d];
            oi += c * a.si[d];
        }
        bool keep = a.upper ? (j - i >= a.k) : (j - i <= a.k);
        ((T *)a.out)[oo] = keep ? ((const T *)a.in)[oi] : (T)0;
    }
}

/* ---- arange -------------------------------------------------------------------------------------------- */
template <int DT> __global__ void arange_kernel(Iter<1> it, double start, double step) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[1];
        iter_offsets<1>(it, i, off);
        store_d<DT>((S_<DT> *)it.data[0] + off[0], __dadd_rn(start, __dmul_rn((double)i, step)));
    }
}

struct ArangeLaunch {
    template <int DT> static int run(const Iter<1> &it, double start, double step) {
        arange_kernel<DT><<<cu_blocks(it.n, THREADS), THREADS>>>(it, start, step);
        CU_CHECK_LAUNCH("arange");
        return 0;
    }
};

/* ---- rand ------------------------------------------------------------------------------------------------- */
/* Philox4x32-10, identical to efla_philox4x32 in core/rng.c. */
__device__ __forceinline__ void philox(uint64_t ctr, uint64_t seed, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        uint32_t lo0 = 0xD2511F53u * c0, hi0 = __umulhi(0xD2511F53u, c0);
        uint32_t lo1 = 0xCD9E8D57u * c2, hi1 = __umulhi(0xCD9E8D57u, c2);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c1 = lo1; c3 = lo0; c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

__device__ __forceinline__ double u53(uint32_t hi, uint32_t lo) {
    return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}

struct RandArgs { int dist; int dtype; uint64_t seed, offset; double p0, p1; };

__device__ double rand_value(const RandArgs &c, const uint32_t r[4]) {
    switch (c.dist) {
    case EFLA_RAND_UNIFORM: {
        double u = c.dtype == EFLA_FLOAT32 ? (double)(r[0] >> 8) * 0x1p-24
                 : c.dtype == EFLA_BFLOAT16 ? (double)(r[0] >> 24) * 0x1p-8
                 : u53(r[0], r[1]);
        return __dadd_rn(c.p0, __dmul_rn(c.p1 - c.p0, u));
    }
    case EFLA_RAND_NORMAL: {
        double u1, u2;
        if (c.dtype == EFLA_FLOAT64) { u1 = u53(r[0], r[1]) + 0x1p-53; u2 = u53(r[2], r[3]); }
        else { u1 = ((double)r[0] + 1.0) * 0x1p-32; u2 = (double)r[1] * 0x1p-32; }
        double rad = sqrt(__dmul_rn(-2.0, log(u1)));
        double z = __dmul_rn(__dmul_rn(c.p1, rad), cos(__dmul_rn(6.283185307179586476925, u2)));
        return __dadd_rn(c.p0, z);
    }
    case EFLA_RAND_BERNOULLI:
        return u53(r[0], r[1]) < c.p0 ? 1.0 : 0.0;
    }
    return NAN;
}

template <int DT> __global__ void rand_kernel(Iter<1> it, RandArgs c) {
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[1];
        iter_offsets<1>(it, i, off);
        uint32_t r[4];
        philox(c.offset + (uint64_t)i, c.seed, r);
        S_<DT> *dst = (S_<DT> *)it.data[0] + off[0];
        if (c.dist == EFLA_RAND_INT) {
            int64_t low = (int64_t)c.p0;
            uint64_t range = (uint64_t)((int64_t)c.p1 - low);
            uint64_t x = ((uint64_t)r[0] << 32) | r[1];
            st_i<DT>(dst, (int64_t)((uint64_t)low + x % range));
        } else {
            store_d<DT>(dst, rand_value(c, r));
        }
    }
}

struct RandLaunch {
    template <int DT> static int run(const Iter<1> &it, const RandArgs &c) {
        rand_kernel<DT><<<cu_blocks(it.n, THREADS), THREADS>>>(it, c);
        CU_CHECK_LAUNCH("rand");
        return 0;
    }
};

/* ---- adamw ----------------------------------------------------------------------------------------------- */
struct AdamArgs { double lr, b1, b2, eps, wd, ibc1, ibc2; };

template <int DP, int DM, typename CT> __global__ void adamw_kernel(Iter<4> it, AdamArgs a) {
    const CT lr = (CT)a.lr, lrwd = (CT)(a.lr * a.wd), b1 = (CT)a.b1, b2 = (CT)a.b2, eps = (CT)a.eps,
             ibc1 = (CT)a.ibc1, ibc2 = (CT)a.ibc2;
    CU_GRID_STRIDE(i, it.n) {
        int64_t off[4];
        iter_offsets<4>(it, i, off);
        S_<DP> *pp = (S_<DP> *)it.data[0] + off[0];
        const S_<DP> *pg = (const S_<DP> *)it.data[1] + off[1];
        S_<DM> *pm = (S_<DM> *)it.data[2] + off[2];
        S_<DM> *pv = (S_<DM> *)it.data[3] + off[3];
        CT p = (CT)ld<DP>(pp), g = (CT)ld<DP>(pg), m = (CT)ld<DM>(pm), v = (CT)ld<DM>(pv);
        p -= lrwd * p;
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        p -= lr * (m * ibc1) / (f_sqrt(v * ibc2) + eps);
        st<DP>(pp, (C_<DP>)p);
        st<DM>(pm, (C_<DM>)m);
        st<DM>(pv, (C_<DM>)v);
    }
}

int check_shapes(const char *op, int n, const efla_tensor *const *ts) {
    for (int k = 0; k < n; k++) {
        if (ts[k]->device != ts[0]->device)
            return efla_fail("%s (cuda kernel): operand %d is on %s, the output on %s", op, k,
                             efla_device_name(ts[k]->device), efla_device_name(ts[0]->device));
        if (k && (ts[k]->ndim != ts[0]->ndim ||
                  memcmp(ts[k]->shape, ts[0]->shape, sizeof(int64_t) * (size_t)ts[0]->ndim)))
            return efla_fail("%s (cuda kernel): operand %d has shape %s, the output %s; the front end must "
                             "broadcast first", op, k, efla_tshape(ts[k]), efla_tshape(ts[0]));
    }
    return cu_set_device(ts[0]->device);
}

const char *const unary_names[EFLA_UNARY_COUNT] = {
    "neg", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "abs", "tanh", "sigmoid", "relu",
    "gelu", "silu", "sin", "cos", "sign", "square", "reciprocal" };
const char *const binary_names[EFLA_BINARY_COUNT] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge" };

} // namespace

int efla_cuda_fill(efla_tensor *out, double value) {
    TRY(check_shapes("fill", 1, (const efla_tensor *const *)&out));
    Iter<1> it = make_iter<1>((const efla_tensor *const *)&out);
    if (it.n == 0) return 0;
    uint64_t bits = fill_bits(out->dtype, value);
    unsigned g = cu_blocks(it.n, THREADS);
    switch (efla_dtype_size(out->dtype)) {
    case 1: fill_kernel<uint8_t><<<g, THREADS>>>(it, (uint8_t)bits); break;
    case 2: fill_kernel<uint16_t><<<g, THREADS>>>(it, (uint16_t)bits); break;
    case 4: fill_kernel<uint32_t><<<g, THREADS>>>(it, (uint32_t)bits); break;
    default: fill_kernel<uint64_t><<<g, THREADS>>>(it, bits); break;
    }
    CU_CHECK_LAUNCH("fill");
    return 0;
}

int efla_cuda_copy(efla_tensor *out, const efla_tensor *in) {
    const efla_tensor *ts[2] = { out, in };
    TRY(check_shapes("copy", 2, ts));
    if ((unsigned)out->dtype > EFLA_BOOL || (unsigned)in->dtype > EFLA_BOOL) return efla_fail("copy (cuda kernel): invalid dtype");
    Iter<2> it = make_iter<2>(ts);
    if (it.n == 0) return 0;
    efla_dtype dts[2] = { out->dtype, in->dtype };
    if (out->dtype != in->dtype && vec8_ok<2>(it, dts)) {
        int64_t n8 = it.n / 8;
        if (in->dtype == EFLA_FLOAT32)
            cast8_kernel<float, bf16><<<cu_blocks(n8, THREADS), THREADS>>>((bf16 *)it.data[0], (const float *)it.data[1], n8);
        else
            cast8_kernel<bf16, float><<<cu_blocks(n8, THREADS), THREADS>>>((float *)it.data[0], (const bf16 *)it.data[1], n8);
        CU_CHECK_LAUNCH("copy");
        return 0;
    }
    if (out->dtype != in->dtype) CU_DISPATCH_ALL(out->dtype, CastTo, (int)in->dtype, it);
    size_t es = efla_dtype_size(out->dtype);
    if (it.ndim == 0 || (it.ndim == 1 && it.strides[0][0] == 1 && it.strides[1][0] == 1)) {
        CU_CHECK(cudaMemcpyAsync(it.data[0], it.data[1], (size_t)it.n * es, cudaMemcpyDeviceToDevice, 0));
        return 0;
    }
    unsigned g = cu_blocks(it.n, THREADS);
    switch (es) {
    case 1: copy_kernel<uint8_t><<<g, THREADS>>>(it); break;
    case 2: copy_kernel<uint16_t><<<g, THREADS>>>(it); break;
    case 4: copy_kernel<uint32_t><<<g, THREADS>>>(it); break;
    default: copy_kernel<uint64_t><<<g, THREADS>>>(it); break;
    }
    CU_CHECK_LAUNCH("copy");
    return 0;
}

int efla_cuda_unary(efla_unary_op op, efla_tensor *out, const efla_tensor *in) {
    const efla_tensor *ts[2] = { out, in };
    TRY(check_shapes("unary", 2, ts));
    if ((unsigned)op >= EFLA_UNARY_COUNT) return efla_fail("unary (cuda kernel): unknown op %d", (int)op);
    if (out->dtype != in->dtype)
        return efla_fail("unary %s (cuda kernel): output %s, input %s; they must match", unary_names[op],
                         efla_dtype_name(out->dtype), efla_dtype_name(in->dtype));
    bool integral = op == EFLA_NEG || op == EFLA_ABS || op == EFLA_SIGN || op == EFLA_SQUARE || op == EFLA_RELU;
    if (!efla_dtype_is_floating(in->dtype) && !integral)
        return efla_fail("unary %s (cuda kernel): needs a floating dtype, not %s", unary_names[op],
                         efla_dtype_name(in->dtype));
    Iter<2> it = make_iter<2>(ts);
    if (it.n == 0) return 0;
    CU_DISPATCH_ALL(in->dtype, UnaryLaunch, it, (int)op);
}

int efla_cuda_softplus(efla_tensor *out, const efla_tensor *in, double beta) {
    const efla_tensor *ts[2] = { out, in };
    TRY(check_shapes("softplus", 2, ts));
    if (out->dtype != in->dtype)
        return efla_fail("softplus (cuda kernel): output %s, input %s; they must match", efla_dtype_name(out->dtype),
                         efla_dtype_name(in->dtype));
    Iter<2> it = make_iter<2>(ts);
    if (it.n == 0) return 0;
    CU_DISPATCH_FLOAT("softplus", in->dtype, SoftplusLaunch, it, beta);
}

int efla_cuda_binary(efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    const efla_tensor *ts[3] = { out, a, b };
    TRY(check_shapes("binary", 3, ts));
    if ((unsigned)op >= EFLA_BINARY_COUNT) return efla_fail("binary (cuda kernel): unknown op %d", (int)op);
    bool cmp = op >= EFLA_EQ && op <= EFLA_GE;
    efla_dtype want = cmp ? EFLA_BOOL : a->dtype;
    if (a->dtype != b->dtype || out->dtype != want)
        return efla_fail("binary %s (cuda kernel): dtypes %s %s -> %s; inputs must share a dtype and the "
                         "output be that dtype (bool for comparisons)", binary_names[op], efla_dtype_name(a->dtype),
                         efla_dtype_name(b->dtype), efla_dtype_name(out->dtype));
    Iter<3> it = make_iter<3>(ts);
    if (it.n == 0) return 0;
    efla_dtype dts[3] = { out->dtype, a->dtype, b->dtype };
    if (!cmp && vec8_ok<3>(it, dts)) {
        int64_t n8 = it.n / 8;
        if (a->dtype == EFLA_FLOAT32)
            binary8_kernel<float><<<cu_blocks(n8, THREADS), THREADS>>>((float *)it.data[0], (const float *)it.data[1],
                                                                        (const float *)it.data[2], n8, (int)op);
        else
            binary8_kernel<bf16><<<cu_blocks(n8, THREADS), THREADS>>>((bf16 *)it.data[0], (const bf16 *)it.data[1],
                                                                       (const bf16 *)it.data[2], n8, (int)op);
        CU_CHECK_LAUNCH("binary");
        return 0;
    }
    CU_DISPATCH_ALL(a->dtype, BinaryLaunch, it, (int)op, cmp);
}

int efla_cuda_clamp(efla_tensor *out, const efla_tensor *in, double lo, double hi) {
    const efla_tensor *ts[2] = { out, in };
    TRY(check_shapes("clamp", 2, ts));
    if (out->dtype != in->dtype)
        return efla_fail("clamp (cuda kernel): output %s, input %s; they must match", efla_dtype_name(out->dtype),
                         efla_dtype_name(in->dtype));
    Iter<2> it = make_iter<2>(ts);
    if (it.n == 0) return 0;
    CU_DISPATCH_ALL(in->dtype, ClampLaunch, it, lo, hi);
}

int efla_cuda_where(efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b) {
    const efla_tensor *ts[4] = { out, cond, a, b };
    TRY(check_shapes("where", 4, ts));
    if (cond->dtype != EFLA_BOOL && cond->dtype != EFLA_UINT8)
        return efla_fail("where (cuda kernel): condition must be bool or uint8, not %s", efla_dtype_name(cond->dtype));
    if (a->dtype != out->dtype || b->dtype != out->dtype)
        return efla_fail("where (cuda kernel): dtypes %s, %s -> %s must match", efla_dtype_name(a->dtype),
                         efla_dtype_name(b->dtype), efla_dtype_name(out->dtype));
    Iter<4> it = make_iter<4>(ts);
    if (it.n == 0) return 0;
    unsigned g = cu_blocks(it.n, THREADS);
    switch (efla_dtype_size(out->dtype)) {
    case 1: where_kernel<uint8_t><<<g, THREADS>>>(it); break;
    case 2: where_kernel<uint16_t><<<g, THREADS>>>(it); break;
    case 4: where_kernel<uint32_t><<<g, THREADS>>>(it); break;
    default: where_kernel<uint64_t><<<g, THREADS>>>(it); break;
    }
    CU_CHECK_LAUNCH("where");
    return 0;
}

int efla_cuda_tri(efla_tensor *out, const efla_tensor *in, int64_t k, int upper) {
    const efla_tensor *ts[2] = { out, in };
    TRY(check_shapes("tri", 2, ts));
    if (out->dtype != in->dtype || in->ndim < 2)
        return efla_fail("tri (cuda kernel): needs same dtypes and >= 2 dims (got %s)", efla_tshape(in));
    TriArgs a;
    a.ndim = in->ndim;
    for (int d = 0; d < in->ndim; d++) { a.shape[d] = in->shape[d]; a.so[d] = out->strides[d]; a.si[d] = in->strides[d]; }
    a.out = cu_ptr(out);
    a.in = cu_ptr(in);
    a.n = efla_tensor_numel(in);
    a.k = k;
    a.upper = upper;
    if (a.n == 0) return 0;
    unsigned g = cu_blocks(a.n, THREADS);
    switch (efla_dtype_size(in->dtype)) {
    case 1: tri_kernel<uint8_t><<<g, THREADS>>>(a); break;
    case 2: tri_kernel<uint16_t><<<g, THREADS>>>(a); break;
    case 4: tri_kernel<uint32_t><<<g, THREADS>>>(a); break;
    default: tri_kernel<uint64_t><<<g, THREADS>>>(a); break;
    }
    CU_CHECK_LAUNCH("tri");
    return 0;
}

int efla_cuda_arange(efla_tensor *out, double start, double step) {
    TRY(check_shapes("arange", 1, (const efla_tensor *const *)&out));
    Iter<1> it = make_iter<1>((const efla_tensor *const *)&out);
    if (it.n == 0) return 0;
    CU_DISPATCH_ALL(out->dtype, ArangeLaunch, it, start, step);
}

int efla_cuda_rand(efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1) {
    TRY(check_shapes("rand", 1, (const efla_tensor *const *)&out));
    if (dist < EFLA_RAND_UNIFORM || dist > EFLA_RAND_INT) return efla_fail("rand (cuda kernel): unknown distribution %d", dist);
    if (dist == EFLA_RAND_INT && !(p1 > p0)) return efla_fail("rand (cuda kernel): empty integer range [%g, %g)", p0, p1);
    Iter<1> it = make_iter<1>((const efla_tensor *const *)&out);
    if (it.n == 0) return 0;
    RandArgs c = { dist, (int)out->dtype, seed, offset, p0, p1 };
    CU_DISPATCH_ALL(out->dtype, RandLaunch, it, c);
}

int efla_cuda_adamw(efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v, double lr, double beta1,
                    double beta2, double eps, double wd, int64_t step) {
    const efla_tensor *ts[4] = { p, g, m, v };
    TRY(check_shapes("adamw", 4, ts));
    Iter<4> it = make_iter<4>(ts);
    AdamArgs a = { lr, beta1, beta2, eps, wd, 1.0 / (1.0 - pow(beta1, (double)step)),
                   1.0 / (1.0 - pow(beta2, (double)step)) };
    unsigned gr = cu_blocks(it.n, THREADS);
    bool ok = g->dtype == p->dtype && m->dtype == v->dtype;
    if (it.n == 0) ok = false;
    if (ok && p->dtype == EFLA_FLOAT32 && m->dtype == EFLA_FLOAT32) adamw_kernel<EFLA_FLOAT32, EFLA_FLOAT32, float><<<gr, THREADS>>>(it, a);
    else if (ok && p->dtype == EFLA_FLOAT64 && m->dtype == EFLA_FLOAT64) adamw_kernel<EFLA_FLOAT64, EFLA_FLOAT64, double><<<gr, THREADS>>>(it, a);
    else if (ok && p->dtype == EFLA_FLOAT64 && m->dtype == EFLA_FLOAT32) adamw_kernel<EFLA_FLOAT64, EFLA_FLOAT32, double><<<gr, THREADS>>>(it, a);
    else if (ok && p->dtype == EFLA_BFLOAT16 && m->dtype == EFLA_BFLOAT16) adamw_kernel<EFLA_BFLOAT16, EFLA_BFLOAT16, float><<<gr, THREADS>>>(it, a);
    else if (ok && p->dtype == EFLA_BFLOAT16 && m->dtype == EFLA_FLOAT32) adamw_kernel<EFLA_BFLOAT16, EFLA_FLOAT32, float><<<gr, THREADS>>>(it, a);
    else if (it.n == 0) return 0;
    else
        return efla_fail("adamw (cuda kernel): unsupported dtypes p %s, grad %s, m %s, v %s", efla_dtype_name(p->dtype),
                         efla_dtype_name(g->dtype), efla_dtype_name(m->dtype), efla_dtype_name(v->dtype));
    CU_CHECK_LAUNCH("adamw");
    return 0;
}
