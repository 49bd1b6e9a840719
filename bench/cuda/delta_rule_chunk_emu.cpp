// delta_rule_chunk_emu.cpp: the tensor-core chunk kernels of the delta rule (cuda/
// delta_rule_chunk_kernels.cuh, the library's version) on the host, no GPU and no nvcc: WMMA and
// the CUDA built-ins come from emu_wmma.h / emu_cuda.h (OS threads as CUDA threads, lane 0 of a
// warp doing its matrix products). Each case runs the forward (prep, the state-only scan, the
// outputs) and the backward (prep, the backward scan, the per-chunk gradients) as
// cuda/delta_rule_chunk.cu launches them, and checks o, dq, dk, dv, dalpha (and s_final, ds0)
// against the float64 recurrence of delta_rule_ref.h with the workbench's tolerance (1e-2
// norm-relative; bfloat16 inputs). Cases: chunk sizes 16, 32 and 64, head sizes 32, 64 and 128
// (the LMs'), dk != dv (64 and 128 both ways), T not a multiple of C, packed sequences with an initial state and a final-state
// gradient, states saved or recomputed, both state-scan tiles, with and without the prefetch
// (of both scans), and the chain through alpha taken in bwd_chunk. Asynchronous copies land only at the wait that covers them (NaN until then),
// so a missing or misplaced cp_async_wait fails here: removing any one of bwd_chunk's waits
// fails every case.
//   g++ -std=c++17 -O2 -fno-strict-aliasing -pthread -Wno-unknown-pragmas -Icuda -Ibench/cuda
//       bench/cuda/delta_rule_chunk_emu.cpp -o /tmp/chunk_emu && /tmp/chunk_emu
//   (ctest runs it as cuda_delta_rule_chunk_emu; a new kernel version can be checked here before
//   any GPU time is spent on it)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_wmma.h"
#include "delta_rule_chunk_kernels.cuh"
#include "delta_rule_ref.h"

static int failures;
static double last_errs[7];
static double prep_mma_worst = -1;   // prep_mma_kernel's largest difference from prep_kernel (-1: never run)   // run_case's last errors: o, dq, dk, dv, dalpha (or dbeta), s_final, ds0

template <class T> static std::vector<double> as_double(const std::vector<T> &v);
template <> std::vector<double> as_double(const std::vector<bf16> &v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = __bfloat162float(v[i]);
    return r;
}
template <> std::vector<double> as_double(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }
template <class E> static std::vector<E> to_elems(const std::vector<float> &x) {
    std::vector<E> r(x.size());
    for (size_t i = 0; i < x.size(); i++) r[i] = from_f<E>(x[i]);
    return r;
}
template <class T> static std::vector<T> poison(size_t n) {   // every element must be written
    std::vector<T> v(n);
    memset(v.data(), 0xff, n * sizeof(T));
    return v;
}

// chain: alpha from beta and lambda = |k|^2 (exact EFLA), made by the forward's prep (checked
// against the host's: alpha bit for bit, lambda to 1e-14), and bwd_chunk takes the chain
// through alpha (dbeta and dk's 2 k dlambda term, checked against the reference's dalpha
// carried through core/alpha_formulas.h in double) instead of writing dalpha
// key_norm: |k| about key_norm (1: unit keys; larger: saturating steps, beta |k|^2 >> 1;
// 0.01: tiny keys, where the gradients' error must stay at the outputs' level)
// solves: the forward's prep keeps T and X (checked bit for bit against what the backward's prep
// solves again), and the backward's prep reads T there instead of solving
// ks: 2 runs the register scans (forward, and backward where the states are saved; bf16 and
// float32) with their products' k split over two warps a 16-column slice (KS = 2)
// mma: the register-style kernels (prep_mma_kernel, checked output for output against
// prep_kernel; state_scan_mma_kernel, out_mma_kernel, bwd_chunk_mma_kernel; bwd_scan_mma_kernel
// where the states are saved), bf16; float32: state_scan_mma_f32_kernel, out_mma_f32_kernel,
// bwd_scan_mma_f32_kernel where the states are saved, and bwd_chunk_mma_f32_kernel up to chunk 32
struct Case { int B, T, H; bool packed, recompute, prefetch; int scan_bv; bool chain; double key_norm = 1; bool solves = false;
              bool mma = false; int ks = 1; };

// E: bf16 (the fast path, checked within 1e-2) or float (the float32 path, within 1e-5)
template <class E, int C, int DK, int DV = DK> static void run_case(const Case &cs) {
    const bool f32 = std::is_same<E, float>::value;
    const double tol = f32 ? 1e-5 : 1e-2;
    auto in = [&](double x) { return f32 ? (float)x : bf16_round(x); };   // inputs as E holds them
    const int B = cs.B, T = cs.T, H = cs.H;
    const double scale = 1 / sqrt((double)DK);
    const size_t nb = (size_t)B * T * H, n = nb * DK, nv = nb * DV;   // n: q, k (and dq, dk); nv: v, dO, o, dv
    uint64_t seed = 977 + 31 * C + DK + (DV - DK) + T;
    std::vector<float> q(n), k(n), v(nv), al(nb), dO(nv);
    for (size_t i = 0; i < std::max(n, nv); i++) {   // drawn in this order: dk = dv keeps its inputs
        if (i < n) { q[i] = in(nrand(&seed)); k[i] = in(nrand(&seed) * scale * cs.key_norm); }
        if (i < nv) { v[i] = in(nrand(&seed)); dO[i] = in(nrand(&seed)); }
    }
    for (size_t i = 0; i < nb; i++) al[i] = in(urand(&seed));
    std::vector<double> lam(nb), dbeta_of(nb), dlam_of(nb);   // chain: per row, lambda and alpha's derivatives
    std::vector<float> beta(nb);
    if (cs.chain)
        for (size_t i = 0; i < nb; i++) {   // alpha = beta phi(beta lambda), as the forward's alpha kernel makes it
            beta[i] = in(urand(&seed));
            double l = 0, a;
            for (int d = 0; d < DK; d++) l += (double)k[i * DK + d] * k[i * DK + d];
            lam[i] = l;
            efla_alpha_eval_of(beta[i], l, EFLA_ORDER_EXACT_OF, 0, &a, &dbeta_of[i], &dlam_of[i]);
            al[i] = to_f(from_f<E>((float)a));   // rounded as the kernels round it: double -> float -> E
        }
    const Seqs sq = cs.packed ? split_rows(B, T) : whole_rows(B, T);
    const int64_t N = (int64_t)sq.len.size();
    const size_t dd = (size_t)DK * DV, ns = (size_t)N * H * dd;
    std::vector<float> s0, dsf;
    if (cs.packed) {   // the packed case also carries an initial state and a final-state gradient
        s0.resize(ns); dsf.resize(ns);
        for (size_t i = 0; i < ns; i++) { s0[i] = (float)(0.5 * nrand(&seed)); dsf[i] = (float)(0.5 * nrand(&seed)); }
    }
    Ref ref = reference(B, T, H, DK, DV, sq, q, k, v, al, dO, s0, dsf, scale);
    std::vector<double> ref_dbeta(nb);
    if (cs.chain)   // dbeta = dalpha dalpha/dbeta, dk += 2 k dalpha dalpha/dlambda
        for (size_t i = 0; i < nb; i++) {
            ref_dbeta[i] = ref.da[i] * dbeta_of[i];
            for (int d = 0; d < DK; d++) ref.dk[i * DK + d] += 2 * ref.da[i] * dlam_of[i] * k[i * DK + d];
        }

    // the sequence table as the library uploads it: (row of token 0, length, first chunk)
    std::vector<int64_t> tab(3 * N);
    int64_t nch = 0;
    for (int64_t i = 0; i < N; i++) {
        tab[3 * i] = (sq.batch[i] * T + sq.start[i]) * H; tab[3 * i + 1] = sq.len[i]; tab[3 * i + 2] = nch;
        nch += (sq.len[i] + C - 1) / C;
    }
    std::vector<E> qb = to_elems<E>(q), kb = to_elems<E>(k), vb = to_elems<E>(v), ab = to_elems<E>(al), dob = to_elems<E>(dO);
    const size_t tile = (size_t)nch * H * C, states = (size_t)nch * H * dd;
    std::vector<E> w(tile * DK), u(tile * DV), vp(tile * DV), o = poison<E>(nv);
    std::vector<E> cstates(states);   // the chunk states, in E as the library keeps them
    std::vector<float> sf = poison<float>(ns);

    ArgsT<E> p;
    memset(&p, 0, sizeof p);
    p.H = H; p.dk = DK; p.dv = DV; p.nseq = N; p.nch = nch; p.seq = tab.data(); p.scale = (float)scale;
    p.q = qb.data(); p.k = kb.data(); p.v = vb.data(); p.alpha = ab.data(); p.s0 = s0.empty() ? nullptr : s0.data();
    p.w = w.data(); p.u = u.data();

    // forward: W, U (chain: and alpha, lambda); the states and V' (the state-only scan); the outputs
    const dim3 block(THREADS);
    // prep: in the mma cases the register-style kernel, whose W, U, T, X and tril(Q K^T) must
    // match prep_kernel's run on the same arguments (the same roundings; float sums in another
    // order may flip a last bfloat16 bit: within 1e-3 norm-relative)
    auto prep = [&](ArgsT<E> a, const char *what) {
        if constexpr (std::is_same<E, bf16>::value && DK <= 128 && DV <= 128) {
            if (cs.mma) {
                launch(dim3((unsigned)nch, H), block, [&] { prep_mma_kernel<C, DK, DV>(a); });
                ArgsT<E> b = a;   // prep_kernel with outputs of its own, alpha read where the first made it
                std::vector<E> w2 = poison<E>(tile * DK), u2 = poison<E>(tile * DV), tx2 = poison<E>((size_t)nch * H * 2 * C * C),
                               pq2 = poison<E>((size_t)nch * H * C * C);
                b.w = w2.data(); b.u = a.u ? u2.data() : nullptr; b.pq = a.pq ? pq2.data() : nullptr;
                b.tx = a.tx && !a.solved ? tx2.data() : a.tx;
                if (!a.alpha && a.alpha_out) { b.alpha = a.alpha_out; b.alpha_out = nullptr; b.lambda_out = nullptr; }
                launch(dim3((unsigned)nch, H), block, [&] { prep_kernel<E, C, DK, DV>(b); });
                auto differ = [&](const char *name, const E *x, const std::vector<E> &y) {
                    const std::vector<E> xs(x, x + y.size());
                    const double d = rel_err_host(as_double(y), as_double(xs));
                    prep_mma_worst = std::max(prep_mma_worst, d);
                    if (!(d < 1e-3)) { printf("prep_mma (%s): %s differs from prep_kernel's by %.1e  FAIL\n", what, name, d); failures++; }
                };
                differ("W", a.w, w2);
                if (a.u) differ("U", a.u, u2);
                if (a.pq && !a.u) differ("tril(Q K^T)", a.pq, pq2);
                if (a.tx && !a.solved) differ("T and X", a.tx, tx2);
                return;
            }
        }
        launch(dim3((unsigned)nch, H), block, [&] { prep_kernel<E, C, DK, DV>(a); });
    };
    std::vector<E> alpha_made = poison<E>(nb), betab = to_elems<E>(beta);
    std::vector<double> lambda_made = poison<double>(nb);
    std::vector<E> solves = poison<E>((size_t)nch * H * 2 * C * C);
    if (cs.solves) p.tx = solves.data();   // the forward's prep keeps its solves
    if (cs.chain) {
        ArgsT<E> m = p;
        m.alpha = nullptr; m.beta = betab.data(); m.alpha_out = alpha_made.data(); m.lambda_out = lambda_made.data();
        m.order = EFLA_ORDER_EXACT_OF; m.ref = 0;
        prep(m, "forward, alpha made");
        int bad_alpha = 0, bad_lambda = 0;
        for (size_t i = 0; i < nb; i++) {
            bad_alpha += memcmp(&alpha_made[i], &ab[i], sizeof(E)) != 0;
            bad_lambda += !(fabs(lambda_made[i] - lam[i]) <= 1e-14 * lam[i]);
        }
        if (bad_alpha || bad_lambda) {
            printf("prep's alpha: %d of %zu rows differ from the host's, lambda: %d\n", bad_alpha, nb, bad_lambda);
            failures++;
        }
    } else {
        prep(p, "forward");
    }
    auto scan = [&](ArgsT<E> a) {
        if (cs.mma) {
            constexpr int BV = DV >= 64 ? 64 : DV;
            const dim3 grid((unsigned)(N * H), DV / BV);
            if constexpr (std::is_same<E, bf16>::value) {
                if (cs.ks == 2) launch(grid, dim3(scan_mma_threads<BV, 2>()), [&] { state_scan_mma_kernel<C, DK, BV, 2>(a); });
                else launch(grid, dim3(scan_mma_threads<BV>()), [&] { state_scan_mma_kernel<C, DK, BV>(a); });
            } else if (cs.ks == 2)   // float32's with each product's k split over two warps a slice
                launch(grid, dim3(scan_mma_threads<BV, 2>()), [&] { state_scan_mma_f32_kernel<C, DK, BV, 2>(a); });
            else
                launch(grid, dim3(scan_mma_threads<BV>()), [&] { state_scan_mma_f32_kernel<C, DK, BV>(a); });
            return;
        }
        const dim3 grid((unsigned)(N * H), (unsigned)(DV / (cs.scan_bv < DV ? cs.scan_bv : DV)));
        if (cs.scan_bv >= DV || cs.scan_bv == 64) {
            constexpr int BV = DV >= 64 ? 64 : DV;
            if (cs.prefetch) launch(grid, block, [&] { state_scan_kernel<E, C, DK, BV, true>(a); });
            else launch(grid, block, [&] { state_scan_kernel<E, C, DK, BV, false>(a); });
        } else {
            constexpr int BV = DV >= 32 ? 32 : DV;
            if (cs.prefetch) launch(grid, block, [&] { state_scan_kernel<E, C, DK, BV, true>(a); });
            else launch(grid, block, [&] { state_scan_kernel<E, C, DK, BV, false>(a); });
        }
    };
    p.tx = nullptr;
    ArgsT<E> f = p;
    f.o = o.data(); f.vp = vp.data(); f.cs = cstates.data(); f.sf = cs.packed ? sf.data() : nullptr;
    scan(f);
    constexpr int BVO = DV >= 64 ? 64 : DV;
    bool mma_out = false;
    if constexpr (std::is_same<E, bf16>::value) {
        if (cs.mma) {   // the outputs in the register style (a warp per 16 rows)
            launch(dim3((unsigned)nch, H), dim3(out_mma_threads<C>()), [&] { out_mma_kernel<C, DK, DV>(f); });
            mma_out = true;
        }
    }
    if constexpr (std::is_same<E, float>::value) {
        if (cs.mma) {   // float32's, 3xTF32 (32 columns a block; 64 where the case's scan tile is 64)
            constexpr int BVN = DV % 32 == 0 ? 32 : 16, BVW = DV % 64 == 0 ? 64 : BVN;
            if (cs.scan_bv == 64) launch(dim3((unsigned)nch, H, DV / BVW), dim3(out_mma_threads<C>()), [&] { out_mma_f32_kernel<C, DK, BVW>(f); });
            else launch(dim3((unsigned)nch, H, DV / BVN), dim3(out_mma_threads<C>()), [&] { out_mma_f32_kernel<C, DK, BVN>(f); });
            mma_out = true;
        }
    }
    if (!mma_out) launch(dim3((unsigned)nch, H, DV / BVO), block, [&] { out_kernel<E, C, DK, BVO>(f); });

    // backward: W, U again; the states (saved, or recomputed by the state-only scan); dV' and
    // the state gradients; the per-chunk gradients
    std::vector<E> dvp(tile * DV), tx = poison<E>((size_t)nch * H * 2 * C * C), dcs(states), dq = poison<E>(n), dk = poison<E>(n),
                   dv = poison<E>(nv), da = poison<E>(nb), dbeta = poison<E>(nb);
    std::vector<float> ds0 = poison<float>(ns);
    std::vector<E> recomputed(states);
    ArgsT<E> g = p;
    g.d_o = dob.data(); g.dsf = dsf.empty() ? nullptr : dsf.data();
    g.dq = dq.data(); g.dk_out = dk.data(); g.dv_out = dv.data(); g.dalpha = da.data(); g.ds0 = cs.packed ? ds0.data() : nullptr;
    g.dvp = dvp.data(); g.dcs = dcs.data(); g.tx = tx.data();
    if (cs.chain) {
        g.beta = betab.data(); g.lambda = lam.data(); g.dbeta = dbeta.data(); g.order = EFLA_ORDER_EXACT_OF; g.ref = 0;
        g.dalpha = nullptr;   // not written when the chain is taken
    }
    memset(w.data(), 0xff, w.size() * sizeof(E));   // poisoned in place: p.w and p.u point here
    memset(u.data(), 0xff, u.size() * sizeof(E));
    g.u = cs.recompute ? u.data() : nullptr;   // as run_bwd: U only for the state recompute
    std::vector<E> pq = poison<E>((size_t)nch * H * C * C);
    g.pq = cs.recompute ? nullptr : pq.data();   // and tril(Q K^T) from prep where it makes no U
    prep(g, "backward");
    if (cs.solves) {   // the forward's solves = the backward's, bit for bit; then the backward's prep reads them
        if (memcmp(solves.data(), tx.data(), tx.size() * sizeof(E)) != 0) {
            printf("the forward's kept solves differ from the backward's prep's\n");
            failures++;
        }
        memset(w.data(), 0xff, w.size() * sizeof(E));
        if (g.pq) memset(pq.data(), 0xff, pq.size() * sizeof(E));
        g.tx = solves.data();
        g.solved = 1;
        prep(g, "backward, T read");
    }
    g.states = cstates.data();
    if (cs.recompute) {
        ArgsT<E> r = g;
        r.o = nullptr; r.vp = nullptr; r.sf = nullptr; r.cs = recomputed.data();
        scan(r);
        g.states = recomputed.data();
    }
    // the backward scan's tile: 64 columns where the case asks for them (scan_bv 64), else 32
    constexpr int BVB = DV >= 32 ? 32 : DV, BVW = DV >= 64 ? 64 : BVB;
    bool mma_bwd = false;
    if constexpr (std::is_same<E, bf16>::value) {
        if (cs.mma && g.pq) {   // the backward scan with dS in registers (64 columns a block; 128 where the case asks)
            constexpr int BVM = DV >= 64 ? 64 : DV, BVW = DV >= 128 ? 128 : BVM;
            if (cs.ks == 2)
                launch(dim3((unsigned)(N * H), DV / BVM), dim3(scan_mma_threads<BVM, 2>()), [&] { bwd_scan_mma_kernel<C, DK, BVM, 2>(g); });
            else if (cs.scan_bv == 128)
                launch(dim3((unsigned)(N * H), DV / BVW), dim3(scan_mma_threads<BVW>()), [&] { bwd_scan_mma_kernel<C, DK, BVW>(g); });
            else
                launch(dim3((unsigned)(N * H), DV / BVM), dim3(scan_mma_threads<BVM>()), [&] { bwd_scan_mma_kernel<C, DK, BVM>(g); });
            mma_bwd = true;
        }
    } else {
        if (cs.mma && g.pq) {   // float32's, 3xTF32 (64 columns a block; 32 where the case asks)
            constexpr int BVM = DV >= 64 ? 64 : DV, BVN = DV >= 32 ? 32 : DV;
            if (cs.ks == 2)   // dS's rows split over two warps a slice
                launch(dim3((unsigned)(N * H), DV / BVM), dim3(scan_mma_threads<BVM, 2>()), [&] { bwd_scan_mma_f32_kernel<C, DK, BVM, 2>(g); });
            else if (cs.scan_bv == 32)
                launch(dim3((unsigned)(N * H), DV / BVN), dim3(scan_mma_threads<BVN>()), [&] { bwd_scan_mma_f32_kernel<C, DK, BVN>(g); });
            else
                launch(dim3((unsigned)(N * H), DV / BVM), dim3(scan_mma_threads<BVM>()), [&] { bwd_scan_mma_f32_kernel<C, DK, BVM>(g); });
            mma_bwd = true;
        }
    }
    if (mma_bwd) {
    } else if (cs.scan_bv == 64 && DV >= 64) {
        if (cs.prefetch) launch(dim3((unsigned)(N * H), DV / BVW), block, [&] { bwd_scan_kernel<E, C, DK, BVW, true>(g); });
        else launch(dim3((unsigned)(N * H), DV / BVW), block, [&] { bwd_scan_kernel<E, C, DK, BVW, false>(g); });
    } else if (cs.prefetch) {
        launch(dim3((unsigned)(N * H), DV / BVB), block, [&] { bwd_scan_kernel<E, C, DK, BVB, true>(g); });
    } else {
        launch(dim3((unsigned)(N * H), DV / BVB), block, [&] { bwd_scan_kernel<E, C, DK, BVB, false>(g); });
    }
    bool mma_chunk = false;
    if constexpr (std::is_same<E, bf16>::value) {
        if (cs.mma) {   // bwd_chunk in the register style
            launch(dim3((unsigned)nch, H), dim3(bwd_chunk_mma_threads<C>()), [&] { bwd_chunk_mma_kernel<C, DK, DV>(g); });
            mma_chunk = true;
        }
    } else if constexpr (C <= 32) {
        if (cs.mma) {   // float32's, 3xTF32 (two warps a 16-row strip)
            launch(dim3((unsigned)nch, H), dim3(bwd_chunk_mma_f32_threads<C>()), [&] { bwd_chunk_mma_f32_kernel<C, DK, DV>(g); });
            mma_chunk = true;
        }
    }
    if (!mma_chunk) launch(dim3((unsigned)nch, H), block, [&] { bwd_chunk_kernel<E, C, DK, DV>(g); });

    struct { const char *name; double err; } errs[] = {
        { "o", rel_err_host(ref.o, as_double(o)) },   { "dq", rel_err_host(ref.dq, as_double(dq)) },
        { "dk", rel_err_host(ref.dk, as_double(dk)) }, { "dv", rel_err_host(ref.dv, as_double(dv)) },
        { cs.chain ? "dbeta" : "dalpha", cs.chain ? rel_err_host(ref_dbeta, as_double(dbeta)) : rel_err_host(ref.da, as_double(da)) },
        { "s_final", cs.packed ? rel_err_host(ref.sf, as_double(sf)) : 0.0 },
        { "ds0", cs.packed ? rel_err_host(ref.ds0, as_double(ds0)) : 0.0 },
    };
    bool bad = false;
    for (int i = 0; i < 7; i++) last_errs[i] = errs[i].err;
    for (auto &e : errs) bad |= !(e.err < tol);
    failures += bad;
    char dvs[16] = "";
    if (DV != DK) snprintf(dvs, sizeof dvs, " dv=%d", DV);
    printf("%s C=%-2d d=%-3d%s B=%d T=%-3d H=%d %-6s %-10s scan tile %-2d %-11s%s%s |", f32 ? "f32 " : "bf16", C, DK, dvs, B, T, H, cs.packed ? "packed" : "rows",
           cs.recompute ? "recomputed" : "saved", cs.scan_bv < DV ? cs.scan_bv : DV, cs.prefetch ? "prefetch" : "no prefetch", cs.chain ? " chain" : cs.mma ? " mma scan" : "", cs.ks == 2 ? " ks2" : "");
    for (auto &e : errs) printf(" %s %.1e", e.name, e.err);
    if (bad) printf("  FAIL (%.0e)", tol);
    printf("\n");
}

// How the products spread over the warps (warp_blocks, then_each): for every output shape the
// kernels can ask for and beyond (tile counts odd and even), every TILES and several warp0, one
// block's warps must visit every four-column group of the output exactly once. A wrong block
// index, shape or warp rotation leaves groups unvisited or visited twice.
template <int TILES> static void check_warp_blocks() {
    const int sizes[] = { 16, 32, 48, 64, 128, 256 }, firsts[] = { 0, 3, 8 };
    for (int M : sizes)
        for (int N : sizes)
            for (int w0 : firsts) {
                std::vector<std::atomic<int>> seen(M * N / 4);
                for (auto &x : seen) x = 0;
                launch(dim3(1), dim3(THREADS), [&] { then_each<TILES>(M, N, [&](int r, int c) { seen[(r * N + c) / 4]++; }, w0); });
                int bad = 0;
                for (auto &x : seen) bad += x != 1;
                if (bad) {
                    printf("warp blocks: TILES=%d M=%d N=%d warp0=%d: %d of %d four-column groups not visited once  FAIL\n", TILES, M, N, w0, bad, M * N / 4);
                    failures++;
                }
            }
}

int main() {
    printf("delta_rule_chunk_emu: the tensor-core chunk kernels on the host against the float64 recurrence\n");
    check_warp_blocks<1>();
    check_warp_blocks<2>();
    check_warp_blocks<4>();
    if (!failures) printf("warp blocks: every output element visited once (TILES 1, 2, 4; 36 shapes; warp0 0, 3, 8)\n");
    run_case<bf16, 16, 32>({ 1, 70, 2, false, false, false, 32 });
    run_case<bf16, 32, 32>({ 2, 100, 1, true, true, true, 32 });
    run_case<bf16, 64, 32>({ 1, 150, 1, true, false, true, 32 });
    run_case<bf16, 64, 64>({ 1, 130, 1, false, false, false, 32 });
    run_case<bf16, 64, 64>({ 1, 130, 1, true, true, true, 64 });
    run_case<bf16, 32, 64>({ 1, 90, 2, false, true, true, 64 });
    run_case<bf16, 64, 128>({ 1, 80, 1, true, false, true, 32 });   // the LMs' head size
    run_case<bf16, 64, 128>({ 1, 100, 2, false, false, false, 64 });   // 64-column scans at d = 128 (the library's backward tile)
    // the float32 path (three-TF32 products, float tiles and states)
    run_case<float, 16, 32>({ 1, 70, 2, true, false, false, 32 });
    run_case<float, 32, 64>({ 1, 90, 1, true, true, true, 64 });
    run_case<float, 64, 64>({ 1, 130, 1, false, false, true, 32 });
    run_case<float, 32, 128>({ 1, 70, 1, true, false, false, 32 });
    // the chain through alpha inside bwd_chunk
    run_case<bf16, 64, 64>({ 1, 100, 2, true, false, false, 32, true });
    run_case<float, 32, 64>({ 1, 90, 1, false, true, false, 64, true });
    run_case<float, 32, 128>({ 1, 200, 1, false, false, false, 32, true, 5.66 });   // large keys (test_cuda's |k| = 0.5 sqrt(dk))
    // the forward's solves kept for the backward
    run_case<bf16, 64, 128>({ 1, 100, 1, true, false, false, 32, true, 1, true });
    run_case<float, 16, 32>({ 1, 70, 2, false, false, true, 32, false, 1, true });
    // the scans with the state in registers (mma.sync fragments): the forward's (saved and recomputed
    // states), the backward's where prep makes tril(Q K^T) (saved states)
    run_case<bf16, 64, 128>({ 1, 150, 2, true, false, false, 64, false, 1, false, true });
    run_case<bf16, 64, 128>({ 2, 100, 1, false, true, false, 64, true, 1, false, true });
    run_case<bf16, 32, 64>({ 1, 90, 2, true, true, false, 64, false, 1, true, true });
    run_case<bf16, 16, 32>({ 1, 70, 1, true, false, false, 32, false, 1, false, true });
    run_case<bf16, 64, 64>({ 1, 200, 1, false, false, false, 64, false, 1, false, true });
    run_case<bf16, 64, 128>({ 2, 130, 2, true, false, false, 128, false, 1, false, true });   // the backward's 128 columns
    // float32's register-style kernels (3xTF32 mma.sync: state_scan_mma_f32_kernel, out_mma_f32_kernel):
    // packed sequences with an initial and a final state, recomputed states, the chain
    run_case<float, 32, 128>({ 1, 70, 1, true, false, false, 32, false, 1, false, true });
    run_case<float, 16, 32>({ 1, 70, 2, true, true, false, 32, false, 1, false, true });
    run_case<float, 32, 64>({ 2, 90, 1, false, true, false, 64, true, 1, false, true });
    // and its backward scan (bwd_scan_mma_f32_kernel, saved states; the d = 128 case above runs it with
    // 32 columns): 64 columns at d = 128 with packed sequences, the chain, C = 16
    run_case<float, 32, 128>({ 2, 90, 1, true, false, false, 64, false, 1, false, true });
    run_case<float, 32, 64>({ 1, 100, 2, false, false, false, 64, true, 1, false, true });
    run_case<float, 16, 32>({ 1, 70, 2, true, false, false, 32, false, 1, false, true });
    run_case<float, 32, 64, 128>({ 1, 100, 1, true, false, false, 64, false, 1, false, true });   // dk != dv, 64-column out
    run_case<float, 32, 128, 64>({ 1, 90, 2, false, true, false, 64, true, 1, false, true });    // and the other way, the chain
    // the scans with two warps a 16-column slice (KS = 2): initial and final states (and their
    // gradients), packed sequences, the forward scan run twice (recomputed states), dk != dv, C = 16
    run_case<float, 32, 128>({ 2, 90, 1, true, false, false, 64, false, 1, false, true, 2 });
    run_case<float, 32, 64>({ 1, 100, 2, true, true, false, 64, true, 1, false, true, 2 });
    run_case<float, 32, 64, 128>({ 1, 100, 1, true, false, false, 64, false, 1, false, true, 2 });
    run_case<float, 16, 32>({ 1, 70, 2, true, false, false, 32, false, 1, false, true, 2 });
    run_case<bf16, 64, 128>({ 2, 130, 2, true, false, false, 64, false, 1, false, true, 2 });
    run_case<bf16, 32, 64>({ 1, 90, 2, true, true, false, 64, true, 1, false, true, 2 });
    run_case<bf16, 64, 64, 128>({ 1, 130, 1, true, false, false, 64, false, 1, false, true, 2 });
    run_case<bf16, 16, 32>({ 1, 70, 1, true, false, false, 32, false, 1, false, true, 2 });
    // dk != dv (the states dk x dv, q and k against v and dO): the shared-memory kernels, then the
    // register-style ones with the chain and recomputed states
    run_case<bf16, 64, 64, 128>({ 1, 130, 2, true, false, false, 64 });
    run_case<bf16, 64, 64, 128>({ 1, 130, 1, true, false, false, 64, false, 1, false, true });
    run_case<bf16, 32, 128, 64>({ 1, 90, 2, false, true, false, 64, true, 1, false, true });
    // tiny keys at d = 128 (scale 128^-1/2, not a power of two): the gradients' errors at the
    // outputs' level (dk's below it with the register kernels), no extra rounding (the scale on dO applied in float, not by rounding a
    // scaled dO to bf16 first, which took them from 2.9e-3 to 3.3e-3, above fla's)
    for (bool mma : { false, true }) {
        run_case<bf16, 64, 128>({ 1, 512, 2, false, false, false, 64, false, 0.01, false, mma });
        double worst = 0;
        for (int i = 1; i <= 4; i++) worst = std::max(worst, last_errs[i]);
        if (!(worst <= 1.06 * last_errs[0])) {
            printf("tiny keys (%s scans): a gradient's error %.2e is above 1.06x the output's %.2e  FAIL\n",
                   mma ? "register" : "shared-memory", worst, last_errs[0]);
            failures++;
        }
        // the register-style bwd_chunk keeps V' in float for dK += V' dS_out^T (hi + lo products):
        // there bfloat16 V' was about half of dk's error past its own rounding (2.88e-3 -> 2.43e-3)
        if (mma && !(last_errs[2] <= 0.9 * last_errs[0])) {
            printf("tiny keys (register kernels): dk's error %.2e is not below 0.9x the output's %.2e  FAIL\n", last_errs[2], last_errs[0]);
            failures++;
        }
    }
    if (prep_mma_worst < 0) { printf("prep_mma_kernel never ran  FAIL\n"); failures++; }
    else printf("prep_mma_kernel against prep_kernel: every output within %.1e norm-relative\n", prep_mma_worst);
    if (emu_smem_overflows) {   // a kernel's carving past what its launch asks for (EFLA_SMEM_FITS)
        printf("%d thread(s) saw a kernel carve past its shared memory (the first is named above)\n", emu_smem_overflows.load());
        failures++;
    }
    if (failures) { printf("%d case(s) FAILED\n", failures); return 1; }
    printf("every case within its tolerance (bf16 1e-2, float32 1e-5)\n");
    return 0;
}
