//! Telling an h2c client from an HTTP/1.1 one by its first bytes, left in the socket.

use std::{
    io,
    task::{Context, Poll, Waker},
};

use tokio::{
    io::{Interest, ReadBuf},
    net::TcpStream,
};

/// The client connection preface of HTTP/2 with prior knowledge (h2c).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plaintext client speaks h2c, told by peeking at its first bytes (left in the
/// socket). hyper-util's auto-detection read those 24 bytes apart instead, and the HTTP/1
/// read buffer that then took the rest of the request doubled to 16 KiB on every connection
/// (massif, `make bench` workload 4).
///
/// A client that stops inside the preface costs nothing while it waits: the task sleeps until
/// the socket has new bytes (or is closed), never on a timer. A peek leaves the bytes in the
/// socket, so the socket stays readable after it; the readiness is cleared by hand, and only
/// the readiness seen before the peek, so bytes arriving in between wake the task again. The
/// caller bounds the wait.
pub(super) async fn h2_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // `try_io` notes the readiness before calling the closure, and clears exactly that
        // if the closure says `WouldBlock`.
        let verdict = stream.try_io(Interest::READABLE, || {
            let n = peek_now(stream, &mut buf)?;
            match verdict(&buf[..n]) {
                Some(h2) => Ok(h2),
                // Part of the preface, and the client has closed its side: the rest can
                // never come (and the closed readiness is never cleared: waiting would spin).
                None if ready.is_read_closed() => Ok(false),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match verdict {
            Ok(h2) => return Ok(h2),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `Some(true)`: the whole preface; `Some(false)`: not h2c (or nothing, the client closed);
/// `None`: a part of the preface so far.
fn verdict(seen: &[u8]) -> Option<bool> {
    if seen.is_empty() || seen != &H2_PREFACE[..seen.len()] {
        Some(false)
    } else if seen.len() == H2_PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// Peeks without waiting: what is in the socket now, or `WouldBlock`.
fn peek_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = ReadBuf::new(buf);
    match stream.poll_peek(&mut cx, &mut buf) {
        Poll::Ready(n) => n,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}
