//! When a TCP stream's bytes reached this machine, as the kernel saw them: a socket with
//! `SO_TIMESTAMPNS` gets, with every `recvmsg`, the receive time of the last segment read.
//!
//! A client that stamps a chunk when it gets around to reading it adds its own lag to every
//! TTFT and ITL it reports: under load, the lag of a busy or sleeping core. The kernel's
//! stamp is taken as the segment is received, so it does not move with the reader. The
//! simulator uses the same stream to know when a request's first bytes arrived, before its
//! one event loop reads them.
//!
//! [`StampedStream`] wraps a tokio `TcpStream`: reads go through `recvmsg` and record their
//! stamp in an [`Arrivals`] shared with whoever interprets the bytes; writes pass through.
//! Where the socket refuses the option, reads are plain and no stamp is ever recorded, so
//! every caller must keep a fallback (its own clock at read time).

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most bytes one read asks for: the size of the thread's read buffer. Safe code cannot
/// hand the kernel uninitialised memory, and the caller's buffer usually is (hyper hands a
/// fresh one to every read), so reads go into a buffer zeroed once per thread and are
/// copied out: a copy of the bytes read (a streamed chunk is a few hundred), where zeroing
/// the caller's buffer would cost its whole size on every read. One buffer per thread, not
/// per stream: a run with a thousand connections would otherwise touch 32 MiB more.
const READ_AT_MOST: usize = 32 * 1024;

thread_local! {
    /// The read buffer of [`StampedStream::poll_read`] on this thread (empty until used).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A stamp this far behind the clock at the time it is used is not trusted (a clock step,
/// or a stamp from an earlier exchange).
const STAMP_TRUSTED_FOR: Duration = Duration::from_secs(60);

/// The receive stamps of one stream, in Unix ns (0 = none yet).
#[derive(Debug, Default)]
pub struct Arrivals {
    /// The last read's stamp.
    last_unix_ns: AtomicU64,
    /// The first stamp since [`Arrivals::take_first`] last ran.
    first_unix_ns: AtomicU64,
}

impl Arrivals {
    /// Records that a read brought bytes, stamped or not: an unstamped read clears the
    /// last stamp, so that its bytes are not timed by an earlier read's. (The kernel turns
    /// stamping on for the whole machine a moment after the first socket asks for it, so the
    /// very first segments of a process may come without.)
    fn record(&self, stamp: Option<u64>) {
        let Some(unix_ns) = stamp else {
            self.last_unix_ns.store(0, Ordering::Relaxed);
            return;
        };
        self.last_unix_ns.store(unix_ns, Ordering::Relaxed);
        let _ =
            self.first_unix_ns
                .compare_exchange(0, unix_ns, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The last read's stamp in Unix ns, if any read was stamped.
    pub fn last_unix_ns(&self) -> Option<u64> {
        Some(self.last_unix_ns.load(Ordering::Relaxed)).filter(|&ns| ns != 0)
    }

    /// The first stamp recorded since the previous call, which starts the next span.
    pub fn take_first(&self) -> Option<u64> {
        Some(self.first_unix_ns.swap(0, Ordering::Relaxed)).filter(|&ns| ns != 0)
    }

    /// When the last read's bytes arrived, on tokio's clock, given the time `now` at which
    /// they are being looked at: `now` minus the stamp's age. `now` itself when there is no
    /// stamp, or when the stamp is not credible (in the future, or older than
    /// `STAMP_TRUSTED_FOR`).
    ///
    /// The stamp is that of the stream's last read, which may be newer than the bytes being
    /// looked at when the reader fell behind; it is never older than they are, so the
    /// result always lies between their true arrival and `now`.
    pub fn arrived(&self, now: Instant) -> Instant {
        let Some(stamp) = self.last_unix_ns() else {
            return now;
        };
        let age_ns = unix_ns_now().checked_sub(stamp);
        match age_ns.map(Duration::from_nanos) {
            Some(age) if age < STAMP_TRUSTED_FOR => now.checked_sub(age).unwrap_or(now),
            _ => now,
        }
    }
}

/// The wall clock in Unix ns (0 before 1970).
fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Asks the kernel to stamp what `socket` receives; false where it refuses. On a listening
/// socket, the connections it accepts inherit the setting, including for bytes received
/// before they are accepted.
pub fn stamp_reads(socket: &impl std::os::fd::AsFd) -> bool {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_ok()
}

/// A TCP stream whose reads record the kernel's receive stamp (see the module header).
#[derive(Debug)]
pub struct StampedStream {
    inner: TcpStream,
    arrivals: Arc<Arrivals>,
    /// Whether the socket took `SO_TIMESTAMPNS`; plain reads when not.
    stamping: bool,
    /// Room for one control message, reused by every read.
    control: Vec<u8>,
}

impl StampedStream {
    /// Wraps `stream`, turning the kernel's receive stamps on where the socket allows.
    pub fn new(stream: TcpStream) -> Self {
        let stamping = stamp_reads(&stream);
        Self {
            inner: stream,
            arrivals: Arc::default(),
            stamping,
            control: nix::cmsg_space!(TimeSpec),
        }
    }

    /// Wraps `stream` without stamps: reads are plain and [`Arrivals`] stays empty.
    pub fn plain(stream: TcpStream) -> Self {
        Self {
            inner: stream,
            arrivals: Arc::default(),
            stamping: false,
            control: Vec::new(),
        }
    }

    /// The stamps of this stream's reads, to share with whoever reads its bytes.
    pub fn arrivals(&self) -> Arc<Arrivals> {
        self.arrivals.clone()
    }

    /// Whether reads are stamped by the kernel.
    pub fn is_stamping(&self) -> bool {
        self.stamping
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }
}

/// One `recvmsg` into `into`: bytes read and the receive stamp in Unix ns, if one came.
fn recv_stamped(
    fd: std::os::fd::RawFd,
    into: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(into)];
    let message = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::MSG_DONTWAIT)?;
    let stamp = message.cmsgs().ok().and_then(|mut all| {
        all.find_map(|cmsg| match cmsg {
            ControlMessageOwned::ScmTimestampns(at) => timespec_unix_ns(at),
            _ => None,
        })
    });
    Ok((message.bytes, stamp))
}

fn timespec_unix_ns(at: TimeSpec) -> Option<u64> {
    let secs = u64::try_from(at.tv_sec()).ok()?;
    let nanos = u64::try_from(at.tv_nsec()).ok()?;
    Some(secs * 1_000_000_000 + nanos).filter(|&ns| ns != 0)
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.stamping {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(this.inner.poll_read_ready(cx))?;

            let read = SCRATCH.with_borrow_mut(|scratch| {
                if scratch.is_empty() {
                    scratch.resize(READ_AT_MOST, 0);
                }
                let into = &mut scratch[..buf.remaining().min(READ_AT_MOST)];
                let read = read_drained(&this.inner, into, &mut this.control);
                if let Ok((bytes, _)) = read {
                    buf.put_slice(&scratch[..bytes]);
                }
                read
            });

            match read {
                Ok((bytes, stamp)) => {
                    if bytes > 0 {
                        this.arrivals.record(stamp);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// One stamped read of `stream` into `into`, through tokio so that its readiness is kept
/// right. A read that fills less than `into` emptied the socket: tokio is told the stream
/// is no longer readable (as its own `TcpStream` does), which spares the next read a
/// `recvmsg` that would only say `EAGAIN` (one per streamed chunk otherwise).
fn read_drained(
    stream: &TcpStream,
    into: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<u64>)> {
    let fd = stream.as_raw_fd();
    let wanted = into.len();
    let mut drained = None;
    let read = stream.try_io(Interest::READABLE, || {
        let (bytes, stamp) = recv_stamped(fd, into, control)?;
        if bytes > 0 && bytes < wanted {
            // tokio clears the readiness it saw when the closure says "would block".
            drained = Some((bytes, stamp));
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok((bytes, stamp))
    });
    match drained {
        Some(read) => Ok(read),
        None => read,
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair whose reading side gets stamps: the kernel turns stamping on a
    /// moment after the first socket asks, so bytes go back and forth until one is stamped.
    async fn pair() -> (TcpStream, StampedStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut writer, mut reader) = (client.unwrap(), StampedStream::new(accepted.unwrap().0));
        assert!(reader.is_stamping(), "loopback TCP takes SO_TIMESTAMPNS");

        let mut byte = [0u8; 1];
        for _ in 0..200 {
            writer.write_all(b".").await.unwrap();
            reader.read_exact(&mut byte).await.unwrap();
            if reader.arrivals().last_unix_ns().is_some() {
                reader.arrivals().take_first();
                return (writer, reader);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no read was stamped within 1 s");
    }

    /// A short read tells tokio the socket is drained; bytes that arrive later must still
    /// wake the reader (a lost wake-up would hang this test, bounded by its timeout).
    #[tokio::test]
    async fn reads_after_a_drained_socket_still_wake_and_keep_every_byte() {
        let (mut writer, mut reader) = pair().await;
        let pieces = 200;
        let sender = tokio::spawn(async move {
            for i in 0..pieces {
                writer
                    .write_all(format!("{i:04};").as_bytes())
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            writer
        });

        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let wanted = pieces * 5;
        let read_all = async {
            while got.len() < wanted {
                let n = reader.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the writer is still open");
                got.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("every piece was read");
        drop(sender.await.unwrap());

        let expected: String = (0..pieces).map(|i| format!("{i:04};")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[tokio::test]
    async fn a_read_is_stamped_when_its_bytes_arrived_not_when_they_were_read() {
        let (mut writer, mut reader) = pair().await;
        let arrivals = reader.arrivals();

        let before_write = unix_ns_now();
        writer.write_all(b"first").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut buf = [0u8; 16];
        let n = reader.read(&mut buf).await.unwrap();
        let read_at = unix_ns_now();

        assert_eq!(&buf[..n], b"first");
        let stamp = arrivals.last_unix_ns().expect("a stamp");
        assert!(
            stamp >= before_write,
            "stamp {stamp} before the write {before_write}"
        );
        assert!(
            read_at - stamp >= 25_000_000,
            "the stamp is the arrival, 30 ms before the read: {} ns",
            read_at - stamp
        );
        let now = Instant::now();
        let arrived = arrivals.arrived(now);
        assert!(now - arrived >= Duration::from_millis(25));
    }

    #[tokio::test]
    async fn take_first_starts_a_new_span() {
        let (mut writer, mut reader) = pair().await;
        let arrivals = reader.arrivals();
        let mut buf = [0u8; 16];

        writer.write_all(b"a").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();
        let first = arrivals.take_first().expect("first stamp");
        tokio::time::sleep(Duration::from_millis(5)).await;
        writer.write_all(b"b").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();
        writer.write_all(b"c").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();

        let second = arrivals.take_first().expect("second span's stamp");
        assert!(second >= first + 4_000_000, "{second} vs {first}");
        assert!(arrivals.last_unix_ns().unwrap() >= second);
        assert_eq!(arrivals.take_first(), None);
    }

    #[test]
    fn no_stamp_means_now() {
        let arrivals = Arrivals::default();
        let now = Instant::now();
        assert_eq!(arrivals.arrived(now), now);
        arrivals.record(Some(unix_ns_now() + 10_000_000_000));
        assert_eq!(
            arrivals.arrived(now),
            now,
            "a stamp in the future is ignored"
        );
    }

    #[tokio::test]
    async fn writes_and_end_of_stream_pass_through() {
        let (mut writer, mut reader) = pair().await;
        reader.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        writer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");

        drop(writer);
        let mut rest = Vec::new();
        assert_eq!(reader.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
