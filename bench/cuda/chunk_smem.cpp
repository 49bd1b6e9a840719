// chunk_smem.cpp: the shared memory (KB, one block) that each tensor-core chunk kernel of
// version 2 asks for, from the kernels' own size functions, by element type, chunk size C and
// head size d: which configurations fit a multiprocessor (227 KB on an H100) and at how many
// blocks; the WMMA kernels, then the register-style ones (64 state columns a block, as the
// library launches them at d >= 64). No GPU needed:
//   g++ -std=c++17 -O1 -fno-strict-aliasing -pthread -Wno-unknown-pragmas -Icuda -Ibench/cuda \
//       bench/cuda/chunk_smem.cpp -o /tmp/chunk_smem && /tmp/chunk_smem
#include <cstdio>

#include "emu_wmma.h"
#include "delta_rule_chunk_kernels.cuh"

template <class E, int C, int D> static void row(const char *name) {
    constexpr int S = D >= 32 ? 32 : D;   // the scans' 32-column tile
    const size_t kb = 1024;
    printf("| %s | %d, %d | %zu | %zu / %zu | %zu | %zu / %zu | %zu |\n", name, C, D, prep_smem<E, C, D, D>() / kb,
           state_scan_smem<E, C, D, S, false>() / kb, state_scan_smem<E, C, D, S, true>() / kb,
           out_smem<E, C, D, (D >= 64 ? 64 : D)>() / kb, bwd_scan_smem<E, C, D, S, false>() / kb,
           bwd_scan_smem<E, C, D, S, true>() / kb, bwd_chunk_smem<E, C, D, D>() / kb);
}

template <int C, int D> static void row_mma_bf16() {
    constexpr int N = D >= 64 ? 64 : D;
    const size_t kb = 1024;
    printf("| bfloat16 | %d, %d | %zu | %zu / %zu | %zu | %zu / %zu | %zu |\n", C, D, prep_mma_smem<C, D, D>() / kb,
           state_scan_mma_smem<C, D, N>() / kb, state_scan_mma_smem_ks2<C, D, N>() / kb, out_mma_smem<C, D, D>() / kb,
           bwd_scan_mma_smem<C, D, N>() / kb, bwd_scan_mma_smem_ks2<C, D, N>() / kb, bwd_chunk_mma_smem<C, D, D>() / kb);
}
template <int C, int D> static void row_mma_f32() {
    constexpr int N = D >= 64 ? 64 : D;
    const size_t kb = 1024;
    printf("| float32 | %d, %d | - | %zu / %zu | %zu | %zu / %zu | %zu |\n", C, D, state_scan_mma_f32_smem<C, D, N>() / kb,
           state_scan_mma_f32_smem<C, D, N, 2>() / kb, out_mma_f32_smem<C, D, N>() / kb, bwd_scan_mma_f32_smem<C, D, N>() / kb,
           bwd_scan_mma_f32_smem<C, D, N, 2>() / kb, bwd_chunk_mma_f32_smem<C, D, D>() / kb);
}

int main() {
    printf("| inputs | C, d | prep | state scan (32 cols, no prefetch / prefetch) | out | bwd scan (32 cols, no prefetch / "
           "prefetch) | bwd chunk |\n|---|---|---|---|---|---|---|\n");
    row<bf16, 64, 128>("bfloat16");
    row<bf16, 64, 64>("bfloat16");
    row<float, 64, 128>("float32");
    row<float, 32, 128>("float32");
    row<float, 64, 64>("float32");
    row<float, 32, 64>("float32");
    printf("\n| register-style | C, d | prep | state scan (KS 1 / 2) | out | bwd scan (KS 1 / 2) | bwd chunk |\n"
           "|---|---|---|---|---|---|---|\n");
    row_mma_bf16<64, 128>();
    row_mma_bf16<64, 64>();
    row_mma_f32<32, 128>();
    row_mma_f32<32, 64>();
    row_mma_f32<16, 128>();
    return 0;
}
