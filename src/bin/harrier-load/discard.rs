//! `--discard`: a receiver that only receives (`recvmmsg`) and counts, which gives the machine's receive floor.
//! Prints the datagrams received in each second and a summary on stderr, then the count of datagrams on stdout
//! (which `benches/e2e.sh` reads).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::mmsg::headers_for;

/// Receives and counts datagrams with `recvmmsg`, nothing else: the receive floor of this machine.
pub(crate) fn run(listen: SocketAddr, duration: Duration) -> Result<(), String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(|e| e.to_string())?;
    let _ = sock.set_recv_buffer_size(8 * 1024 * 1024);
    sock.bind(&listen.into()).map_err(|e| format!("bind {listen}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    const BATCH: usize = 64;
    const SIZE: usize = 65536;
    let mut bufs = vec![0u8; BATCH * SIZE];
    let mut iovecs: Vec<libc::iovec> = bufs
        .chunks_mut(SIZE)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr() as *mut libc::c_void,
            iov_len: c.len(),
        })
        .collect();
    let mut msgs = headers_for(&mut iovecs);
    let started = Instant::now();
    let (mut datagrams, mut bytes, mut last, mut second) = (0u64, 0u64, 0u64, 1u64);
    while started.elapsed() < duration {
        // SAFETY: each mmsghdr points at its own 64 KiB slice of `bufs`, alive for the call; the kernel writes at
        // most iov_len bytes into each and sets msg_len.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            datagrams += n as u64;
            bytes += msgs[..n as usize].iter().map(|m| u64::from(m.msg_len)).sum::<u64>();
        }
        if started.elapsed() >= Duration::from_secs(second) {
            eprintln!(
                "harrier-load --discard: {second:>4}s {:>12} datagrams/s",
                datagrams - last
            );
            last = datagrams;
            second += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(msgs);
    drop(iovecs);
    eprintln!(
        "harrier-load --discard: received {datagrams} datagrams ({bytes} bytes) in {elapsed:.2}s: {:.0} datagrams/s",
        datagrams as f64 / elapsed
    );
    println!("{datagrams}");
    Ok(())
}
