//! The agent's key mapping: constants, [`key`] and [`lower_bound`], bit-exact with Go's `math` (see the
//! [module documentation](super) on floating-point fidelity).

/// Relative accuracy of the agent's sketch: `eps = 1/128`.
pub const RELATIVE_ACCURACY: f64 = 1.0 / 128.0;
/// `gamma = 1 + 2·eps = 1.015625`; bin `k` stands for `gamma^(k - BIAS)`.
pub const GAMMA: f64 = 1.0 + 2.0 * RELATIVE_ACCURACY;
/// `ln(gamma)`, computed as `ln_1p(2·eps)` like the agent (Go's `math.Log1p(0.015625)`,
/// bits `0x3f8fc0a8b0fc03e4`; a test checks that `ln_1p` gives the same bits).
pub const GAMMA_LN: f64 = 0.015504186535965254;
/// The configured minimum magnitude (`1e-9`), from which the bias is derived.
pub const MIN_VALUE: f64 = 1e-9;
/// `emin = floor(ln(MIN_VALUE) / ln(gamma))`.
pub const EMIN: i32 = -1337;
/// Exponent bias: `key(gamma^e) = e + BIAS`, so key 1 is the smallest non-zero bin.
pub const BIAS: i32 = 1 - EMIN;
/// The smallest magnitude with a non-zero key: `gamma^-1337 ≈ 9.94e-10` (`lower_bound(1)`, as
/// computed by Go's `math.Pow`); smaller magnitudes map to key 0.
pub const NORM_MIN: f64 = f64::from_bits(0x3e11_1479_4260_12e9);
/// The key standing for +Inf (and for finite values beyond [`MAX_KEY`]); its negation is -Inf.
pub const INF_KEY: i16 = i16::MAX;
/// The largest finite key.
pub const MAX_KEY: i16 = INF_KEY - 1;
/// Maximum number of bins (distinct keys) a sketch keeps.
pub const BIN_LIMIT: usize = 4096;
/// Largest count of one bin on the wire (`uint16` in the agent).
pub const MAX_WIRE_BIN_COUNT: u32 = u16::MAX as u32;

/// The agent's key of `v`: `round_half_even(ln|v| / ln(gamma)) + BIAS`, negated for negative
/// values; 0 for `|v| < NORM_MIN` (including ±0) and for NaN; `±INF_KEY` for ±Inf and for
/// magnitudes whose key would exceed [`MAX_KEY`] (about 4.14e211 and beyond).
///
/// Examples: `key(1) = 1338`, `key(2) = 1383`, `key(10) = 1487`, `key(0.5) = 1293`.
pub fn key(v: f64) -> i16 {
    let m = v.abs();
    if m.is_nan() || m < NORM_MIN {
        return 0;
    }
    let k = if m == f64::INFINITY {
        INF_KEY
    } else {
        // `m` is finite and >= NORM_MIN, so the quotient is in about [-1337.5, 45800]: the cast is exact.
        let i = (go_log(m) / GAMMA_LN).round_ties_even() as i32 + BIAS;
        // The agent clamps to 1 ("should not happen") and to +Inf above the max key.
        i.clamp(1, i32::from(INF_KEY)) as i16
    };
    if v < 0.0 {
        -k
    } else {
        k
    }
}

/// Natural logarithm of a normal, finite, positive `x`, computed as Go's `math.Log` does on
/// amd64: the classic fdlibm `e_log.c` reduction (`x = 2^k · (1 + f)` with `1 + f` in
/// `[√2/2, √2)`, then `log(1 + f) = f - s·(f - R)` with `s = f / (2 + f)` and a degree-14 odd
/// polynomial `R`). `f64::ln` (glibc) is more accurate but differs from it by one ulp on a
/// fraction of a percent of inputs, which moves values within an ulp or two of a bin edge into the
/// other bin; this keeps `key` identical to the agent's even there. Go on arm64 may fuse
/// multiply-adds in its pure-Go version, so an arm64 agent itself can differ at such edges.
pub(super) fn go_log(x: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const L1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
    const L2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
    const L3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
    const L4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
    const L5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
    const L6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
    const L7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    // frexp: x = mant · 2^exp with mant in [0.5, 1).
    let mut exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let mut mant = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1022u64 << 52));
    if mant < std::f64::consts::FRAC_1_SQRT_2 {
        mant *= 2.0;
        exp -= 1;
    }
    let f = mant - 1.0;
    let k = f64::from(exp);
    let s = f / (2.0 + f);
    let s2 = s * s;
    let s4 = s2 * s2;
    let t1 = s2 * (L1 + s4 * (L3 + s4 * (L5 + s4 * L7)));
    let t2 = s4 * (L2 + s4 * (L4 + s4 * L6));
    let r = t1 + t2;
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + r) + k * LN2_LO)) - f)
}

/// The agent's `f64(k)`: the value bin `k` stands for, `gamma^(k - BIAS)` (the agent calls it the
/// lower bound; with round-half-even keys it is really the bin's centre in log space). It is 0
/// for key 0, negated for negative keys, and ±Inf for `±INF_KEY`; `-32768`, which is no valid
/// key, also gives -Inf (the agent would recurse forever on it).
pub fn lower_bound(k: i16) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let magnitude = if k.unsigned_abs() >= INF_KEY as u16 {
        f64::INFINITY
    } else {
        pow_gamma(i32::from(k).abs() - BIAS)
    };
    if k < 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// `GAMMA^e` computed the way Go's `math.Pow(GAMMA, e)` does for an integral `e` (the agent's
/// `powGamma`): binary powering over mantissas kept in `[0.5, 1)` with a separate binary
/// exponent, then one exact scaling by a power of two. Bit-exact with Go for the key range
/// (`e` in `[-1337, 31428]`).
fn pow_gamma(e: i32) -> f64 {
    match e {
        0 => return 1.0,
        1 => return GAMMA,
        _ => {}
    }
    // frexp(1.015625) = 0.5078125 · 2^1
    let (mut base_mant, mut base_exp) = (GAMMA / 2.0, 1i32);
    let (mut acc_mant, mut acc_exp) = (1.0f64, 0i32);
    let mut bits = e.unsigned_abs();
    while bits != 0 {
        if bits & 1 == 1 {
            acc_mant *= base_mant;
            acc_exp += base_exp;
        }
        base_mant *= base_mant;
        base_exp <<= 1;
        if base_mant < 0.5 {
            base_mant += base_mant;
            base_exp -= 1;
        }
        bits >>= 1;
    }
    if e < 0 {
        acc_mant = 1.0 / acc_mant;
        acc_exp = -acc_exp;
    }
    scale_by_pow2(acc_mant, acc_exp)
}

/// `x · 2^e`, exact while the result is a normal number (always the case for `pow_gamma` on
/// keys: `|e|` stays below ~750 and `x` within `[2^-15, 2^15]`).
fn scale_by_pow2(mut x: f64, mut e: i32) -> f64 {
    // Steps of at most 2^±1000 keep each factor a normal power of two.
    while e > 1000 {
        x *= f64::from_bits(((1000 + 1023) as u64) << 52);
        e -= 1000;
    }
    while e < -1000 {
        x *= f64::from_bits(((-1000 + 1023) as u64) << 52);
        e += 1000;
    }
    x * f64::from_bits(((e + 1023) as u64) << 52)
}
