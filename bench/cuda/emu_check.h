// emu_check.h: what the host emulators (bench/cuda/*_emu.cpp) share to compare a kernel's output
// with a float64 reference: conversions between double and the data types the kernels store
// (double, float, bfloat16 with the device's rounding), the type's name, and the norm-relative
// error ||got - want|| / ||want||. Include after emu_cuda.h.
#ifndef EFLA_EMU_CHECK_H
#define EFLA_EMU_CHECK_H
#include <cmath>
#include <vector>

template <class T> static T from_double(double v);
template <> inline double from_double<double>(double v) { return v; }
template <> inline float from_double<float>(double v) { return (float)v; }
template <> inline bf16 from_double<bf16>(double v) { return __float2bfloat16((float)v); }
static inline double to_double(double v) { return v; }
static inline double to_double(float v) { return v; }
static inline double to_double(bf16 v) { return __bfloat162float(v); }

template <class T> static const char *tname();
template <> inline const char *tname<double>() { return "float64"; }
template <> inline const char *tname<float>() { return "float32"; }
template <> inline const char *tname<bf16>() { return "bfloat16"; }

// ||got - want|| / ||want|| over every element (want all zero: the absolute norm of the difference)
template <class T> static double rel_err(const std::vector<T> &got, const std::vector<double> &want) {
    double e = 0, n = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double d = to_double(got[i]) - want[i];
        e += d * d;
        n += want[i] * want[i];
    }
    return std::sqrt(e / (n > 0 ? n : 1));
}
#endif
