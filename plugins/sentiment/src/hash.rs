//! The string hash behind the static lexicon index.
//!
//! `build.rs` lays the lexicon out in an open-addressing table using this function and the
//! runtime probes the same table with it, so both sides must agree bit for bit: this file is
//! compiled twice, once into the build script (through `#[path]`) and once into the crate.

/// 64-bit FNV-1a.
///
/// Lexicon keys and chat tokens are a few bytes long, where FNV's one-multiply-per-byte loop
/// is as fast as anything fancier and needs no seed. Flooding is not a concern: the table is
/// fixed at build time, so crafted input can only ever walk the probe chains that already
/// exist (their length is bounded when the table is built).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
