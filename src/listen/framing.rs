//! How a stream connection's bytes are cut into packets, apart from the reading (so that it can be fuzzed and
//! tested alone): newline-delimited lines (TCP, TLS) and 4-byte little-endian length-prefixed frames (unix stream
//! sockets, as datadog-go writes them).

/// Cuts newline-delimited lines. A line longer than `max` is dropped (up to its newline) and counted; the
/// connection goes on.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    /// The line in progress is over the limit: drop everything up to its newline.
    discarding: bool,
    /// Lines dropped for their length since the last [`Lines::take_oversize`].
    oversize: u64,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines {
            max,
            discarding: false,
            oversize: 0,
        }
    }

    /// Cuts the complete lines of `buf[*start..]`, handing each one within the limit to `emit`, until `emit`
    /// answers false (its batch is full: call again after sending it) or no complete line is left. `*start`
    /// moves past every line cut.
    pub fn cut(&mut self, buf: &[u8], start: &mut usize, mut emit: impl FnMut(&[u8]) -> bool) {
        while let Some(pos) = memchr::memchr(b'\n', &buf[*start..]) {
            let line = &buf[*start..*start + pos];
            *start += pos + 1;
            if self.discarding {
                self.discarding = false;
            } else if line.len() > self.max {
                self.oversize += 1;
            } else if !emit(line) {
                return;
            }
        }
    }

    /// After the complete lines are cut: whether the line in progress (`rest` bytes so far) must be dropped,
    /// because it is already over the limit. The caller then clears it; the rest of it, up to its newline, is
    /// dropped too.
    pub fn drop_partial(&mut self, rest: usize) -> bool {
        if rest <= self.max {
            return false;
        }
        if !self.discarding {
            self.oversize += 1;
        }
        self.discarding = true;
        true
    }

    /// The last line, without its newline, when the client closed the connection: kept if within the limit and
    /// not the tail of a dropped line (as the agent does; a connection cut short may end in a fragment, and the
    /// caller does not call this then).
    pub fn last<'a>(&self, rest: &'a [u8]) -> Option<&'a [u8]> {
        (!self.discarding && !rest.is_empty() && rest.len() <= self.max).then_some(rest)
    }

    /// Lines dropped for their length since the last call.
    pub fn take_oversize(&mut self) -> u64 {
        std::mem::take(&mut self.oversize)
    }
}

/// Why a connection of length-prefixed frames is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong(pub usize);

/// Cuts the complete length-prefixed frames of `buf[*start..]`, handing each to `emit`; `*start` moves past them.
/// A frame longer than `max` is an error (the connection is closed, as the agent does): what came before it was
/// handed on.
pub fn cut_frames(buf: &[u8], start: &mut usize, max: usize, mut emit: impl FnMut(&[u8])) -> Result<(), FrameTooLong> {
    while buf.len() - *start >= 4 {
        let s = *start;
        let len = u32::from_le_bytes([buf[s], buf[s + 1], buf[s + 2], buf[s + 3]]) as usize;
        if len > max {
            return Err(FrameTooLong(len));
        }
        if buf.len() - s - 4 < len {
            break;
        }
        emit(&buf[s + 4..s + 4 + len]);
        *start = s + 4 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` as successive reads and returns the lines handed on and the count dropped.
    fn lines(max: usize, chunks: &[&[u8]], closed: bool) -> (Vec<Vec<u8>>, u64) {
        let mut framer = Lines::new(max);
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for c in chunks {
            buf.extend_from_slice(c);
            let mut start = 0;
            framer.cut(&buf, &mut start, |l| {
                out.push(l.to_vec());
                true
            });
            buf.drain(..start);
            if framer.drop_partial(buf.len()) {
                buf.clear();
            }
        }
        if closed {
            if let Some(l) = framer.last(&buf) {
                out.push(l.to_vec());
            }
        }
        (out, framer.take_oversize())
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_long_ones_dropped_once() {
        let (out, dropped) = lines(5, &[b"ab", b"c\nxxxx", b"xxxx", b"xx\nok\nlast"], true);
        assert_eq!(out, vec![b"abc".to_vec(), b"ok".to_vec(), b"last".to_vec()]);
        assert_eq!(dropped, 1, "the long line is counted once though seen in three reads");
    }

    #[test]
    fn a_last_line_without_newline_counts_only_when_the_client_closed() {
        assert_eq!(lines(10, &[b"a\nb"], false).0, vec![b"a".to_vec()]);
        assert_eq!(lines(10, &[b"a\nb"], true).0, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn cutting_stops_when_the_batch_is_full_and_resumes_where_it_stopped() {
        let mut framer = Lines::new(100);
        let buf = b"a\nb\nc\n";
        let mut start = 0;
        let mut got = Vec::new();
        framer.cut(buf, &mut start, |l| {
            got.push(l.to_vec());
            false
        });
        assert_eq!((got.len(), start), (1, 2));
        framer.cut(buf, &mut start, |l| {
            got.push(l.to_vec());
            true
        });
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn frames_are_cut_whole_and_a_frame_over_the_limit_is_an_error() {
        let mut buf = Vec::new();
        for f in [&b"one"[..], b"", b"three"] {
            buf.extend_from_slice(&(f.len() as u32).to_le_bytes());
            buf.extend_from_slice(f);
        }
        buf.extend_from_slice(&[9, 0, 0]);
        let (mut start, mut out) = (0, Vec::new());
        assert_eq!(cut_frames(&buf, &mut start, 10, |f| out.push(f.to_vec())), Ok(()));
        assert_eq!(out, vec![b"one".to_vec(), b"".to_vec(), b"three".to_vec()]);
        assert_eq!(start, buf.len() - 3, "the incomplete header waits");
        let mut big = 11u32.to_le_bytes().to_vec();
        big.extend_from_slice(&[0; 11]);
        assert_eq!(cut_frames(&big, &mut 0, 10, |_| ()), Err(FrameTooLong(11)));
    }
}
