//! Any bytes, read in arbitrary pieces from a stream connection: cutting newline-delimited lines and
//! length-prefixed frames never panics, hands on only packets within the limit, and the lines handed on are
//! exactly those of the whole input that fit (whatever the pieces).
#![no_main]

use harrier::listen::framing::{cut_frames, Lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte sets the limit, the second how the rest is cut into reads.
    let max = usize::from(data[0]) + 1;
    let piece = usize::from(data[1] % 64) + 1;
    let input = &data[2..];

    // Lines, read piece by piece.
    let mut framer = Lines::new(max);
    let (mut buf, mut got) = (Vec::new(), Vec::new());
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        framer.cut(&buf, &mut start, |l| {
            assert!(l.len() <= max && !l.contains(&b'\n'));
            got.push(l.to_vec());
            true
        });
        buf.drain(..start);
        if framer.drop_partial(buf.len()) {
            buf.clear();
        }
    }
    // Read whole, the complete lines that fit are the same.
    let want: Vec<Vec<u8>> = {
        let complete = match input.iter().rposition(|&b| b == b'\n') {
            Some(end) => &input[..end],
            None => &[][..],
        };
        if input.contains(&b'\n') {
            complete.split(|&b| b == b'\n').filter(|l| l.len() <= max).map(<[u8]>::to_vec).collect()
        } else {
            Vec::new()
        }
    };
    assert_eq!(got, want);

    // Frames, read piece by piece: never more than the input, each within the limit.
    let mut buf = Vec::new();
    let mut total = 0;
    'reads: for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        let mut start = 0;
        let cut = cut_frames(&buf, &mut start, max, |f| {
            assert!(f.len() <= max);
            total += 4 + f.len();
        });
        buf.drain(..start);
        if cut.is_err() {
            break 'reads;
        }
    }
    assert!(total <= input.len());
});
