//! What the sender (`sendmmsg`) and `--discard` (`recvmmsg`) share: the message headers of a batch.

/// One `mmsghdr` per iovec (no address, no control data). The headers point into `iovecs`, which must not move
/// or be resized while they are used.
pub(crate) fn headers_for(iovecs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is a valid "no name, no control" header; we then set the iovec.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}
