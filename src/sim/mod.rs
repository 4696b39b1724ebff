//! The simulated OpenAI-compatible server (plus SGLang's native `/generate`): the default target of `tracebench replay --sim`
//! and the test bench of tracebench itself. A library first: [`app`] builds the axum
//! router, [`serve`] runs it on a listener until a shutdown future fires, and [`spawn`]
//! starts one on `127.0.0.1:0` for tests. Timing is `fixed` (constant TTFT and ITL) or
//! `engine` (a continuous-batching model with a prefix cache); faults are injected per
//! request. Responses are written by hand here and share no types with the client.

mod api;
mod chunk_log;
mod config;
mod engine;
pub mod faults;
mod kv;
mod metrics;
mod server;
mod sglang;
mod sse;
mod stream;

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::client::arrival::StampedStream;
use server::ConnArrivals;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

pub use chunk_log::{ChunkKind, ChunkRecord, unix_ns_now};
pub use config::*;
pub use faults::{FaultKind, FaultRule, Trigger};
pub use metrics::SimMetrics;
pub use server::{SimError, SimState, app};
pub use sglang::SGLANG_DEFAULT_MAX_NEW_TOKENS;

/// After the shutdown signal, how long in-flight responses may go on before the server
/// stops anyway (a 2-hour stream must not hold a Ctrl-C hostage).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the simulator on `listener` until `shutdown` completes, then lets in-flight
/// responses finish for up to [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state =
        SimState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    serve_state(listener, state, shutdown).await
}

/// [`serve`] with a state built beforehand (to read its metrics and chunk log).
pub async fn serve_state(
    listener: TcpListener,
    state: SimState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stopping = Arc::new(Notify::new());
    let notify = stopping.clone();
    let signal = async move {
        shutdown.await;
        notify.notify_one();
    };
    let service = app(state.clone()).into_make_service_with_connect_info::<ConnArrivals>();
    let server = axum::serve(StampingListener::new(listener), service);
    let server = server.with_graceful_shutdown(signal);
    let grace = async {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };

    let result = tokio::select! {
        r = server.into_future() => r,
        () = grace => Ok(()),
    };
    state.flush_chunk_log()?;
    result
}

/// The simulator's listener: every accepted connection's reads carry the kernel's receive
/// stamp, so that the chunk log can say when a request's bytes reached the socket, before
/// the simulator's one event loop got to them.
struct StampingListener(TcpListener);

impl StampingListener {
    /// Turns the stamps on for the listening socket too: its connections inherit them, so
    /// that bytes that arrive before the simulator accepts the connection are stamped.
    fn new(listener: TcpListener) -> Self {
        crate::client::arrival::stamp_reads(&listener);
        Self(listener)
    }
}

impl axum::serve::Listener for StampingListener {
    type Io = StampedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (StampedStream::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        axum::serve::Listener::local_addr(&self.0)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StampingListener>>
    for ConnArrivals
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StampingListener>) -> Self {
        ConnArrivals(stream.io().arrivals())
    }
}

/// A simulator running in the background on a loopback port.
pub struct SimHandle {
    addr: SocketAddr,
    state: SimState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (append `/v1/...` for the API).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server state: metrics, chunk records, settings.
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Stops accepting, lets in-flight responses finish (bounded), and waits.
    pub async fn shutdown(mut self) -> io::Result<()> {
        drop(self.stop.take());
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// Pending-connection queue asked of the kernel (which caps it at `net.core.somaxconn`).
/// The usual 128 or 1024 overflow when thousands of streams open at one instant: the
/// dropped SYNs are retried 1 s and 3 s later, and that wait shows up as TTFT.
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listener on `addr` with [`LISTEN_BACKLOG`], its connections' reads stamped by
/// the kernel. Needs a tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    // Here already, not only when serving starts: a connection accepted by the kernel
    // before then has its first bytes stamped too.
    crate::client::arrival::stamp_reads(&listener);
    Ok(listener)
}

/// Starts a simulator on `127.0.0.1:0` on the current tokio runtime. Dropping the handle
/// shuts it down too.
pub fn spawn(config: SimConfig) -> io::Result<SimHandle> {
    let state =
        SimState::new(config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;

    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(serve_state(listener, state.clone(), shutdown));
    Ok(SimHandle {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}
