//! The capture file (see [the format](super)): a [`Writer`] of records into a zstd stream, a [`Reader`] of them
//! back. A reader never panics on what it reads: a record cut short, a bad header or bytes that are not zstd are
//! a [`CaptureError`] naming the offset (in the decompressed stream).

use std::io::{self, BufReader, Read, Write};

use super::CaptureError;

/// The first bytes of a capture's decompressed stream.
pub const MAGIC: &[u8] = b"HARRIER-CAPTURE 1\n";
/// The zstd level of [`Writer`]: zstd's default, fast enough for a worker's traffic on one thread.
const LEVEL: i32 = 3;

/// One datagram (or one batch of stream lines) as a listener received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was received, in nanoseconds since the Unix epoch.
    pub received_ns: u64,
    /// The listener's URL, e.g. `udp://127.0.0.1:8125`.
    pub listener: String,
    pub payload: Vec<u8>,
}

/// Writes the header, then records, into a zstd stream over `W`.
pub struct Writer<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, W>,
}

impl<W: Write> Writer<W> {
    /// A writer whose header is written (into the encoder: [`Writer::flush`] pushes it out).
    pub fn new(inner: W) -> Result<Writer<W>, CaptureError> {
        let mut encoder = zstd::stream::write::Encoder::new(inner, LEVEL).map_err(CaptureError::Write)?;
        encoder.write_all(MAGIC).map_err(CaptureError::Write)?;
        Ok(Writer { encoder })
    }

    /// Appends one record.
    pub fn write(&mut self, received_ns: u64, listener: &str, payload: &[u8]) -> Result<(), CaptureError> {
        let name_len = u16::try_from(listener.len()).map_err(|_| CaptureError::TooLong {
            what: "a listener name",
            len: listener.len(),
            max: u16::MAX.into(),
        })?;
        let payload_len = u32::try_from(payload.len()).map_err(|_| CaptureError::TooLong {
            what: "a payload",
            len: payload.len(),
            max: u32::MAX.into(),
        })?;
        let mut head = [0u8; 10];
        head[..8].copy_from_slice(&received_ns.to_le_bytes());
        head[8..10].copy_from_slice(&name_len.to_le_bytes());
        let e = &mut self.encoder;
        e.write_all(&head)
            .and_then(|()| e.write_all(listener.as_bytes()))
            .and_then(|()| e.write_all(&payload_len.to_le_bytes()))
            .and_then(|()| e.write_all(payload))
            .map_err(CaptureError::Write)
    }

    /// Appends `record`.
    pub fn write_record(&mut self, record: &Record) -> Result<(), CaptureError> {
        self.write(record.received_ns, &record.listener, &record.payload)
    }

    /// Compresses what was written so far and writes it out to `W` (ending a zstd block: the stream read so far
    /// is readable up to here).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.encoder.flush().map_err(CaptureError::Write)
    }

    /// The stream written to (what it holds is compressed output, complete up to the last flush).
    pub fn get_mut(&mut self) -> &mut W {
        self.encoder.get_mut()
    }

    /// Ends the zstd frame, and returns the stream written to.
    pub fn finish(self) -> Result<W, CaptureError> {
        self.encoder.finish().map_err(CaptureError::Write)
    }
}

/// Reads a capture: the header at [`Reader::new`], then records as an iterator, which ends after the first error.
pub struct Reader<R: Read> {
    decoder: zstd::stream::read::Decoder<'static, BufReader<R>>,
    /// Bytes of the decompressed stream read so far.
    offset: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Opens the zstd stream and checks the header.
    pub fn new(inner: R) -> Result<Reader<R>, CaptureError> {
        let decoder =
            zstd::stream::read::Decoder::new(inner).map_err(|source| CaptureError::Read { offset: 0, source })?;
        let mut reader = Reader {
            decoder,
            offset: 0,
            done: false,
        };
        let mut magic = [0u8; MAGIC.len()];
        let n = reader.fill(&mut magic)?;
        if magic[..n] != *MAGIC {
            return Err(CaptureError::NotACapture {
                found: String::from_utf8_lossy(&magic[..n]).into_owned(),
            });
        }
        Ok(reader)
    }

    /// Bytes of the decompressed stream read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads until `buf` is full or the stream ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        let mut n = 0;
        while n < buf.len() {
            match self.decoder.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Read {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(n)
    }

    /// Fills `buf` entirely, or fails: the record that starts at `start` is cut in `what`.
    fn exact(&mut self, buf: &mut [u8], start: u64, what: &'static str) -> Result<(), CaptureError> {
        if self.fill(buf)? < buf.len() {
            return Err(CaptureError::Truncated {
                offset: start,
                end: self.offset,
                what,
            });
        }
        Ok(())
    }

    /// The next record; None at the end of the stream between two records.
    fn next_record(&mut self) -> Result<Option<Record>, CaptureError> {
        let start = self.offset;
        let mut time = [0u8; 8];
        match self.fill(&mut time)? {
            0 => return Ok(None),
            8 => {}
            _ => {
                return Err(CaptureError::Truncated {
                    offset: start,
                    end: self.offset,
                    what: "its time",
                })
            }
        }
        let mut len = [0u8; 2];
        self.exact(&mut len, start, "its listener name's length")?;
        let mut name = vec![0u8; usize::from(u16::from_le_bytes(len))];
        self.exact(&mut name, start, "its listener name")?;
        let listener = String::from_utf8(name).map_err(|_| CaptureError::BadListener { offset: start })?;
        let mut len = [0u8; 4];
        self.exact(&mut len, start, "its payload's length")?;
        let len = u32::from_le_bytes(len);
        // Grown as the bytes come, not allocated at the length read: a bad length costs no memory.
        let mut payload = Vec::new();
        let got = (&mut self.decoder)
            .take(u64::from(len))
            .read_to_end(&mut payload)
            .map_err(|source| CaptureError::Read {
                offset: self.offset,
                source,
            })?;
        self.offset += got as u64;
        if got < len as usize {
            return Err(CaptureError::Truncated {
                offset: start,
                end: self.offset,
                what: "its payload",
            });
        }
        Ok(Some(Record {
            received_ns: u64::from_le_bytes(time),
            listener,
            payload,
        }))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(records: &[Record]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        for r in records {
            w.write_record(r).unwrap();
        }
        w.finish().unwrap()
    }

    fn compressed(plain: &[u8]) -> Vec<u8> {
        zstd::encode_all(plain, LEVEL).unwrap()
    }

    fn record(ns: u64, listener: &str, payload: &[u8]) -> Record {
        Record {
            received_ns: ns,
            listener: listener.to_string(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn the_decompressed_stream_is_the_header_then_the_documented_fields() {
        let file = written(&[record(0x0102, "udp://a", b"x:1|c")]);
        let plain = zstd::decode_all(&file[..]).unwrap();
        let mut expected = MAGIC.to_vec();
        expected.extend_from_slice(&0x0102u64.to_le_bytes());
        expected.extend_from_slice(&7u16.to_le_bytes());
        expected.extend_from_slice(b"udp://a");
        expected.extend_from_slice(&5u32.to_le_bytes());
        expected.extend_from_slice(b"x:1|c");
        assert_eq!(plain, expected);
    }

    #[test]
    fn an_empty_capture_has_no_records() {
        let file = written(&[]);
        assert_eq!(Reader::new(&file[..]).unwrap().count(), 0);
    }

    #[test]
    fn a_truncated_last_record_is_an_error_naming_its_offset() {
        let records = [record(1, "udp://a", b"first"), record(2, "udp://a", b"second")];
        let plain = zstd::decode_all(&written(&records)[..]).unwrap();
        let second = (MAGIC.len() + 8 + 2 + 7 + 4 + 5) as u64;
        for cut in [1, 9, 12, 20, plain.len() as u64 - second - 1] {
            let file = compressed(&plain[..(second + cut) as usize]);
            let mut reader = Reader::new(&file[..]).unwrap();
            assert_eq!(reader.next().unwrap().unwrap(), records[0]);
            match reader.next() {
                Some(Err(e @ CaptureError::Truncated { offset, .. })) => {
                    assert_eq!(offset, second, "cut at {cut}");
                    assert!(e.to_string().contains(&format!("at byte {second}")), "{e}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert!(reader.next().is_none(), "the reader ends after an error");
        }
    }

    #[test]
    fn a_stream_that_is_not_a_capture_is_refused_at_the_header() {
        let e = Reader::new(&compressed(b"HARRIER-CAPTURE 2\nrest")[..]).err().unwrap();
        assert!(matches!(e, CaptureError::NotACapture { .. }), "{e}");
        let e = Reader::new(&b"plain text, not zstd"[..]).err().unwrap();
        assert!(matches!(e, CaptureError::Read { offset: 0, .. }), "{e}");
    }

    #[test]
    fn a_zstd_stream_cut_in_the_middle_gives_the_records_before_then_an_error() {
        let records: Vec<Record> = (0..50u64)
            .map(|i| record(i, "udp://a", format!("m{i}:1|c").as_bytes()))
            .collect();
        // Flushed after the first 25, as a capture hands on its chunks.
        let mut w = Writer::new(Vec::new()).unwrap();
        for (i, r) in records.iter().enumerate() {
            w.write_record(r).unwrap();
            if i == 24 {
                w.flush().unwrap();
            }
        }
        let file = w.finish().unwrap();
        let cut = &file[..file.len() - 3];
        let read: Vec<_> = Reader::new(cut).unwrap().collect();
        assert!(read.last().is_some_and(|r| r.is_err()), "{read:?}");
        let good: Vec<&Record> = read.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(good.len() >= 25, "{} records before the cut", good.len());
        for (got, want) in good.into_iter().zip(&records) {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_name_or_payload_too_long_for_its_length_field_is_refused() {
        let mut w = Writer::new(Vec::new()).unwrap();
        let e = w.write(1, &"u".repeat(70_000), b"").unwrap_err();
        assert!(e.to_string().contains("a listener name of 70000 bytes"), "{e}");
    }

    fn any_record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            "[a-z:/.0-9]{0,30}",
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(received_ns, listener, payload)| Record {
                received_ns,
                listener,
                payload,
            })
    }

    proptest! {
        #[test]
        fn records_written_read_back_equal(records in proptest::collection::vec(any_record(), 0..40)) {
            let file = written(&records);
            let read: Vec<Record> = Reader::new(&file[..]).unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(read, records);
        }

        #[test]
        fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            if let Ok(reader) = Reader::new(&bytes[..]) {
                for _ in reader {}
            }
        }

        #[test]
        fn random_records_after_a_good_header_never_panic_the_reader(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000)
        ) {
            let mut plain = MAGIC.to_vec();
            plain.extend_from_slice(&bytes);
            let file = compressed(&plain);
            let reader = Reader::new(&file[..]).unwrap();
            for r in reader {
                if let Err(e) = r {
                    let _ = e.to_string();
                }
            }
        }
    }
}
