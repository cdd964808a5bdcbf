//! A fuzz input read as a program: a cursor over the bytes that yields zeros once they run
//! out, so every input is a valid (if short) program.
#![allow(dead_code)]

use bytes::Bytes;

/// In the workspace test (`fuzz_seeds.rs`) with `FUZZ_TRACE` set, the program targets print
/// every step: `FUZZ_TRACE=1 cargo test -p coapws-proto --test fuzz_seeds -- --nocapture`.
/// Compiled out of the libFuzzer builds.
pub fn trace() -> bool {
    cfg!(test) && std::env::var_os("FUZZ_TRACE").is_some()
}

pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A number in `0..n` (`n` ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }
    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    /// Up to `n` bytes of the input (fewer when it runs out).
    pub fn bytes(&mut self, n: usize) -> Bytes {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        Bytes::copy_from_slice(&self.data[start..end])
    }
    /// A byte string of a fuzz-chosen length below `below`.
    pub fn short(&mut self, below: u8) -> Bytes {
        let n = usize::from(self.u8() % below.max(1));
        self.bytes(n)
    }
    /// A payload: usually small, sometimes large (filled with a fuzz-chosen byte, so that a
    /// short input can still ask for a message past any limit).
    pub fn payload(&mut self) -> Bytes {
        match self.u8() {
            0..=191 => self.short(32),
            192..=239 => {
                let n = usize::from(self.u16() % 5000);
                Bytes::from(vec![self.u8(); n])
            }
            _ => {
                let n = 60_000 + usize::from(self.u16() % 20_000);
                Bytes::from(vec![self.u8(); n])
            }
        }
    }
}
