/* tse's CPU kernels, built with the C compiler on first use and loaded with ctypes (tse_cli/models/kernels.py):
   fused loops for inference where a chain of PyTorch operations would pass over memory (and through the
   dispatcher) once per operation. float32, time-major rows (channels contiguous) throughout.

   1. tse_scan_f32: the selective scan (the `cpu` backend of tse_cli.models.ssm).
   2. tse_depthwise_f32: a causal depthwise convolution over time followed by LayerNorm + ReLU (the DCC
      encoder's first half) or by SiLU (the Mamba mixer's convolution).
   3. tse_norm_f32: LayerNorm + ReLU plus a residual (the encoder's second half), or RMSNorm.
   4. tse_linear_f32: a matrix product for the few rows of a streamed chunk (x W^T + bias), against the weight
      packed in panels of W output columns.
   4b. tse_matmul_f32: the same product for the many rows of a long block (offline), in tiles of rows that
      stay in L2, against the weight in wide panels (two vectors of output columns).
   5. tse_dcc_step_f32: a streamed chunk through the whole DCC encoder (2, 4, 2 and a context buffer per layer)
      in one call: per layer, Python would pay more to set up three calls than the chunk's arithmetic costs. A
      long block goes through each layer in tiles of rows (2, 4b, 3 while the tile is in L2).
   6. tse_cross_mamba_step_f32: a streamed chunk through a causal CrossMamba block (RMSNorms, products, the
      causal conv with SiLU, the scan, the residual; its conv and scan states updated), in one call, likewise.
   7. tse_dcc_front_f32 and tse_dcc_back_f32: the rest of a streamed chunk of the DCC extractor (Waveformer,
      WaveMamba) around its decoder: in_conv, the encoder (5.), the label and the projections to the decoder;
      then the projection back, the mask, the transposed out_conv with its overlap-add, tanh. Their element-wise
      steps are also kernels of their own for blocks of any length, between products that oneDNN, MKL or 4b
      run (offline): tse_dcc_label_f32 (the label and the projections to the decoder), tse_dcc_mask_f32 (the
      projection back and the mask) and tse_dcc_overlap_f32 (out_conv's overlap-add and tanh).
   8. tse_dcc_chunk_f32: a streamed chunk of WaveMamba (a DCC extractor with a CrossMamba decoder) in one call: the
      input's context buffer, 7.'s front, 6., 7.'s back. Per chunk Python then only checks the plan and hands over
      the buffers' ends: at 32-sample chunks, driving the three stages from Python cost 40 % of the time.

   The selective scan, for every batch row b and channel d, time t along the rows:
       dt    = softplus(delta[t, d] + bias[d])          (bias and softplus optional)
       h[n]  = exp(dt * A[d, n]) * h[n] + dt * B[t, n] * u[t, d]
       y     = sum_n C[t, n] * h[n] + D[d] * u[t, d]     (D optional)
       y    *= silu(z[t, d])                              (z optional)

   Layout: time-major rows with unit stride along channels, as the Mamba mixer produces them: u, delta, z and y
   are (batch, length, d_inner) with row strides (batch, time) given per tensor; B, C (batch, length, d_state)
   likewise; A is passed transposed, (d_state, d_inner) contiguous; state (batch, d_inner, d_state) contiguous,
   read as the initial state (when `has_state`) and overwritten with the last one.

   Channels go in blocks of W as GCC/Clang vector types, one register wide: 16 with AVX-512, else 8 (AVX); the W
   states of one n are one vector, and exp, softplus and silu are written out as branch-free polynomials on vectors
   (libm's are scalar calls). float32 throughout; exp and softplus agree with torch's to about 2 ulp. */

#include <stdint.h>
#include <string.h>

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define W 16 /* one AVX-512 register */
#else
#define W 8 /* one AVX register: 16 lanes as two halves ran the scan 2.5-3.5x slower on an AVX2 CPU (AMD EPYC) */
#endif
#define MAX_STATE 64

/* The loop (a `for` statement) shared among `threads` OpenMP threads with these clauses, or run as it is by one
   thread: an OpenMP construct costs about a microsecond even when an `if` clause makes its team one thread, and a
   streamed chunk makes some forty kernel calls. */
#define PRAGMA(x) _Pragma(#x)
#define SHARED_FOR(clauses, ...)                                  \
    do {                                                          \
        if (threads > 1) {                                        \
            PRAGMA(omp parallel for clauses num_threads(threads)) \
            __VA_ARGS__                                           \
        } else {                                                  \
            __VA_ARGS__                                           \
        }                                                         \
    } while (0)

typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));

static inline vf splat(float x) { return (vf){0} + x; }

static inline vf select(vi mask, vf a, vf b) { /* mask ? a : b, lane by lane (mask lanes are 0 or -1) */
    return (vf)((mask & (vi)a) | (~mask & (vi)b));
}

static inline vf exp_v(vf x) {
    /* Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, times 2^n from the bits.
       n = round(x log2 e) by adding and subtracting 1.5 * 2^23 (the sum's low bits are then n; |x log2 e| < 2^22
       after the clamps): three conversions and a comparison fewer than a floor. */
    const float magic = 12582912.0f;
    x = select(x < -87.0f, splat(-87.0f), x);
    x = select(x > 88.0f, splat(88.0f), x);
    vf shifted = x * 1.44269504088896341f + magic;
    vf fn = shifted - magic;
    vi n = (vi)shifted - 0x4B400000;
    vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * (vf)((n + 127) << 23);
}

static inline vf softplus_v(vf x) {
    /* torch's softplus (threshold 20): max(x, 0) + log1p(exp(-|x|)), log1p(y) = 2 atanh(y / (2 + y)) as an odd
       series in s = y / (2 + y) <= 1/3, accurate for tiny y too. */
    vi negative = x < 0.0f;
    vf y = exp_v(select(negative, x, -x));
    vf s = y / (2.0f + y);
    vf s2 = s * s;
    vf p = splat(1.0f / 15.0f);
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    vf out = select(negative, splat(0.0f), x) + 2.0f * s * p;
    return select(x > 20.0f, x, out);
}

static inline vf load(const float *p, int w) { /* w <= W floats, zeros after them */
    vf v = {0};
    memcpy(&v, p, sizeof(float) * w);
    return v;
}

/* One block of w <= W channels starting at channel d0 of one batch row (inlined twice below: with w = W, where
   the loads and stores are whole vectors, and for a last partial block). */
static inline __attribute__((always_inline)) void scan_block(
    int64_t length, int64_t d_inner, int64_t d_state, int64_t d0, int w, const float *u, int64_t su,
    const float *delta, int64_t sdelta, const float *A_t, const float *B, int64_t sB, const float *C, int64_t sC,
    const float *D, const float *z, int64_t sz, const float *bias, int softplus, float *y, int64_t sy,
    float *state, int has_state) {
    vf h[MAX_STATE], a[MAX_STATE];
    for (int64_t n = 0; n < d_state; n++) {
        a[n] = load(A_t + n * d_inner + d0, w);
        h[n] = splat(0.0f);
        for (int j = 0; has_state && j < w; j++) h[n][j] = state[(d0 + j) * d_state + n];
    }
    vf bias_v = bias ? load(bias + d0, w) : splat(0.0f), D_v = D ? load(D + d0, w) : splat(0.0f);
    for (int64_t t = 0; t < length; t++) {
        vf uu = load(u + t * su + d0, w), dt = load(delta + t * sdelta + d0, w) + bias_v;
        if (softplus) dt = softplus_v(dt);
        vf du = dt * uu, acc = D_v * uu;
        const float *B_t = B + t * sB, *C_t = C + t * sC;
        for (int64_t n = 0; n < d_state; n++) {
            h[n] = exp_v(dt * a[n]) * h[n] + du * B_t[n];
            acc += h[n] * C_t[n];
        }
        if (z) {
            vf g = load(z + t * sz + d0, w);
            acc *= g / (1.0f + exp_v(-g));
        }
        memcpy(y + t * sy + d0, &acc, sizeof(float) * w);
    }
    for (int64_t n = 0; n < d_state; n++)
        for (int j = 0; j < w; j++) state[(d0 + j) * d_state + n] = h[n][j];
}

/* Channels [d_begin, d_end) of every batch row, in blocks of W channels shared among `threads` OpenMP threads.
   Returns 0, or -1 when d_state exceeds MAX_STATE. Pointers of the optional inputs (D, z, bias) may be NULL. */
int tse_scan_f32(int64_t batch, int64_t length, int64_t d_inner, int64_t d_state, int64_t d_begin, int64_t d_end,
                 const float *u, int64_t su_b, int64_t su_t, const float *delta, int64_t sdelta_b,
                 int64_t sdelta_t, const float *A_t, const float *B, int64_t sB_b, int64_t sB_t, const float *C,
                 int64_t sC_b, int64_t sC_t, const float *D, const float *z, int64_t sz_b, int64_t sz_t,
                 const float *bias, int softplus, float *y, int64_t sy_b, int64_t sy_t, float *state,
                 int has_state, int threads) {
    if (d_state > MAX_STATE) return -1;
    int64_t blocks = (d_end - d_begin + W - 1) / W;
    SHARED_FOR(collapse(2) schedule(static),
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < blocks; i++) {
                int64_t d0 = d_begin + i * W;
                const float *zb = z ? z + b * sz_b : z;
                float *state_b = state + b * d_inner * d_state;
                if (d_end - d0 >= W)
                    scan_block(length, d_inner, d_state, d0, W, u + b * su_b, su_t, delta + b * sdelta_b, sdelta_t,
                               A_t, B + b * sB_b, sB_t, C + b * sC_b, sC_t, D, zb, sz_t, bias, softplus, y + b * sy_b,
                               sy_t, state_b, has_state);
                else
                    scan_block(length, d_inner, d_state, d0, (int)(d_end - d0), u + b * su_b, su_t,
                               delta + b * sdelta_b, sdelta_t, A_t, B + b * sB_b, sB_t, C + b * sC_b, sC_t, D, zb,
                               sz_t, bias, softplus, y + b * sy_b, sy_t, state_b, has_state);
            });
    return 0;
}

/* ---------------------------------------------------------------- norms and depthwise convolutions */

enum { POST_NONE = 0, POST_LAYER_NORM_RELU = 1, POST_SILU = 2, POST_RMS_NORM = 3 };

static inline void store(float *p, vf v, int w) { memcpy(p, &v, sizeof(float) * w); }

static inline float lanes_sum(vf v) {
    double s = 0.0;
    for (int j = 0; j < W; j++) s += v[j];
    return (float)s;
}

/* The sum of row[c] - mean (or of its squares) over the whole vectors of a row, in four independent vector
   accumulators (a single one would make every addition wait for the one before), the lanes added in double. */
static inline double vector_sum(const float *row, int64_t whole, float mean, int squares) {
    vf acc[4] = {{0}, {0}, {0}, {0}};
    int64_t c = 0;
    for (; c + 4 * W <= whole; c += 4 * W)
        for (int j = 0; j < 4; j++) {
            vf d = load(row + c + j * W, W) - mean;
            acc[j] += squares ? d * d : d;
        }
    for (; c < whole; c += W) {
        vf d = load(row + c, W) - mean;
        acc[0] += squares ? d * d : d;
    }
    return lanes_sum((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

/* In place on one row of `channels` values: LayerNorm (gamma, beta) then ReLU, or SiLU, or RMSNorm (gamma).
   Statistics from two passes over the row (in L1 by then), summed in vectors (`vector_sum`); whole vectors,
   then a scalar tail (channels % W). */
static void finish_row(float *row, int64_t channels, int post, const float *gamma, const float *beta, float eps) {
    int64_t whole = channels / W * W;
    if (post == POST_SILU) {
        for (int64_t c = 0; c < whole; c += W) {
            vf v = load(row + c, W);
            store(row + c, v / (1.0f + exp_v(-v)), W);
        }
        for (int64_t c = whole; c < channels; c++) row[c] = row[c] / (1.0f + exp_v(splat(-row[c]))[0]);
        return;
    }
    float mean = 0.0f;
    if (post == POST_LAYER_NORM_RELU) {
        double total = vector_sum(row, whole, 0.0f, 0);
        for (int64_t c = whole; c < channels; c++) total += row[c];
        mean = (float)(total / (double)channels);
    }
    double total = vector_sum(row, whole, mean, 1);
    for (int64_t c = whole; c < channels; c++) total += (double)(row[c] - mean) * (row[c] - mean);
    float scale = 1.0f / sqrtf((float)(total / (double)channels) + eps);
    if (post == POST_RMS_NORM) {
        for (int64_t c = 0; c < whole; c += W) store(row + c, load(row + c, W) * scale * load(gamma + c, W), W);
        for (int64_t c = whole; c < channels; c++) row[c] = row[c] * scale * gamma[c];
        return;
    }
    for (int64_t c = 0; c < whole; c += W) {
        vf v = (load(row + c, W) - mean) * scale * load(gamma + c, W) + load(beta + c, W);
        store(row + c, select(v > 0.0f, v, splat(0.0f)), W);
    }
    for (int64_t c = whole; c < channels; c++) {
        float v = (row[c] - mean) * scale * gamma[c] + beta[c];
        row[c] = v > 0.0f ? v : 0.0f;
    }
}

/* The input frame of each of the k taps for output frame t of one batch row: x (its frames, stride sx_t) after
   `past` (its context = (k - 1) * dilation frames, stride sp_t; NULL: zeros), NULL for a zero frame. */
static inline void tap_sources(const float **src, int64_t k, int64_t dilation, int64_t t, const float *x,
                               int64_t sx_t, const float *past, int64_t sp_t) {
    int64_t context = (k - 1) * dilation;
    for (int64_t j = 0; j < k; j++) {
        int64_t at = t - (k - 1 - j) * dilation; /* < 0: in the past */
        src[j] = at >= 0 ? x + at * sx_t : (past ? past + (context + at) * sp_t : NULL);
    }
}

/* row = post(bias + sum_j taps[j] * src[j]) over `channels`: one output frame of a depthwise convolution (taps
   (k, channels) contiguous, src from `tap_sources`; bias may be NULL; gamma/beta as `post` needs them). */
static inline void depthwise_frame(float *row, const float **src, int64_t k, int64_t channels, const float *taps,
                                   const float *bias, int post, const float *gamma, const float *beta, float eps) {
    int64_t whole = channels / W * W;
    for (int64_t c = 0; c < whole; c += W) { /* one pass: the taps summed in a register, in tap order */
        vf acc = bias ? load(bias + c, W) : splat(0.0f);
        for (int64_t j = 0; j < k; j++)
            if (src[j]) acc += load(taps + j * channels + c, W) * load(src[j] + c, W);
        store(row + c, acc, W);
    }
    for (int64_t c = whole; c < channels; c++) {
        float acc = bias ? bias[c] : 0.0f;
        for (int64_t j = 0; j < k; j++)
            if (src[j]) acc += taps[j * channels + c] * src[j][c];
        row[c] = acc;
    }
    if (post != POST_NONE) finish_row(row, channels, post, gamma, beta, eps);
}

/* out[b, t] = post(bias + sum_j taps[j] * input[b, t - (k - 1 - j) * dilation]), where the input is `past`
   (batch, context = (k - 1) * dilation, channels) followed by x (batch, n, channels); past may be NULL (zeros).
   taps (k, channels) contiguous; bias may be NULL; gamma/beta as `post` needs them. */
void tse_depthwise_f32(int64_t batch, int64_t n, int64_t channels, const float *x, int64_t sx_b, int64_t sx_t,
                       const float *past, int64_t sp_b, int64_t sp_t, const float *taps, int64_t k,
                       int64_t dilation, const float *bias, int post, const float *gamma, const float *beta,
                       float eps, float *out, int64_t so_b, int64_t so_t, int64_t t_begin, int64_t t_end,
                       int threads) {
    /* frames [t_begin, t_end) of every batch row, shared among `threads` OpenMP threads */
    (void)n;
    SHARED_FOR(collapse(2) schedule(static),
        for (int64_t b = 0; b < batch; b++)
            for (int64_t t = t_begin; t < t_end; t++) {
                const float *src[k];
                tap_sources(src, k, dilation, t, x + b * sx_b, sx_t, past ? past + b * sp_b : NULL, sp_t);
                depthwise_frame(out + b * so_b + t * so_t, src, k, channels, taps, bias, post, gamma, beta, eps);
            });
}

/* out[r] = (residual ? residual[r] : 0) + post(y[r]) for `rows` rows of `channels` <= MAX_CHANNELS (post:
   LayerNorm + ReLU or RMSNorm); out may be residual or y (in place). Row strides sy, sr, so; rows shared among
   `threads` OpenMP threads. Returns -1 for too many channels, else 0. */
#define MAX_CHANNELS 8192
int tse_norm_f32(int64_t rows, int64_t channels, const float *y, int64_t sy, int post, const float *gamma,
                 const float *beta, float eps, const float *residual, int64_t sr, float *out, int64_t so,
                 int threads) {
    if (channels > MAX_CHANNELS) return -1;
    SHARED_FOR(schedule(static),
        for (int64_t r = 0; r < rows; r++) {
            float row[MAX_CHANNELS]; /* 32 KiB of stack, per thread */
            memcpy(row, y + r * sy, sizeof(float) * channels);
            finish_row(row, channels, post, gamma, beta, eps);
            float *o = out + r * so;
            if (residual) {
                const float *res = residual + r * sr;
                for (int64_t c = 0; c < channels; c++) o[c] = res[c] + row[c];
            } else {
                memcpy(o, row, sizeof(float) * channels);
            }
        });
    return 0;
}

/* out[m, :] = x[m, :] W^T + bias for `rows` rows (a streamed chunk's frames), W (n_dim, k_dim) given as `panels`
   (ceil(n_dim / W), k_dim, W) contiguous: panel p holds output columns [p W, p W + W), zero past n_dim, so one
   vector load per k. Rows of x and out have unit stride along columns (row strides sx, so); bias may be NULL.
   Panels [p_begin, p_end), shared among `threads` OpenMP threads.

   Each panel is read once per tile of up to LINEAR_TILE rows, which keep one accumulator vector each: 13
   accumulators, the weight vector and a broadcast fill AVX2's 16 registers, and 13 rows are a 416-sample chunk.
   Tiles of fewer rows keep `sums` interleaved partial sums per row (alternate k), so that more independent
   multiply-adds hide their latency; x W^T is then summed in another order than MKL's (float32 rounding). A
   chunk's weights come from memory, not the cache (10 MiB for the encoder alone), hence the prefetch. */
#define LINEAR_TILE 13

static int64_t panel_count(int64_t columns) { return (columns + W - 1) / W; }
#define LINEAR_AHEAD 64 /* k steps: the weights are prefetched 2 KiB (AVX2) ahead of their use, 1.3-1.6x faster */

static inline __attribute__((always_inline)) void linear_tile(int rows, int sums, int64_t k_dim, const float *x,
                                                              int64_t sx, const float *panel, const float *bias,
                                                              float *out, int64_t so, int cols) {
    vf acc[LINEAR_TILE][4];
    for (int r = 0; r < rows; r++)
        for (int s = 0; s < sums; s++) acc[r][s] = splat(0.0f);
    int64_t k = 0;
    for (; k + sums <= k_dim; k += sums)
        for (int s = 0; s < sums; s++) {
            vf w;
            memcpy(&w, panel + (k + s) * W, sizeof w);
            __builtin_prefetch(panel + (k + s + LINEAR_AHEAD) * W); /* harmless past the end: a hint, no load */
            for (int r = 0; r < rows; r++) acc[r][s] += x[r * sx + k + s] * w; /* a scalar times a vector: broadcast */
        }
    for (; k < k_dim; k++) {
        vf w;
        memcpy(&w, panel + k * W, sizeof w);
        for (int r = 0; r < rows; r++) acc[r][0] += x[r * sx + k] * w;
    }
    vf b = bias ? load(bias, cols) : splat(0.0f);
    for (int r = 0; r < rows; r++) {
        vf sum = acc[r][0];
        if (sums == 2) sum += acc[r][1];
        if (sums == 4) sum = (sum + acc[r][1]) + (acc[r][2] + acc[r][3]);
        store(out + r * so, sum + b, cols);
    }
}

#define LINEAR_CASE(rows, sums) \
    case rows: linear_tile(rows, sums, k_dim, x, sx, panel, bias, out, so, cols); break;

static void linear_rows(int rows, int64_t k_dim, const float *x, int64_t sx, const float *panel, const float *bias,
                        float *out, int64_t so, int cols) {
    switch (rows) {
        LINEAR_CASE(1, 4) LINEAR_CASE(2, 4) LINEAR_CASE(3, 4) LINEAR_CASE(4, 2) LINEAR_CASE(5, 2) LINEAR_CASE(6, 2)
        LINEAR_CASE(7, 1) LINEAR_CASE(8, 1) LINEAR_CASE(9, 1) LINEAR_CASE(10, 1) LINEAR_CASE(11, 1)
        LINEAR_CASE(12, 1) LINEAR_CASE(13, 1)
    }
}

void tse_linear_f32(int64_t rows, int64_t k_dim, int64_t n_dim, const float *x, int64_t sx, const float *panels,
                    const float *bias, float *out, int64_t so, int64_t p_begin, int64_t p_end, int threads) {
    int64_t tiles = (rows + LINEAR_TILE - 1) / LINEAR_TILE;
    SHARED_FOR(schedule(static),
        for (int64_t p = p_begin; p < p_end; p++) {
            int cols = n_dim - p * W < W ? (int)(n_dim - p * W) : W;
            for (int64_t t = 0, m = 0; t < tiles; t++) { /* tiles of equal size: 20 rows are 10 + 10, not 13 + 7 */
                int64_t end = rows * (t + 1) / tiles;
                linear_rows((int)(end - m), k_dim, x + m * sx, sx, panels + p * k_dim * W, bias ? bias + p * W : NULL,
                            out + m * so + p * W, so, cols);
                m = end;
            }
        });
}


/* The product of a tile of many rows (a long block's, offline): out[r, :] = x[r, :] W^T + bias for `rows` rows,
   with x packed in micro panels of TILE_ROWS rows (`pack_row`: micro panel i holds rows [i TILE_ROWS, (i + 1)
   TILE_ROWS), k-major, x[r, k] at k TILE_ROWS + r % TILE_ROWS), and W in wide panels of 2W output columns
   ((ceil(n_dim / 2W), k_dim, 2W), zero past n_dim). out's rows hold whole wide panels (the padding included).
   A micro tile of TILE_ROWS rows by one wide panel keeps 12 accumulators, two weight vectors and a broadcast in
   AVX2's 16 registers, reading x and W each as one sequential stream (1.1-1.2x faster than rows of x and two
   panels of W); the sum over k goes in blocks of TILE_K. As fast as oneDNN on 2048 x 512 x 512 here, faster on
   deep and narrower products (`bench/products.py`), and it lets the caller keep the tile in L2 between its other
   steps. */
#define TILE_ROWS 6
#define TILE_K 512

static inline void pack_row(float *packed, int64_t r, int64_t k_dim, const float *row) {
    float *to = packed + r / TILE_ROWS * TILE_ROWS * k_dim + r % TILE_ROWS;
    for (int64_t k = 0; k < k_dim; k++) to[k * TILE_ROWS] = row[k];
}

static inline __attribute__((always_inline)) void micro_tile(int rows, int64_t kc, const float *a, const float *b,
                                                             const vf *init, float *out, int64_t so) {
    vf a0[TILE_ROWS], a1[TILE_ROWS]; /* init: the bias (first k block), else NULL: add to out */
    for (int r = 0; r < rows; r++) {
        if (init) {
            a0[r] = init[0], a1[r] = init[1];
            continue;
        }
        memcpy(&a0[r], out + r * so, sizeof(vf));
        memcpy(&a1[r], out + r * so + W, sizeof(vf));
    }
    for (int64_t k = 0; k < kc; k++) {
        vf w0, w1;
        memcpy(&w0, b + k * 2 * W, sizeof w0);
        memcpy(&w1, b + k * 2 * W + W, sizeof w1);
        for (int r = 0; r < rows; r++) { /* a scalar times a vector: one broadcast */
            float v = a[k * TILE_ROWS + r];
            a0[r] += v * w0;
            a1[r] += v * w1;
        }
    }
    for (int r = 0; r < rows; r++) {
        memcpy(out + r * so, &a0[r], sizeof(vf));
        memcpy(out + r * so + W, &a1[r], sizeof(vf));
    }
}

#define MICRO_CASE(rows) \
    case rows: micro_tile(rows, kc, a, b, init, out, so); break;

static void micro_rows(int rows, int64_t kc, const float *a, const float *b, const vf *init, float *out,
                       int64_t so) {
    switch (rows) { MICRO_CASE(1) MICRO_CASE(2) MICRO_CASE(3) MICRO_CASE(4) MICRO_CASE(5) MICRO_CASE(6) }
}

static int64_t wide_count(int64_t columns) { return (columns + 2 * W - 1) / (2 * W); }

static void product_tile(int64_t rows, int64_t k_dim, int64_t n_dim, const float *packed, const float *wide,
                         const float *bias, float *out, int64_t so) {
    for (int64_t k0 = 0; k0 < k_dim; k0 += TILE_K) {
        int64_t kc = k_dim - k0 < TILE_K ? k_dim - k0 : TILE_K;
        for (int64_t p = 0; p < wide_count(n_dim); p++) {
            vf init[2] = {splat(0.0f), splat(0.0f)};
            for (int j = 0; bias && j < 2; j++) {
                int64_t column = p * 2 * W + j * W, w = n_dim - column < W ? n_dim - column : W;
                if (w > 0) init[j] = load(bias + column, (int)w);
            }
            for (int64_t r = 0; r < rows; r += TILE_ROWS)
                micro_rows(rows - r < TILE_ROWS ? (int)(rows - r) : TILE_ROWS, kc, packed + r * k_dim + k0 * TILE_ROWS,
                           wide + (p * k_dim + k0) * 2 * W, k0 ? NULL : init, out + r * so + p * 2 * W, so);
        }
    }
}

/* Rows per tile of a long block's products: a thread's tile of packed rows and its product (2 x 48 rows of 512
   floats: 192 KiB) stay in L2 (512 KiB here) with room for the weights passing through. 96 rows were no faster. */
#define ROW_TILE 48

static int thread_number(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The calling thread's share [*begin, *end) of `rows` rows inside a parallel region: an equal share each, which
   it goes through in tiles (whole tiles dealt out would leave one thread a tile more than another). */
static void thread_rows(int64_t rows, int64_t *begin, int64_t *end) {
#ifdef _OPENMP
    int64_t team = omp_get_num_threads();
#else
    int64_t team = 1;
#endif
    int64_t id = thread_number();
    *begin = rows * id / team, *end = rows * (id + 1) / team;
}

/* Floats of one thread's tile: ROW_TILE rows of k_dim packed inputs, then of their product (whole wide panels). */
static int64_t tile_floats(int64_t k_dim, int64_t n_dim) { return ROW_TILE * (k_dim + wide_count(n_dim) * 2 * W); }

/* Floats of `work` tse_matmul_f32 needs on `threads` threads. */
int64_t tse_matmul_work(int64_t k_dim, int64_t n_dim, int threads) { return threads * tile_floats(k_dim, n_dim); }

/* out = x W^T + bias for `rows` rows of a long block: x rows of k_dim floats at stride sx (rows may overlap),
   out rows of n_dim at stride so, W as wide panels (product_tile), bias may be NULL. Rows shared among `threads`
   OpenMP threads in tiles of ROW_TILE rows, packed into `work` (tse_matmul_work floats). */
void tse_matmul_f32(int64_t rows, int64_t k_dim, int64_t n_dim, const float *x, int64_t sx, const float *wide,
                    const float *bias, float *out, int64_t so, float *work, int threads) {
    int64_t padded = wide_count(n_dim) * 2 * W;
    int direct = padded == n_dim; /* else the product goes through the tile's buffer, without its padding */
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int64_t begin, end;
        thread_rows(rows, &begin, &end);
        float *packed = work + thread_number() * tile_floats(k_dim, n_dim), *product = packed + ROW_TILE * k_dim;
        for (int64_t r0 = begin; r0 < end; r0 += ROW_TILE) {
            int64_t r1 = r0 + ROW_TILE < end ? r0 + ROW_TILE : end;
            for (int64_t r = r0; r < r1; r++) pack_row(packed, r - r0, k_dim, x + r * sx);
            product_tile(r1 - r0, k_dim, n_dim, packed, wide, bias, direct ? out + r0 * so : product,
                         direct ? so : padded);
            for (int64_t r = r0; !direct && r < r1; r++)
                memcpy(out + r * so, product + (r - r0) * padded, sizeof(float) * (size_t)n_dim);
        }
    }
}

int tse_lanes(void) { return W; } /* the panel width tse_linear_f32 expects */

/* One DCC encoder layer for tse_dcc_step_f32 (the ctypes Structure `kernels.DCCLayer` mirrors it): the depthwise
   taps (k, channels) and bias, LayerNorm 1, the 1x1 product's weight as panels (tse_linear_f32) and as wide
   panels (product_tile), its bias, LayerNorm 2, and the layer's context buffer
   (`tse_cli.models.streaming.ContextBuffer`: batch rows of `capacity` frames, the context the `context` frames
   before `end`). `end` is read and updated. */
typedef struct {
    const float *taps, *dw_bias, *gamma1, *beta1, *panels, *wide, *pw_bias, *gamma2, *beta2;
    float *buffer;
    int64_t k, dilation, capacity, context, end;
    float eps1, eps2;
} tse_dcc_layer;

/* ContextBuffer.advance: append the n frames x (batch, n, channels) to the layer's context buffer. */
static void advance(tse_dcc_layer *layer, int64_t batch, int64_t n, int64_t channels, const float *x) {
    int64_t context = layer->context, end = layer->end;
    int full = n < context && end + n > layer->capacity; /* the context moves to the front first */
    size_t frame = sizeof(float) * (size_t)channels;
    for (int64_t b = 0; b < batch; b++) {
        float *buffer = layer->buffer + b * layer->capacity * channels;
        const float *xb = x + b * n * channels;
        if (n >= context) { /* the new context is the tail of x */
            memcpy(buffer, xb + (n - context) * channels, frame * context);
            continue;
        }
        if (full) memmove(buffer, buffer + (end - context) * channels, frame * context);
        memcpy(buffer + (full ? context : end) * channels, xb, frame * n);
    }
    layer->end = n >= context ? context : (full ? context : end) + n;
}

/* Long blocks (more than STEP_ROWS rows) go through each encoder layer in tiles of ROW_TILE rows: the
   depthwise conv with LN1 and ReLU of the tile's frames, their product (product_tile) and LN2, ReLU and the
   residual, while the tile stays in L2, instead of three passes over the block's memory. A layer reads its
   input from one buffer and writes the next layer's to another, since a tile's taps read the input of frames
   before it, which other tiles (other threads) are working on. Fewer rows (a streamed chunk) go layer by layer,
   in place, through tse_linear_f32. */
#define STEP_ROWS 32

/* Floats of `work` tse_dcc_step_f32 needs for `rows` (batch * n) rows of `channels` on `threads` threads. */
int64_t tse_dcc_step_work(int64_t rows, int64_t channels, int threads) {
    return rows <= STEP_ROWS ? 2 * rows * channels : rows * channels + threads * tile_floats(channels, channels);
}

/* One layer on a long block: out = in + relu(LN2(1x1(relu(LN1(depthwise(context, in)))))), rows shared in tiles
   among `threads` OpenMP threads (thread_rows), each with tile_floats(channels, channels) of `tiles`: the tile's
   depthwise output packed for product_tile, and the product. */
static void dcc_layer_tiled(int64_t batch, int64_t n, int64_t channels, const tse_dcc_layer *layer,
                            const float *in, float *out, float *tiles, int threads) {
    int64_t rows = batch * n, padded = wide_count(channels) * 2 * W;
    const float *past = layer->buffer + (layer->end - layer->context) * channels;
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int64_t begin, end;
        thread_rows(rows, &begin, &end);
        float *front = tiles + thread_number() * tile_floats(channels, channels);
        float *product = front + ROW_TILE * channels;
        for (int64_t r0 = begin; r0 < end; r0 += ROW_TILE) {
            int64_t r1 = r0 + ROW_TILE < end ? r0 + ROW_TILE : end;
            for (int64_t r = r0; r < r1; r++) { /* each frame into a product row (free until the product) */
                const float *src[layer->k];
                int64_t b = r / n;
                tap_sources(src, layer->k, layer->dilation, r % n, in + b * n * channels, channels,
                            past + b * layer->capacity * channels, channels);
                depthwise_frame(product, src, layer->k, channels, layer->taps, layer->dw_bias, POST_LAYER_NORM_RELU,
                                layer->gamma1, layer->beta1, layer->eps1);
                pack_row(front, r - r0, channels, product);
            }
            product_tile(r1 - r0, channels, channels, front, layer->wide, layer->pw_bias, product, padded);
            for (int64_t r = r0; r < r1; r++) {
                float *row = product + (r - r0) * padded;
                finish_row(row, channels, POST_LAYER_NORM_RELU, layer->gamma2, layer->beta2, layer->eps2);
                for (int64_t c = 0; c < channels; c++) out[r * channels + c] = in[r * channels + c] + row[c];
            }
        }
    }
}

/* out = the encoder on x, both (batch, n, channels) contiguous, through `layers` layers, each: out += relu(LN2(
   1x1(relu(LN1(depthwise(context, out)))))), its context buffer advanced by the layer's input. `work` holds
   tse_dcc_step_work floats; long blocks share their tiles among `threads` OpenMP threads. Returns -1 for more
   than MAX_CHANNELS channels, else 0. */
int tse_dcc_step_f32(int64_t batch, int64_t n, int64_t channels, int64_t layers, tse_dcc_layer *plan,
                     const float *x, float *out, float *work, int threads) {
    if (channels > MAX_CHANNELS) return -1;
    int64_t rows = batch * n, panels = panel_count(channels);
    if (rows > STEP_ROWS) { /* layer i writes `out` or `work`, alternately, so that the last one writes `out` */
        const float *in = x;
        for (int64_t i = 0; i < layers; i++) {
            float *next = (layers - 1 - i) % 2 ? work : out;
            dcc_layer_tiled(batch, n, channels, plan + i, in, next, work + rows * channels, threads);
            advance(plan + i, batch, n, channels, in);
            in = next;
        }
        return 0;
    }
    float *front = work, *product = work + rows * channels;
    memcpy(out, x, sizeof(float) * (size_t)(rows * channels));
    for (int64_t i = 0; i < layers; i++) {
        tse_dcc_layer *layer = plan + i;
        const float *past = layer->buffer + (layer->end - layer->context) * channels;
        tse_depthwise_f32(batch, n, channels, out, n * channels, channels, past, layer->capacity * channels,
                          channels, layer->taps, layer->k, layer->dilation, layer->dw_bias, POST_LAYER_NORM_RELU,
                          layer->gamma1, layer->beta1, layer->eps1, front, n * channels, channels, 0, n, 1);
        tse_linear_f32(rows, channels, channels, front, channels, layer->panels, layer->pw_bias, product, channels,
                       0, panels, 1);
        advance(layer, batch, n, channels, out);
        tse_norm_f32(rows, channels, product, channels, POST_LAYER_NORM_RELU, layer->gamma2, layer->beta2,
                     layer->eps2, out, channels, out, channels, 1);
    }
    return 0;
}

/* A causal CrossMamba block for tse_cross_mamba_step_f32 (the ctypes Structure `kernels.MambaBlock` mirrors it):
   the RMSNorm weights of query and value, and the mixer's weights in the layouts the kernels read: in_proj (2
   d_inner outputs: x then z), the fused query product (d_model -> d_state, q_proj in_proj_q) and x_proj (dt_rank
   + d_state outputs: dt then B) and dt_proj and out_proj as panels; the conv taps (d_conv, d_inner); A transposed
   (d_state, d_inner). Biases and D may be NULL. */
typedef struct {
    const float *norm_query, *norm_value, *in_panels, *in_bias, *query_panels, *query_bias, *taps, *conv_bias;
    const float *x_panels, *dt_panels, *dt_bias, *A_t, *D, *out_panels, *out_bias;
    int64_t d_model, d_inner, d_state, dt_rank, d_conv;
    float eps_query, eps_value;
} tse_mamba_block;

/* out = block(query, value) for a chunk of n frames of `batch` rows (query, value, out: (batch, n, d_model)
   contiguous), after and updating `conv` (batch, d_conv - 1, d_inner: the conv's last inputs, time-major) and
   `ssm` (batch, d_inner, d_state). `work` holds batch * n * (2 d_model + 6 d_inner + dt_rank + 2 d_state)
   floats. Returns -1 for too many channels or states, else 0. */
int tse_cross_mamba_step_f32(int64_t batch, int64_t n, const tse_mamba_block *m, const float *query,
                             const float *value, float *out, float *conv, float *ssm, float *work) {
    int64_t dm = m->d_model, di = m->d_inner, ds = m->d_state, dr = m->dt_rank, keep = m->d_conv - 1;
    int64_t rows = batch * n, xs = dr + ds;
    if (dm > MAX_CHANNELS || ds > MAX_STATE) return -1;
    float *q = work, *v = q + rows * dm, *xz = v + rows * dm, *u = xz + rows * 2 * di, *dbc = u + rows * di;
    float *c = dbc + rows * xs, *delta = c + rows * ds, *y = delta + rows * di;
    tse_norm_f32(rows, dm, query, dm, POST_RMS_NORM, m->norm_query, NULL, m->eps_query, NULL, 0, q, dm, 1);
    tse_norm_f32(rows, dm, value, dm, POST_RMS_NORM, m->norm_value, NULL, m->eps_value, NULL, 0, v, dm, 1);
    tse_linear_f32(rows, dm, 2 * di, v, dm, m->in_panels, m->in_bias, xz, 2 * di, 0, panel_count(2 * di), 1);
    tse_depthwise_f32(batch, n, di, xz, n * 2 * di, 2 * di, conv, keep * di, di, m->taps, m->d_conv, 1,
                      m->conv_bias, POST_SILU, NULL, NULL, 0.0f, u, n * di, di, 0, n, 1);
    tse_linear_f32(rows, di, xs, u, di, m->x_panels, NULL, dbc, xs, 0, panel_count(xs), 1);
    tse_linear_f32(rows, dm, ds, q, dm, m->query_panels, m->query_bias, c, ds, 0, panel_count(ds), 1);
    tse_linear_f32(rows, dr, di, dbc, xs, m->dt_panels, NULL, delta, di, 0, panel_count(di), 1);
    tse_scan_f32(batch, n, di, ds, 0, di, u, n * di, di, delta, n * di, di, m->A_t, dbc + dr, n * xs, xs, c,
                 n * ds, ds, m->D, xz + di, n * 2 * di, 2 * di, m->dt_bias, 1, y, n * di, di, ssm, 1, 1);
    size_t frame = sizeof(float) * (size_t)di;
    for (int64_t b = 0; b < batch; b++) { /* the conv keeps its last d_conv - 1 inputs (the x half of xz) */
        float *past = conv + b * keep * di;
        const float *x = xz + b * n * 2 * di;
        int64_t old = n < keep ? keep - n : 0; /* inputs of earlier chunks that stay, moved to the front */
        memmove(past, past + (keep - old) * di, frame * old);
        for (int64_t t = old; t < keep; t++) memcpy(past + t * di, x + (n - keep + t) * 2 * di, frame);
    }
    tse_linear_f32(rows, di, dm, y, di, m->out_panels, m->out_bias, out, dm, 0, panel_count(dm), 1);
    for (int64_t i = 0; i < rows * dm; i++) out[i] += value[i];
    return 0;
}

/* The DCC extractor around its encoder and decoder (the ctypes Structure `kernels.DCCModel` mirrors it): in_conv
   (enc_dim outputs from 3L samples) and out_conv (its (b + 1) L outputs per frame, b = out_buf_len, from enc_dim)
   as panels; the grouped projections proj_e2d_l and proj_e2d_e (dec_dim outputs, each from enc_dim / dec_dim
   consecutive inputs: taps (enc_dim / dec_dim, dec_dim)) and proj_d2e (enc_dim outputs, enc_dim / dec_dim per
   input: one scale each), with their biases. */
typedef struct {
    const float *in_panels, *ql_taps, *ql_bias, *qe_taps, *qe_bias, *d2e_scale, *d2e_bias, *out_panels;
    int64_t L, enc_dim, dec_dim, out_buf;
} tse_dcc_model;

/* out[g] = relu(bias[g] + sum_i taps[i, g] x[g per + i]), per = enc / dec, for one row x (enc) -> out (dec): the
   sum in the order of `dcc.pointwise`, along g in the inner loops (strided loads, vectorised). */
static void project_down(int64_t enc, int64_t dec, const float *x, const float *taps, const float *bias,
                         float *out) {
    int64_t per = enc / dec;
    for (int64_t g = 0; g < dec; g++) out[g] = bias[g] + taps[g] * x[g * per];
    for (int64_t i = 1; i < per; i++)
        for (int64_t g = 0; g < dec; g++) out[g] += taps[i * dec + g] * x[g * per + i];
    for (int64_t g = 0; g < dec; g++) out[g] = out[g] > 0.0f ? out[g] : 0.0f;
}

/* The label and the projections to the decoder for n frames of each batch row of the encoder's output e (batch,
   n, enc): l = e * label (label (batch, enc)), q = proj_e2d_l(l), memory = proj_e2d_e(e); l (batch, n, enc), q
   and memory (batch, n, dec), all contiguous. Frames shared among `threads` OpenMP threads. Returns 0. */
int tse_dcc_label_f32(int64_t batch, int64_t n, const tse_dcc_model *m, const float *e, const float *label,
                      float *l, float *q, float *memory, int threads) {
    int64_t enc = m->enc_dim, dec = m->dec_dim;
    SHARED_FOR(schedule(static),
        for (int64_t r = 0; r < batch * n; r++) {
            const float *er = e + r * enc, *lb = label + r / n * enc;
            float *lr = l + r * enc;
            project_down(enc, dec, er, m->qe_taps, m->qe_bias, memory + r * dec);
            for (int64_t c = 0; c < enc; c++) lr[c] = lb[c] * er[c];
            project_down(enc, dec, lr, m->ql_taps, m->ql_bias, q + r * dec);
        });
    return 0;
}

/* in_conv on n frames of each batch row of `stream` (row stride ss: (n + 2) L samples, windows of 3L, hop L),
   ReLU, the encoder (`layers` of `plan`, as tse_dcc_step_f32), then l = e * label (label (batch, enc)), and
   q = proj_e2d_l(l), memory = proj_e2d_e(e). x, l (batch, n, enc); q, memory (batch, n, dec); `work`: 3 batch
   n enc floats. Returns tse_dcc_step_f32's status. */
int tse_dcc_front_f32(int64_t batch, int64_t n, const tse_dcc_model *m, const float *stream, int64_t ss,
                      int64_t layers, tse_dcc_layer *plan, const float *label, float *x, float *l, float *q,
                      float *memory, float *work) {
    int64_t enc = m->enc_dim, rows = batch * n;
    for (int64_t b = 0; b < batch; b++) /* the windows are overlapping rows of the stream: row stride L */
        tse_linear_f32(n, 3 * m->L, enc, stream + b * ss, m->L, m->in_panels, NULL, x + b * n * enc, enc, 0,
                       panel_count(enc), 1);
    for (int64_t i = 0; i < rows * enc; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
    float *e = work;
    int status = tse_dcc_step_f32(batch, n, enc, layers, plan, x, e, work + rows * enc, 1);
    return status ? status : tse_dcc_label_f32(batch, n, m, e, label, l, q, memory, 1);
}

/* The mask of n frames of each batch row: masked = x * (l + proj_d2e(decoded)), x, l (batch, n, enc) and
   decoded (batch, n, dec) contiguous; masked rows of enc floats, batch row b's n frames from masked + b * sm.
   Frames shared among `threads` OpenMP threads. Returns 0. */
int tse_dcc_mask_f32(int64_t batch, int64_t n, const tse_dcc_model *m, const float *x, const float *l,
                     const float *decoded, float *masked, int64_t sm, int threads) {
    int64_t enc = m->enc_dim, dec = m->dec_dim, per = enc / dec;
    SHARED_FOR(schedule(static),
        for (int64_t r = 0; r < batch * n; r++) {
            const float *xr = x + r * enc, *lr = l + r * enc, *dr = decoded + r * dec;
            float *out = masked + r / n * sm + r % n * enc;
            for (int64_t g = 0; g < dec; g++) /* each decoder channel to its per outputs, then a vectorised pass */
                for (int64_t i = 0; i < per; i++) out[g * per + i] = dr[g];
            for (int64_t c = 0; c < enc; c++) {
                float d = m->d2e_scale[c] * out[c] + m->d2e_bias[c];
                out[c] = xr[c] * (lr[c] + (d > 0.0f ? d : 0.0f));
            }
        });
    return 0;
}

/* The output samples out (batch, n L) of n frames from out_conv's responses `segments` (batch, n + b, (b + 1) L)
   contiguous, to the b frames before them and to them (b = out_buf): output frame f sums segment b - k of the
   response of frame f + k - b, k = 0..b, then tanh. Frames shared among `threads` OpenMP threads. Returns 0. */
int tse_dcc_overlap_f32(int64_t batch, int64_t n, const tse_dcc_model *m, const float *segments, float *out,
                        int threads) {
    int64_t b = m->out_buf, L = m->L, span = (b + 1) * L;
    SHARED_FOR(collapse(2) schedule(static),
        for (int64_t r = 0; r < batch; r++)
            for (int64_t f = 0; f < n; f++) {
                const float *frame = segments + (r * (n + b) + f) * span;
                for (int64_t s = 0; s < L; s += W) {
                    int w = L - s < W ? (int)(L - s) : W;
                    vf acc = load(frame + b * L + s, w);
                    for (int64_t k = 1; k <= b; k++) acc += load(frame + k * span + (b - k) * L + s, w);
                    store(out + (r * n + f) * L + s, 1.0f - 2.0f / (exp_v(2.0f * acc) + 1.0f), w); /* tanh */
                }
            });
    return 0;
}

/* Room for n more steps after the `context` before `end` in each of `batch` rows of a context buffer (rows of
   `capacity` steps of `channels` floats; `tse_cli.models.streaming.ContextBuffer.extend`'s first step): where they
   would not fit, the context moves to the front. Returns where the n steps go (the context is just before). */
static int64_t make_room(float *buffer, int64_t batch, int64_t capacity, int64_t channels, int64_t context,
                         int64_t end, int64_t n) {
    if (end + n <= capacity) return end;
    for (int64_t r = 0; r < batch; r++) {
        float *row = buffer + r * capacity * channels;
        memmove(row, row + (end - context) * channels, sizeof(float) * (size_t)(context * channels));
    }
    return context;
}

/* The chunk's output samples out (batch, n L) from x, l (batch, n, enc) and the decoder's output (batch, n, dec):
   the mask (tse_dcc_mask_f32) goes into the context buffer of out_conv (batch rows of `capacity` frames, the last
   b before *end, b = out_buf; *end updated), then out_conv's responses to the b + n frames (`work`: batch (n + b)
   (b + 1) L floats) through tse_dcc_overlap_f32. Returns 0. */
int tse_dcc_back_f32(int64_t batch, int64_t n, const tse_dcc_model *m, const float *x, const float *l,
                     const float *decoded, float *buffer, int64_t capacity, int64_t *end, float *work, float *out) {
    int64_t enc = m->enc_dim, b = m->out_buf, span = (b + 1) * m->L;
    int64_t start = make_room(buffer, batch, capacity, enc, b, *end, n);
    tse_dcc_mask_f32(batch, n, m, x, l, decoded, buffer + start * enc, capacity * enc, 1);
    for (int64_t r = 0; r < batch; r++)
        tse_linear_f32(n + b, enc, span, buffer + (r * capacity + start - b) * enc, enc, m->out_panels, NULL,
                       work + r * (n + b) * span, span, 0, panel_count(span), 1);
    *end = start + n;
    return tse_dcc_overlap_f32(batch, n, m, work, out, 1);
}

/* A streamer's chunk through a DCC extractor whose decoder is a causal CrossMamba block (WaveMamba) in one call
   (the ctypes Structure `kernels.DCCStream` mirrors it): the model, its encoder's layers (with their context
   buffers), the decoder's block and its state (`conv`, `ssm`, as tse_cross_mamba_step_f32), the label (batch,
   enc), the input's context buffer `samples` (batch rows of `samples_capacity` samples, the last 2L before
   `samples_end`) and out_conv's `frames` (as tse_dcc_back_f32), and `work` for chunks of up to `max_frames`
   frames of `batch` rows (`kernels.dcc_chunk_work` floats). The ends are read and updated. */
typedef struct {
    const tse_dcc_model *model;
    tse_dcc_layer *layers;
    const tse_mamba_block *decoder;
    const float *label;
    float *samples, *frames, *conv, *ssm, *work;
    int64_t n_layers, batch, max_frames, samples_capacity, samples_end, frames_capacity, frames_end;
} tse_dcc_stream;

/* The chunk's new samples, n L of each batch row (`chunk`, row stride sc, unit stride along time), -> its output
   samples out (batch, n L): appended to `samples` (its 2L context moved to the front first where the chunk would
   not fit after it), then in_conv over [context | chunk], the encoder, the label and the projections
   (tse_dcc_front_f32), the decoder's block (tse_cross_mamba_step_f32) and the mask, out_conv and tanh
   (tse_dcc_back_f32). Returns -1, having changed nothing, for another batch, samples that are not whole frames
   or more than max_frames of them, a chunk that does not fit in `samples`, or widths the kernels do not take;
   else 0. */
int tse_dcc_chunk_f32(int64_t batch, int64_t samples, tse_dcc_stream *s, const float *chunk, int64_t sc,
                      float *out) {
    const tse_dcc_model *m = s->model;
    int64_t L = m->L, n = samples / L, enc = m->enc_dim, dec = m->dec_dim, rows = batch * n, context = 2 * L;
    int64_t capacity = s->samples_capacity;
    if (batch != s->batch || samples % L || n < 1 || n > s->max_frames || context + samples > capacity) return -1;
    if (enc > MAX_CHANNELS || s->decoder->d_model != dec || dec > MAX_CHANNELS || s->decoder->d_state > MAX_STATE)
        return -1;
    int64_t start = make_room(s->samples, batch, capacity, 1, context, s->samples_end, n * L);
    for (int64_t b = 0; b < batch; b++)
        memcpy(s->samples + b * capacity + start, chunk + b * sc, sizeof(float) * (size_t)(n * L));
    s->samples_end = start + n * L;
    float *x = s->work, *l = x + rows * enc, *q = l + rows * enc, *memory = q + rows * dec;
    float *decoded = memory + rows * dec, *rest = decoded + rows * dec; /* rest: each stage's working memory */
    tse_dcc_front_f32(batch, n, m, s->samples + start - context, capacity, s->n_layers, s->layers, s->label, x, l, q,
                      memory, rest);
    tse_cross_mamba_step_f32(batch, n, s->decoder, q, memory, decoded, s->conv, s->ssm, rest);
    return tse_dcc_back_f32(batch, n, m, x, l, decoded, s->frames, s->frames_capacity, &s->frames_end, rest, out);
}

int tse_openmp(void) { /* 1 when built with OpenMP: the kernels then share torch's threads */
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
