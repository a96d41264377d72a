//! A connection that fails once the request is sent: a TCP stream to a real server that turns
//! the first bytes of the server's answer into an I/O error.
//!
//! The server has read the request; the client then sees its connection fail with an error
//! kind that, alone, reads like "never connected" (as a host route that disappears
//! mid-exchange reports `HostUnreachable` on an established socket). Tests use it to check
//! that such an error is classified, and retried, as a request that was sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connect, Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::{BoxError, Service};

/// A TCP stream whose first read of the server's answer fails with an I/O error of kind
/// `fault` (the bytes read are dropped); writes pass through, so the request reaches the
/// server.
#[derive(Debug)]
pub struct FaultAfterSend {
    stream: TcpStream,
    fault: io::ErrorKind,
}

impl FaultAfterSend {
    /// Wraps a connected `stream` so that the server's answer reads as an error of kind `fault`.
    pub fn new(stream: TcpStream, fault: io::ErrorKind) -> Self {
        Self { stream, fault }
    }

    /// A connector for hyper-util's legacy client: it connects as `HttpConnector` does and
    /// wraps each connection in a `FaultAfterSend` with `fault`.
    pub fn connector(fault: io::ErrorKind) -> impl Connect + Clone + Send + Sync + 'static {
        tower::service_fn(move |uri: http::Uri| {
            let mut http = HttpConnector::new();
            Box::pin(async move {
                let io = http.call(uri).await?;
                Ok::<_, BoxError>(TokioIo::new(Self::new(io.into_inner(), fault)))
            })
        })
    }
}

impl AsyncRead for FaultAfterSend {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let fault = self.fault;
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                buf.set_filled(before);
                Poll::Ready(Err(io::Error::from(fault)))
            }
            other => other,
        }
    }
}

impl AsyncWrite for FaultAfterSend {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connection for FaultAfterSend {
    fn connected(&self) -> Connected {
        self.stream.connected()
    }
}
