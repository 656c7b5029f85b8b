//! Wire primitives shared by every packet: integers, Variable Byte Integers,
//! UTF-8 strings and binary data, read from a [`Bytes`] frame without copying.
//!
//! Decoding reads from a [`Reader`] over one complete packet body: running out
//! of bytes here is a malformed packet, never "need more data" (the framing in
//! [`super::codec`] already waited for the whole packet). Encoding writes to a
//! [`Sink`], which is either a real buffer or a byte counter, so every packet has
//! one function that both sizes and writes it.

use bytes::Bytes;
use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Deref;

use super::error::{DecodeError, EncodeError};

/// The largest value a Variable Byte Integer can carry (four bytes).
pub const MAX_VARINT: u32 = 268_435_455;

/// A validated MQTT UTF-8 Encoded String that borrows the packet's buffer.
///
/// Invariant: the bytes are well-formed UTF-8 without U+0000 and at most
/// 65,535 bytes long ([MQTT-1.5.4-1], [MQTT-1.5.4-2]). A BOM (U+FEFF) is kept
/// as it is, never stripped ([MQTT-1.5.4-3]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttStr(Bytes);

impl MqttStr {
    /// Validates `bytes` as an MQTT string.
    ///
    /// # Errors
    /// [`DecodeError::InvalidUtf8`], [`DecodeError::NullCharacter`] or
    /// [`DecodeError::StringTooLong`].
    pub fn from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        Self::checked(bytes, &mut Scan::default())
    }

    /// Validates `bytes` and reports in `scan` what it found (wildcards),
    /// in one pass over the common ASCII case.
    pub(crate) fn checked(bytes: Bytes, scan: &mut Scan) -> Result<Self, DecodeError> {
        if bytes.len() > u16::MAX as usize {
            return Err(DecodeError::StringTooLong);
        }
        *scan = Scan::of(&bytes);
        if scan.non_ascii && std::str::from_utf8(&bytes).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        if scan.nul {
            return Err(DecodeError::NullCharacter);
        }
        Ok(MqttStr(bytes))
    }

    /// Builds a string from a static literal.
    ///
    /// # Panics
    /// If the literal is not a valid MQTT string (a programming error).
    pub fn from_static(s: &'static str) -> Self {
        Self::from_bytes(Bytes::from_static(s.as_bytes()))
            .expect("invariant: static MQTT strings are valid")
    }

    /// The string's text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checked that the bytes are UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes (shares the buffer).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl TryFrom<&str> for MqttStr {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for MqttStr {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        Self::from_bytes(Bytes::from(s))
    }
}

impl Deref for MqttStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one pass over a string's bytes found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Scan {
    /// A zero byte (U+0000).
    pub nul: bool,
    /// A byte of 0x80 or more: the text needs full UTF-8 validation.
    pub non_ascii: bool,
    /// A `+` or `#`.
    pub wildcard: bool,
}

impl Scan {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    /// True if some byte of `x` is zero (exact, SWAR).
    #[inline]
    fn has_zero(x: u64) -> bool {
        x.wrapping_sub(Self::LO) & !x & Self::HI != 0
    }

    /// Scans eight bytes at a time: topic names are validated on every
    /// PUBLISH, and three byte-by-byte passes cost more than the rest of
    /// decoding. `#` (0x23) and `+` (0x2B) differ only in bit 3, so one
    /// zero test after setting that bit finds both. A tail shorter than
    /// eight bytes is read as the last eight (overlapping), or padded.
    #[inline]
    pub fn of(b: &[u8]) -> Scan {
        const PAD: u64 = Scan::LO * 0x61; // 'a': neutral for every test
        let mut nul = false;
        let mut wild = false;
        let mut high = 0u64;
        let mut check = |x: u64| {
            high |= x;
            nul |= Self::has_zero(x);
            wild |= Self::has_zero((x | (Self::LO * 0x08)) ^ (Self::LO * 0x2B));
        };
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            check(u64::from_le_bytes(c.try_into().unwrap_or([0x61; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let x = match b.len().checked_sub(8) {
                Some(from) => {
                    let tail: [u8; 8] = b
                        .get(from..)
                        .and_then(|t| t.try_into().ok())
                        .unwrap_or([0x61; 8]);
                    u64::from_le_bytes(tail)
                }
                None => {
                    let mut t = PAD.to_le_bytes();
                    for (d, s) in t.iter_mut().zip(rest) {
                        *d = *s;
                    }
                    u64::from_le_bytes(t)
                }
            };
            check(x);
        }
        Scan {
            nul,
            non_ascii: high & Self::HI != 0,
            wildcard: wild,
        }
    }
}

/// Number of bytes the Variable Byte Integer encoding of `v` takes.
pub fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The Variable Byte Integer encoding of `v` (at most [`MAX_VARINT`]):
/// the bytes and how many of them are used.
#[inline]
pub fn encode_varint(mut v: u32) -> ([u8; 4], usize) {
    let mut out = [0u8; 4];
    let mut n = 0;
    for slot in out.iter_mut() {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        *slot = byte;
        n += 1;
        if v == 0 {
            break;
        }
    }
    (out, n)
}

/// Outcome of reading a Variable Byte Integer from a buffer that may be incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarIntRead {
    /// The value and the number of bytes it took.
    Done(u32, usize),
    /// More bytes are needed.
    Incomplete,
}

/// Reads a Variable Byte Integer from the start of `buf`.
///
/// # Errors
/// [`DecodeError::MalformedVarInt`] for a fifth continuation byte and
/// [`DecodeError::NonMinimalVarInt`] for an encoding longer than needed
/// ([MQTT-1.5.5-1]).
pub fn read_varint(buf: &[u8]) -> Result<VarIntRead, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A multi-byte encoding whose last byte is zero could have been shorter.
            if i > 0 && byte == 0 {
                return Err(DecodeError::NonMinimalVarInt);
            }
            return Ok(VarIntRead::Done(value, i + 1));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVarInt)
    } else {
        Ok(VarIntRead::Incomplete)
    }
}

/// A cursor over one complete packet body. Slices share the frame's buffer.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a big-endian Two Byte Integer.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Ok(u16::from_be_bytes([hi, lo]))
    }

    /// Reads a big-endian Four Byte Integer.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok((u32::from(self.u16()?) << 16) | u32::from(self.u16()?))
    }

    /// Reads a Variable Byte Integer.
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(self.buf.get(self.pos..).unwrap_or_default())? {
            VarIntRead::Done(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarIntRead::Incomplete => Err(DecodeError::Truncated),
        }
    }

    /// Reads Binary Data (two-byte length, then bytes).
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    /// Reads a UTF-8 Encoded String.
    pub fn string(&mut self) -> Result<MqttStr, DecodeError> {
        let b = self.binary()?;
        MqttStr::from_bytes(b)
    }

    /// Reads a UTF-8 Encoded String, reporting what the scan found.
    pub(crate) fn string_scanned(&mut self, scan: &mut Scan) -> Result<MqttStr, DecodeError> {
        let b = self.binary()?;
        MqttStr::checked(b, scan)
    }

    /// Splits off the next `n` bytes as a reader of their own.
    pub fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n)?))
    }

    /// Everything not read yet (moved out: no reference count traffic).
    pub fn rest(&mut self) -> Bytes {
        let mut out = std::mem::take(&mut self.buf);
        bytes::Buf::advance(&mut out, self.pos);
        self.pos = 0;
        out
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Where encoded bytes go: reserved buffer space ([`Writer`]), or a
/// [`Counter`] that only sizes a packet. Every encoder is one function over
/// `Sink`, run once to size and once to write, so the two cannot drift.
pub trait Sink {
    /// Writes one byte.
    fn put_u8(&mut self, v: u8);
    /// Writes a big-endian Two Byte Integer.
    fn put_u16(&mut self, v: u16);
    /// Writes a big-endian Four Byte Integer.
    fn put_u32(&mut self, v: u32);
    /// Writes raw bytes.
    fn put_slice(&mut self, v: &[u8]);
    /// Writes a Variable Byte Integer (`v` must be at most [`MAX_VARINT`]).
    fn put_varint(&mut self, v: u32);

    /// Writes what `body` writes, whose size the caller already knows to be
    /// `len` (a counter adds it without running `body`).
    ///
    /// # Errors
    /// What `body` returns.
    #[inline]
    fn put_sized<F>(&mut self, len: usize, body: F) -> Result<(), EncodeError>
    where
        Self: Sized,
        F: FnOnce(&mut Self) -> Result<(), EncodeError>,
    {
        let _ = len;
        body(self)
    }

    /// Writes Binary Data or a string: two-byte length, then the bytes.
    ///
    /// # Errors
    /// [`EncodeError::StringTooLong`] past 65,535 bytes.
    fn put_binary(&mut self, v: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError::StringTooLong)?;
        self.put_u16(len);
        self.put_slice(v);
        Ok(())
    }
}

/// A [`Sink`] that counts bytes.
#[derive(Debug, Default)]
pub struct Counter(pub usize);

impl Sink for Counter {
    #[inline]
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    #[inline]
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    #[inline]
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    #[inline]
    fn put_slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
    #[inline]
    fn put_varint(&mut self, v: u32) {
        self.0 += varint_len(v);
    }
    #[inline]
    fn put_sized<F>(&mut self, len: usize, _: F) -> Result<(), EncodeError>
    where
        F: FnOnce(&mut Self) -> Result<(), EncodeError>,
    {
        self.0 += len;
        Ok(())
    }
}

/// A [`Sink`] over spare capacity reserved for exactly one packet, sized
/// beforehand by a [`Counter`] pass over the same writer function: fields
/// become plain stores instead of a capacity check and a `memcpy` call each
/// (which is what `BufMut` costs per field). A write that would pass the end
/// (the two passes disagreeing: a bug) is refused and remembered, never done.
pub(crate) struct Writer<'a> {
    /// What is left to fill.
    rest: &'a mut [MaybeUninit<u8>],
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(dst: &'a mut [MaybeUninit<u8>]) -> Self {
        Writer {
            rest: dst,
            overflow: false,
        }
    }

    /// Whether every byte was written and no write was refused.
    pub(crate) fn filled(&self) -> bool {
        !self.overflow && self.rest.is_empty()
    }

    #[inline(always)]
    fn put_array<const N: usize>(&mut self, v: [u8; N]) {
        let rest = std::mem::take(&mut self.rest);
        if rest.len() < N {
            self.rest = rest;
            self.overflow = true;
            return;
        }
        let (head, tail) = rest.split_at_mut(N);
        for (d, s) in head.iter_mut().zip(v) {
            d.write(s);
        }
        self.rest = tail;
    }
}

impl Sink for Writer<'_> {
    #[inline(always)]
    fn put_u8(&mut self, v: u8) {
        self.put_array([v]);
    }
    #[inline(always)]
    fn put_u16(&mut self, v: u16) {
        self.put_array(v.to_be_bytes());
    }
    #[inline(always)]
    fn put_u32(&mut self, v: u32) {
        self.put_array(v.to_be_bytes());
    }
    #[inline]
    fn put_slice(&mut self, v: &[u8]) {
        let rest = std::mem::take(&mut self.rest);
        if rest.len() < v.len() {
            self.rest = rest;
            self.overflow = true;
            return;
        }
        let (head, tail) = rest.split_at_mut(v.len());
        // SAFETY: `head` is exactly `v.len()` bytes (split above); `v` is a
        // separate borrowed slice, so the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), head.as_mut_ptr().cast::<u8>(), v.len());
        }
        self.rest = tail;
    }
    #[inline]
    fn put_varint(&mut self, v: u32) {
        let (bytes, n) = encode_varint(v);
        match n {
            1 => self.put_array([bytes[0]]),
            2 => self.put_array([bytes[0], bytes[1]]),
            3 => self.put_array([bytes[0], bytes[1], bytes[2]]),
            _ => self.put_array(bytes),
        }
    }
}
