//! The future a batching service returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;

use crate::error::BatchError;

/// The response future of a [`Batch`](crate::Batch) service: the caller's own result, once
/// its batch is answered. Dropping it withdraws the item (if its batch has not been sent) or
/// discards its result.
#[derive(Debug)]
pub struct ResponseFuture<O> {
    state: State<O>,
}

#[derive(Debug)]
enum State<O> {
    Waiting(oneshot::Receiver<Result<O, BatchError>>),
    Failed(Option<BatchError>),
}

impl<O> ResponseFuture<O> {
    pub(crate) fn waiting(reply: oneshot::Receiver<Result<O, BatchError>>) -> Self {
        Self {
            state: State::Waiting(reply),
        }
    }

    pub(crate) fn failed(error: BatchError) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }
}

impl<O> Future for ResponseFuture<O> {
    type Output = Result<O, BatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Waiting(reply) => Poll::Ready(match ready!(Pin::new(reply).poll(cx)) {
                Ok(result) => result,
                // The task ended without answering: its runtime shut down.
                Err(_) => Err(BatchError::Closed),
            }),
            State::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(BatchError::Closed))),
        }
    }
}
