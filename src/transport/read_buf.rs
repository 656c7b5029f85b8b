//! The scratch buffer a connection reads its socket into.

use bytes::BytesMut;

/// Starts at [`ReadBuf::MIN`] and doubles, up to [`ReadBuf::MAX`], each
/// time a read fills it. A broker holds 100k idle clients and a load tool
/// opens thousands at once: a zeroed 64 KiB buffer each made both spend
/// half their CPU zeroing fresh pages (perf/README.md). A busy connection
/// still reaches 64 KiB per read within a few reads.
#[derive(Debug)]
pub struct ReadBuf(Vec<u8>);

impl ReadBuf {
    /// A new connection's buffer.
    pub const MIN: usize = 2 * 1024;
    /// Largest read a busy connection makes at once.
    pub const MAX: usize = 64 * 1024;

    /// Where the next read goes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Appends the `n` bytes the last read put in [`space`](Self::space) to
    /// `dst`, and grows for the next read if this one filled the buffer.
    pub fn append_to(&mut self, n: usize, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.0[..n]);
        self.grow_if_filled(n);
    }

    /// Grows for the next read if the last one (`n` bytes) filled the buffer.
    pub fn grow_if_filled(&mut self, n: usize) {
        if n == self.0.len() && self.0.len() < Self::MAX {
            self.0 = vec![0u8; self.0.len() * 2];
        }
    }
}

impl Default for ReadBuf {
    fn default() -> Self {
        ReadBuf(vec![0u8; Self::MIN])
    }
}
