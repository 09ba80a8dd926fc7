//! The blocking HTTP/1.1 GET of the command-line tools (`harrier top`, `harrier capture`): one request over a
//! [`TcpStream`] with `Connection: close`, every read and write bounded by a timeout, and a body read as it
//! arrives (by `Content-Length`, chunked transfer encoding, or up to the close). No runtime, no TLS: the debug
//! endpoints are plain HTTP on `http_address`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The most a status line or a header line may take.
const MAX_LINE: usize = 16 * 1024;
/// The most headers an answer may have.
const MAX_HEADERS: usize = 100;
/// The most of an error answer's body kept for the message.
const MAX_ERROR_BODY: u64 = 1024;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address does not resolve.
    #[error("cannot resolve {address:?} as HOST:PORT: {reason}")]
    Address { address: String, reason: String },
    /// No connection.
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    /// The connection failed while sending or reading.
    #[error("GET {url}: {source}")]
    Io { url: String, source: io::Error },
    /// What came back is not an HTTP/1.x answer.
    #[error("GET {url}: not an HTTP answer: {reason}")]
    Malformed { url: String, reason: String },
    /// The server answered, with a status other than 200.
    #[error("GET {url}: the server answered {status} {reason}{}", body_suffix(.body))]
    Status {
        url: String,
        status: u16,
        reason: String,
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// An answer whose status line and headers were read; its body is read from it.
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The URL asked for, for messages.
    pub url: String,
    body: Body,
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

enum Body {
    Length(io::Take<BufReader<TcpStream>>),
    Chunked(Chunked<BufReader<TcpStream>>),
    Close(BufReader<TcpStream>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Length(r) => r.read(buf),
            Body::Chunked(r) => r.read(buf),
            Body::Close(r) => r.read(buf),
        }
    }
}

/// `GET path_and_query` of `address` (`HOST:PORT`, an `http://` before it is allowed); `timeout` bounds the
/// connection and each read and write. Any status is returned.
pub fn get(address: &str, path_and_query: &str, timeout: Duration) -> Result<Response, HttpError> {
    let address = address.strip_prefix("http://").unwrap_or(address).trim_end_matches('/');
    let url = format!("http://{address}{path_and_query}");
    let io_err = |source| HttpError::Io {
        url: url.clone(),
        source,
    };
    let conn = connect(address, timeout)?;
    conn.set_read_timeout(Some(timeout)).map_err(io_err)?;
    conn.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: harrier/{}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        crate::VERSION
    );
    (&conn).write_all(request.as_bytes()).map_err(io_err)?;
    let mut reader = BufReader::new(conn);
    let malformed = |reason: String| HttpError::Malformed {
        url: url.clone(),
        reason,
    };
    let status_line = read_line(&mut reader).map_err(io_err)?;
    let (status, reason) = parse_status_line(&status_line).map_err(malformed)?;
    let mut length = None;
    let mut chunked = false;
    for n in 0.. {
        let line = read_line(&mut reader).map_err(io_err)?;
        if line.is_empty() {
            break;
        }
        if n == MAX_HEADERS {
            return Err(malformed(format!("more than {MAX_HEADERS} headers")));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("header line {line:?} has no ':'")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| malformed(format!("Content-Length {value:?} is not a number")))?;
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|e| e.trim() == "chunked");
        }
    }
    let body = match (chunked, length) {
        (true, _) => Body::Chunked(Chunked::new(reader)),
        (false, Some(n)) => Body::Length(reader.take(n)),
        (false, None) => Body::Close(reader),
    };
    Ok(Response {
        status,
        reason,
        url,
        body,
    })
}

/// [`get`], with any status but 200 an [`HttpError::Status`] (with the start of the body).
pub fn get_ok(address: &str, path_and_query: &str, timeout: Duration) -> Result<Response, HttpError> {
    let response = get(address, path_and_query, timeout)?;
    if response.status == 200 {
        return Ok(response);
    }
    let mut body = Vec::new();
    let (status, reason, url) = (response.status, response.reason.clone(), response.url.clone());
    // The body only makes the message clearer: a failure to read it is not the error.
    let _ = response.take(MAX_ERROR_BODY).read_to_end(&mut body);
    Err(HttpError::Status {
        url,
        status,
        reason,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn connect(address: &str, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| HttpError::Address {
            address: address.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(source) => HttpError::Connect {
            address: address.to_string(),
            source,
        },
        None => HttpError::Address {
            address: address.to_string(),
            reason: "no address".to_string(),
        },
    })
}

/// `HTTP/1.1 200 OK` into (200, "OK").
fn parse_status_line(line: &str) -> Result<(u16, String), String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("no status code in {line:?}"))?;
    Ok((status, parts.next().unwrap_or_default().trim().to_string()))
}

/// One line without its `\r\n` (or `\n`), at most [`MAX_LINE`] bytes; an end of stream before it is an error.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        let what = if line.len() > MAX_LINE {
            "a line too long"
        } else {
            "the connection closed in the middle of the headers"
        };
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a header line is not UTF-8"))
}

/// A chunked transfer-encoded body, decoded.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// A chunk was read (so a CRLF comes before the next size line).
    started: bool,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            started: false,
            done: false,
        }
    }

    /// Reads the next chunk's size line (after the previous chunk's CRLF); at the last chunk, its trailers.
    fn next_chunk(&mut self) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        if std::mem::replace(&mut self.started, true) {
            let end = read_line(&mut self.inner)?;
            if !end.is_empty() {
                return Err(bad(format!("a chunk is followed by {end:?}, not CRLF")));
            }
        }
        let line = read_line(&mut self.inner)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        self.left =
            u64::from_str_radix(size, 16).map_err(|_| bad(format!("chunk size {size:?} is not hexadecimal")))?;
        if self.left == 0 {
            while !read_line(&mut self.inner)?.is_empty() {}
            self.done = true;
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.done && self.left == 0 {
            self.next_chunk()?;
        }
        if self.done {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed in the middle of a chunk",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that reads one request and answers `answer`, then closes; returns its address.
    fn answering(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            conn.write_all(answer).unwrap();
        });
        address
    }

    fn body(answer: &'static [u8]) -> Result<Vec<u8>, HttpError> {
        let mut r = get_ok(&answering(answer), "/x", Duration::from_secs(5))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|source| HttpError::Io {
            url: "x".into(),
            source,
        })?;
        Ok(out)
    }

    #[test]
    fn a_body_is_read_by_its_length_by_chunks_or_up_to_the_close() {
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more").unwrap(),
            b"hello"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n\
                        7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(body(chunked).unwrap(), b"hello, world");
        assert_eq!(body(b"HTTP/1.0 200 OK\n\nto the end").unwrap(), b"to the end");
    }

    #[test]
    fn a_status_other_than_200_is_an_error_with_the_status_and_the_body() {
        let e = body(b"HTTP/1.1 409 Conflict\r\nContent-Length: 7\r\n\r\nbusy.\r\n").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, HttpError::Status { status: 409, .. }), "{text}");
        assert!(text.ends_with("the server answered 409 Conflict: busy."), "{text}");
    }

    #[test]
    fn a_cut_chunk_or_a_bad_answer_is_an_error_not_a_panic() {
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort";
        assert!(body(cut).is_err());
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(body(bad_size).is_err());
        let e = body(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert!(matches!(e, HttpError::Malformed { .. }), "{e}");
    }

    #[test]
    fn a_closed_port_is_a_connect_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = get(&address, "/", Duration::from_secs(2)).err().unwrap();
        assert!(
            e.to_string().starts_with(&format!("cannot connect to {address}")),
            "{e}"
        );
    }
}
