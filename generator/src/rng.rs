//! Deterministic random streams.
//!
//! One `u64` seed gives one ChaCha8 key (`ChaCha8Rng::seed_from_u64(seed)`). Every consumer of
//! randomness then reads its own ChaCha *stream* under that key, numbered by
//! [`stream_id`]`(domain, id)` = FNV-1a 64 of `domain/id`:
//!
//! | stream | used for |
//! |---|---|
//! | `reading/<device id>` | the device's static quirks, then its clean readings, tick by tick |
//! | `fault/<device id>` | the fault decisions for that device's records |
//! | `incidents/periodic` | the periodic incident checks |
//! | `burst/<index>` | the incidents of the `index`-th `[[incident_burst]]` |
//! | `fault/incidents` | the fault decisions for incident records |
//!
//! Because streams are keyed by names rather than by positions, adding a device, a fault or a
//! burst never shifts the numbers another consumer draws: the clean data of a device depends on
//! the seed, its id and the time only.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// FNV-1a, 64-bit: a fixed, portable hash for naming streams (std's hashers are not stable across
/// releases, so they cannot name a stream that must reproduce forever).
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The ChaCha stream number of `domain/id` (see the module docs for the domains).
pub fn stream_id(domain: &str, id: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in domain.as_bytes().iter().chain(b"/").chain(id.as_bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The seed's ChaCha key, from which every named stream is cut.
#[derive(Clone, Debug)]
pub(crate) struct Streams {
    base: ChaCha8Rng,
}

impl Streams {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            base: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A fresh generator positioned at the start of stream `domain/id`.
    pub(crate) fn stream(&self, domain: &str, id: &str) -> ChaCha8Rng {
        let mut rng = self.base.clone();
        rng.set_stream(stream_id(domain, id));
        rng
    }
}

/// The `i`-th of the five 12-bit uniforms packed in one 64-bit draw, in `[0, 1)`.
///
/// Noise needs no more resolution than 1/4096, and one ChaCha word then feeds a whole reading.
#[inline]
pub(crate) fn unit12(bits: u64, i: u32) -> f64 {
    ((bits >> (12 * i)) & 0xFFF) as f64 * (1.0 / 4096.0)
}

/// A symmetric triangular variate in `(-1, 1)` (mean 0, standard deviation 1/√6 ≈ 0.41) from two
/// of the 12-bit uniforms: bell-shaped enough for sensor noise and free of `ln`/`sqrt`.
#[inline]
pub(crate) fn tri12(bits: u64, i: u32, j: u32) -> f64 {
    unit12(bits, i) + unit12(bits, j) - (1.0 - 1.0 / 4096.0)
}

/// A uniform in `[0, 1)` with 53 bits of resolution.
#[inline]
pub(crate) fn unit53(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// A uniform integer in `0..n` (`n > 0`); the modulo bias is below 2^-50 for the small `n` used.
#[inline]
pub(crate) fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the FNV-1a implementation matches the published test vectors, so stream numbers are
    // stable.
    #[test]
    fn fnv_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(stream_id("reading", "TS-001"), fnv1a64(b"reading/TS-001"));
    }

    // Proves two names give different streams and one name always the same stream.
    #[test]
    fn streams_are_named() {
        let s = Streams::new(7);
        let a1 = s.stream("reading", "TS-001").next_u64();
        let a2 = s.stream("reading", "TS-001").next_u64();
        let b = s.stream("reading", "TS-002").next_u64();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, Streams::new(8).stream("reading", "TS-001").next_u64());
    }

    // Proves the packed uniforms stay in range and the triangular variate is centred.
    #[test]
    fn packed_uniforms() {
        assert_eq!(unit12(0, 0), 0.0);
        assert!(unit12(u64::MAX, 4) < 1.0);
        assert!((tri12(u64::MAX, 0, 1) - (1.0 - 1.0 / 4096.0)).abs() < 1e-12);
        assert!((tri12(0, 0, 1) + (1.0 - 1.0 / 4096.0)).abs() < 1e-12);
    }
}
