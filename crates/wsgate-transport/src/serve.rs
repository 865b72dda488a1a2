//! Serving a router on a TCP listener, as `axum::serve` does (HTTP/1.1 with upgrades, the
//! peer's address as `ConnectInfo<SocketAddr>`, graceful shutdown), with `TCP_NODELAY`, and
//! with each connection's TCP stream handed to hyper as it is: a websocket upgraded from it
//! gets the stream itself back ([`Wire::Tcp`](crate::Wire::Tcp)), read and written with no
//! layer between, and its session can sleep while it is quiet
//! ([`SessionConfig::hibernate_after`](crate::SessionConfig::hibernate_after)).

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `router` on `listener` until the listener fails or, with
/// [`Serve::with_graceful_shutdown`], the signal comes.
///
/// ```no_run
/// # async fn run(router: axum::Router) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// wsgate_transport::serve(listener, router).await
/// # }
/// ```
pub fn serve(listener: TcpListener, router: Router) -> Serve {
    Serve { listener, router, shutdown: None }
}

/// What [`serve`] returns: a future, with a graceful shutdown to add.
#[must_use = "serves nothing until awaited"]
pub struct Serve {
    listener: TcpListener,
    router: Router,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl Serve {
    /// Once `signal` completes, stops accepting, lets each HTTP connection finish the
    /// request it serves, and completes when they are all done. Websockets are no longer
    /// HTTP connections: the app closes them (`Server::close_all`).
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Serve {
    async fn run(self) -> io::Result<()> {
        let Serve { listener, router, shutdown } = self;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let (stop, stopping) = watch::channel(false);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(&e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            tokio::spawn(connection(tcp, peer, router.clone(), stopping.clone()));
        }
        drop(listener);
        drop(stopping);
        let _ = stop.send(true);
        // Every connection holds a receiver until it is done.
        stop.closed().await;
        Ok(())
    }
}

/// A failed accept: a connection that went before it was taken is nothing; running out of
/// files, say, waits a moment rather than spin.
async fn accept_failed(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused => {}
        _ => {
            tracing::error!(error = %e, "accepting a connection failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Serves one HTTP connection until it ends, is upgraded, or the server stops.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    mut stopping: watch::Receiver<bool>,
) {
    // Small frames leave at once, not held by Nagle's algorithm behind the last one not yet
    // acknowledged (axum::serve leaves this to the listener: `ListenerExt::tap_io`).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY");
    }
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::trace!(error = %e, "HTTP connection ended");
            }
        }
        // A bool, not the guard `wait_for` gives, which is not `Send`.
        _ = async { stopping.wait_for(|stop| *stop).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
