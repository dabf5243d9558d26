//! A mergeable distinct-count sketch of 64-bit hashes: an exact set while small, a HyperLogLog
//! once large.
//!
//! * **Exact** up to [`EXACT_LIMIT`] distinct hashes (a sorted array, 8 bytes a hash, at most
//!   16 KiB — the size of the HyperLogLog it would become). Its count is exact (up to 64-bit
//!   hash collisions: about n²/2⁶⁵, below 10⁻¹² at the limit).
//! * **HyperLogLog** with 2^[`PRECISION`] = 16 384 one-byte registers past the limit. The
//!   estimate is Ertl's improved estimator ("New cardinality estimation algorithms for
//!   HyperLogLog sketches", 2017, algorithm 6), which needs no empirical bias tables and is
//!   unbiased over the whole range; its relative standard error is 1.04 / √m ≈
//!   [`RELATIVE_STANDARD_ERROR`] (0.81 %).
//!
//! Merging is set union: exact ∪ exact stays exact while the union fits, and becomes the
//! HyperLogLog of the union otherwise; anything ∪ HyperLogLog is the register-wise maximum. The
//! result depends only on the union of the hashes, never on the order of merges (associative
//! and commutative), so a cell merged from hours, days or activities in any order is the same.
//!
//! Stored form ([`Sketch::to_bytes`]): a tag byte, then the sorted hashes (little-endian u64) for
//! `1`; the precision byte and the registers for `2`; or, for a HyperLogLog with fewer than a
//! third of its registers set (a few thousand devices), the precision byte and the set registers
//! as (u16 index, u8 value) triples in index order for `3` (about half the bytes at 2 500
//! devices, nothing saved past ~6 000).

/// Register-index bits of the HyperLogLog.
pub const PRECISION: u32 = 14;
const REGISTERS: usize = 1 << PRECISION;
/// Bits left for the rank (q in Ertl's paper).
const Q: u32 = 64 - PRECISION;
/// Largest exact set; one more distinct hash makes the sketch a HyperLogLog.
pub const EXACT_LIMIT: usize = 2048;
/// Relative standard error of a HyperLogLog count: 1.04 / √16384.
pub const RELATIVE_STANDARD_ERROR: f64 = 1.04 / 128.0;

const TAG_EXACT: u8 = 1;
const TAG_HLL: u8 = 2;
const TAG_HLL_SPARSE: u8 = 3;
/// Largest register value: q + 1.
const MAX_RANK: u8 = Q as u8 + 1;

/// A distinct-count sketch (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Sorted, distinct hashes; at most [`EXACT_LIMIT`].
    Exact(Vec<u64>),
    /// 2^14 registers: the largest rank seen per register.
    Hll(Box<[u8]>),
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sketch::Exact(v) => write!(f, "Exact({} hashes)", v.len()),
            Sketch::Hll(_) => write!(f, "Hll(≈{})", self.count().0),
        }
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Exact(Vec::new())
    }
}

/// A stored sketch that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("distinct sketch is unreadable: {0}")]
pub struct SketchError(String);

fn hll_insert(registers: &mut [u8], hash: u64) {
    let index = (hash >> Q) as usize;
    let rest = hash << PRECISION;
    // Rank: position of the first 1 in the remaining q bits (q + 1 when they are all 0).
    let rank = if rest == 0 {
        Q + 1
    } else {
        rest.leading_zeros() + 1
    } as u8;
    if let Some(r) = registers.get_mut(index)
        && *r < rank
    {
        *r = rank;
    }
}

fn hll_of(hashes: &[u64]) -> Box<[u8]> {
    let mut registers = vec![0u8; REGISTERS].into_boxed_slice();
    for &h in hashes {
        hll_insert(&mut registers, h);
    }
    registers
}

/// σ(x) of Ertl's estimator (the contribution of empty registers).
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// τ(x) of Ertl's estimator (the contribution of saturated registers).
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

fn hll_estimate(registers: &[u8]) -> f64 {
    let mut histogram = [0u32; Q as usize + 2];
    for &r in registers {
        if let Some(c) = histogram.get_mut(usize::from(r)) {
            *c += 1;
        }
    }
    let m = REGISTERS as f64;
    if histogram[0] as usize == REGISTERS {
        return 0.0;
    }
    let mut z = m * tau(1.0 - f64::from(histogram[Q as usize + 1]) / m);
    for k in (1..=Q as usize).rev() {
        z = 0.5 * (z + f64::from(histogram[k]));
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
    alpha_inf * m * m / z
}

/// Merges two sorted distinct arrays into one.
fn union_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Sketch {
    /// The sketch of a set of hashes (duplicates allowed).
    pub fn from_hashes(mut hashes: Vec<u64>) -> Sketch {
        hashes.sort_unstable();
        hashes.dedup();
        if hashes.len() <= EXACT_LIMIT {
            Sketch::Exact(hashes)
        } else {
            Sketch::Hll(hll_of(&hashes))
        }
    }

    /// Adds every hash of `other` (set union).
    pub fn merge(&mut self, other: &Sketch) {
        match (&mut *self, other) {
            (Sketch::Exact(a), Sketch::Exact(b)) => {
                if b.is_empty() {
                    return;
                }
                let union = union_sorted(a, b);
                *self = if union.len() <= EXACT_LIMIT {
                    Sketch::Exact(union)
                } else {
                    Sketch::Hll(hll_of(&union))
                };
            }
            (Sketch::Hll(registers), Sketch::Exact(b)) => {
                for &h in b {
                    hll_insert(registers, h);
                }
            }
            (Sketch::Exact(a), Sketch::Hll(b)) => {
                let mut registers = b.clone();
                for &h in a.iter() {
                    hll_insert(&mut registers, h);
                }
                *self = Sketch::Hll(registers);
            }
            (Sketch::Hll(a), Sketch::Hll(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(*y);
                }
            }
        }
    }

    /// The distinct count, and whether it is a HyperLogLog estimate.
    pub fn count(&self) -> (u64, bool) {
        match self {
            Sketch::Exact(v) => (v.len() as u64, false),
            Sketch::Hll(r) => (hll_estimate(r).round() as u64, true),
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Sketch::Exact(_))
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Exact(v) => {
                let mut out = Vec::with_capacity(1 + 8 * v.len());
                out.push(TAG_EXACT);
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Sketch::Hll(r) => {
                let set = r.iter().filter(|v| **v != 0).count();
                if 3 * set < r.len() {
                    let mut out = Vec::with_capacity(2 + 3 * set);
                    out.push(TAG_HLL_SPARSE);
                    out.push(PRECISION as u8);
                    for (index, value) in r.iter().enumerate().filter(|(_, v)| **v != 0) {
                        out.extend_from_slice(&(index as u16).to_le_bytes());
                        out.push(*value);
                    }
                    return out;
                }
                let mut out = Vec::with_capacity(2 + r.len());
                out.push(TAG_HLL);
                out.push(PRECISION as u8);
                out.extend_from_slice(r);
                out
            }
        }
    }

    /// Reads a stored sketch.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        match bytes.split_first() {
            Some((&TAG_EXACT, rest)) => {
                if rest.len() % 8 != 0 || rest.len() / 8 > EXACT_LIMIT {
                    return Err(SketchError(format!(
                        "exact set of {} bytes (a multiple of 8, at most {} hashes)",
                        rest.len(),
                        EXACT_LIMIT
                    )));
                }
                let hashes: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        u64::from_le_bytes(b)
                    })
                    .collect();
                if hashes.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(SketchError("exact set is not sorted and distinct".into()));
                }
                Ok(Sketch::Exact(hashes))
            }
            Some((&TAG_HLL, rest)) => match rest.split_first() {
                Some((&p, registers))
                    if u32::from(p) == PRECISION && registers.len() == REGISTERS =>
                {
                    Ok(Sketch::Hll(registers.to_vec().into_boxed_slice()))
                }
                _ => Err(SketchError(format!(
                    "HyperLogLog of {} bytes, expected precision {PRECISION} and {REGISTERS} registers",
                    rest.len()
                ))),
            },
            Some((&TAG_HLL_SPARSE, rest)) => match rest.split_first() {
                Some((&p, pairs)) if u32::from(p) == PRECISION && pairs.len() % 3 == 0 => {
                    let mut registers = vec![0u8; REGISTERS].into_boxed_slice();
                    let mut last: Option<usize> = None;
                    for triple in pairs.chunks_exact(3) {
                        let index = usize::from(u16::from_le_bytes([triple[0], triple[1]]));
                        let value = triple[2];
                        if index >= REGISTERS
                            || value == 0
                            || value > MAX_RANK
                            || last.is_some_and(|l| l >= index)
                        {
                            return Err(SketchError(format!(
                                "sparse HyperLogLog register {index} = {value} out of order or range"
                            )));
                        }
                        registers[index] = value;
                        last = Some(index);
                    }
                    Ok(Sketch::Hll(registers))
                }
                _ => Err(SketchError(format!(
                    "sparse HyperLogLog of {} bytes, expected precision {PRECISION} and triples",
                    rest.len()
                ))),
            },
            Some((tag, _)) => Err(SketchError(format!("unknown tag {tag}"))),
            None => Err(SketchError("empty".into())),
        }
    }
}

/// The stable 64-bit hash sketches hold: the first 8 bytes of the SHA-256 of `parts`
/// concatenated (the device key of DESIGN.md, or an ID value).
pub fn hash_parts(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-mixed test hashes (splitmix64 of a counter).
    fn hashes(from: u64, n: u64) -> Vec<u64> {
        (from..from + n)
            .map(|i| {
                let mut z = i
                    .wrapping_add(0x9E37_79B9_7F4A_7C15)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect()
    }

    #[test]
    fn small_sets_are_counted_exactly_and_survive_storage() -> Result<(), SketchError> {
        let mut h = hashes(0, 1500);
        h.extend(hashes(0, 500)); // duplicates
        let s = Sketch::from_hashes(h);
        assert_eq!(s.count(), (1500, false));
        assert_eq!(Sketch::from_bytes(&s.to_bytes())?, s);
        let mut a = Sketch::from_hashes(hashes(0, 1000));
        a.merge(&Sketch::from_hashes(hashes(500, 1548)));
        assert_eq!(a.count(), (2048, false), "the limit itself is still exact");
        assert_eq!(Sketch::default().count(), (0, false));
        Ok(())
    }

    #[test]
    fn a_union_past_the_limit_becomes_the_hyperloglog_of_the_union() -> Result<(), SketchError> {
        let mut a = Sketch::from_hashes(hashes(0, 1500));
        a.merge(&Sketch::from_hashes(hashes(1000, 1500)));
        assert!(!a.is_exact());
        assert_eq!(a, Sketch::from_hashes(hashes(0, 2500)));
        let (n, approximate) = a.count();
        assert!(approximate);
        assert!(
            (n as f64 - 2500.0).abs() / 2500.0 < 3.0 * RELATIVE_STANDARD_ERROR,
            "{n}"
        );
        assert_eq!(Sketch::from_bytes(&a.to_bytes())?, a);
        Ok(())
    }

    #[test]
    fn merge_is_associative_and_commutative_across_modes() {
        let parts = [
            Sketch::from_hashes(hashes(0, 100)),
            Sketch::from_hashes(hashes(50, 2000)),
            Sketch::from_hashes(hashes(3000, 5000)),
            Sketch::default(),
            Sketch::from_hashes(hashes(10, 20)),
        ];
        let merged = |order: &[usize]| {
            let mut s = Sketch::default();
            for &i in order {
                s.merge(&parts[i]);
            }
            s
        };
        let left = merged(&[0, 1, 2, 3, 4]);
        for order in [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 4, 0, 3, 2]] {
            assert_eq!(merged(&order), left, "{order:?}");
        }
        // (a ∪ b) ∪ c == a ∪ (b ∪ c), pairwise.
        for (a, b, c) in [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 4, 1)] {
            let mut ab = parts[a].clone();
            ab.merge(&parts[b]);
            ab.merge(&parts[c]);
            let mut bc = parts[b].clone();
            bc.merge(&parts[c]);
            let mut a_bc = parts[a].clone();
            a_bc.merge(&bc);
            assert_eq!(ab, a_bc);
        }
        let mut all = hashes(0, 100);
        all.extend(hashes(50, 2000));
        all.extend(hashes(3000, 5000));
        assert_eq!(left, Sketch::from_hashes(all));
    }

    #[test]
    fn hyperloglog_counts_are_within_three_standard_errors() {
        for (seed, n) in [
            (1u64 << 40, 5_000u64),
            (2 << 40, 50_000),
            (3 << 40, 400_000),
        ] {
            let s = Sketch::from_hashes(hashes(seed, n));
            let (estimate, approximate) = s.count();
            assert!(approximate);
            let error = (estimate as f64 - n as f64).abs() / n as f64;
            assert!(
                error < 3.0 * RELATIVE_STANDARD_ERROR,
                "n={n}: estimate {estimate}, error {error}"
            );
        }
    }

    #[test]
    fn sparse_and_dense_hyperloglogs_are_stored_compactly_and_read_back() -> Result<(), SketchError>
    {
        let sparse = Sketch::from_hashes(hashes(7, 3000));
        let bytes = sparse.to_bytes();
        assert_eq!(bytes[0], TAG_HLL_SPARSE);
        assert!(bytes.len() < REGISTERS * 3 / 5, "{}", bytes.len());
        assert_eq!(Sketch::from_bytes(&bytes)?, sparse);
        let dense = Sketch::from_hashes(hashes(7, 20_000));
        let bytes = dense.to_bytes();
        assert_eq!((bytes[0], bytes.len()), (TAG_HLL, REGISTERS + 2));
        assert_eq!(Sketch::from_bytes(&bytes)?, dense);
        Ok(())
    }

    #[test]
    fn unreadable_sketches_are_named() {
        let out_of_order = [TAG_HLL_SPARSE, 14, 5, 0, 1, 4, 0, 1];
        let too_high = [TAG_HLL_SPARSE, 14, 5, 0, 52];
        for bad in [
            &[][..],
            &[9, 1],
            &[TAG_EXACT, 1, 2, 3],
            &[TAG_HLL, 14, 0],
            &out_of_order,
            &too_high,
            &[TAG_HLL_SPARSE, 14, 0xFF, 0xFF, 1],
        ] {
            assert!(Sketch::from_bytes(bad).is_err(), "{bad:?}");
        }
        let unsorted = Sketch::Exact(vec![2, 1]).to_bytes();
        assert!(Sketch::from_bytes(&unsorted).is_err());
    }

    #[test]
    fn hashes_of_parts_are_hashes_of_their_concatenation() {
        assert_eq!(hash_parts(&[b"oaid:", b"X"]), hash_parts(&[b"oaid:X"]));
        assert_ne!(hash_parts(&[b"oaid:X"]), hash_parts(&[b"idfa:X"]));
        assert_eq!(
            hash_parts(&[b"idfa:X"]) as i64,
            crate::pipeline::quota::key_hash("idfa:X")
        );
    }
}
