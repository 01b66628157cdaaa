//! The string hash behind the static lexicon index.
//!
//! `build.rs` lays the lexicon out in an open-addressing table using this function and the
//! runtime probes the same table with it, so both sides must agree bit for bit: this file is
//! compiled twice, once into the build script (through `#[path]`) and once into the crate.

/// Multiplier of the per-word step (an odd 64-bit constant with well-spread bits).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes one 8-byte word into the state.
#[inline(always)]
pub fn step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(K).rotate_left(29)
}

/// The initial state for a string of `len` bytes.
#[inline(always)]
pub fn start(len: usize) -> u64 {
    0x243f_6a88_85a3_08d3 ^ len as u64
}

/// The final avalanche (MurmurHash3's `fmix64`), so both the low bits (the slot) and the
/// high bits (the tag) depend on every input byte.
#[inline(always)]
pub fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hash of `bytes`, taken eight bytes at a time (little-endian words, the last one padded
/// with zero bytes; the length is mixed in first, so padding cannot collide).
///
/// Word-at-a-time rather than byte-at-a-time: every loop iteration also pays a check in
/// WASM (the runtime's epoch interruption), and the scorer hashes every token. The scorer's
/// fast path computes the same value from its lowercase buffer (`hash_padded`); a test
/// holds the two equal.
pub fn word_hash(bytes: &[u8]) -> u64 {
    let mut h = start(bytes.len());
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        for (w, b) in word.iter_mut().zip(chunk) {
            *w = *b;
        }
        h = step(h, u64::from_le_bytes(word));
    }
    finish(h)
}
