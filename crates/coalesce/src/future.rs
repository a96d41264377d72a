//! The future a coalescing service returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower::{Service, ServiceExt};

use crate::body::CoalesceBody;
use crate::error::{BoxError, CoalesceError};
use crate::flight::{FollowerGuard, LeaderGuard, Outcome, Role, SharedResponse, enter};
use crate::key::FlightKey;
use crate::service::Config;

type Answer<B, E> = Result<Response<CoalesceBody<B>>, CoalesceError<E>>;

/// A follower's wait, boxed: followers wait for an upstream call, beside which one allocation
/// is nothing, and a leader's future stays small.
type FollowerFuture<B, E> = Pin<Box<dyn Future<Output = Answer<B, E>> + Send>>;

pin_project! {
    /// The response future of a [`Coalesce`](crate::Coalesce) service.
    pub struct ResponseFuture<F, B: Body, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B: Body, E> {
        // A request that is not coalesced: the inner future, its answer passed through.
        Pass { #[pin] future: F },
        // The leader of a flight, waiting for the upstream's answer.
        Lead {
            #[pin]
            future: F,
            guard: Option<LeaderGuard>,
            max_body_bytes: u64,
        },
        // The leader, reading the body to share it. Boxed: only a leader with followers
        // gets here, and every other request's future stays small.
        Collect { collecting: Box<Collecting<B>> },
        // A follower.
        Follow { future: FollowerFuture<B, E> },
        Done,
    }
}

impl<F, B: Body, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Pass { .. } => "Pass",
            State::Lead { .. } => "Lead",
            State::Collect { .. } => "Collect",
            State::Follow { .. } => "Follow",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn pass(future: F) -> Self {
        Self {
            state: State::Pass { future },
        }
    }

    pub(crate) fn lead(future: F, guard: LeaderGuard, max_body_bytes: u64) -> Self {
        Self {
            state: State::Lead {
                future,
                guard: Some(guard),
                max_body_bytes,
            },
        }
    }

    fn follow(future: FollowerFuture<B, E>) -> Self {
        Self {
            state: State::Follow { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    E: Into<BoxError>,
{
    type Output = Answer<B, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Pass { future } => {
                    let answer = ready!(future.poll(cx));
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(match answer {
                        Ok(response) => Ok(response.map(CoalesceBody::inner)),
                        Err(error) => Err(CoalesceError::Upstream(error)),
                    });
                }
                StateProj::Lead {
                    future,
                    guard,
                    max_body_bytes,
                } => {
                    let answer = ready!(future.poll(cx));
                    let max_body_bytes = *max_body_bytes;
                    let Some(mut guard) = guard.take() else {
                        return Poll::Pending;
                    };
                    // From here on an identical request starts a new call; followers that
                    // joined before get this one's answer.
                    let followers = guard.close();
                    match answer {
                        Ok(response) if !followers => {
                            guard.finish();
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Ok(response.map(CoalesceBody::inner)));
                        }
                        Ok(response) => {
                            let shareable = response
                                .body()
                                .size_hint()
                                .upper()
                                .is_some_and(|upper| upper <= max_body_bytes);
                            if !shareable {
                                guard.publish(Outcome::NotShared);
                                self.as_mut().project().state.set(State::Done);
                                return Poll::Ready(Ok(response.map(CoalesceBody::inner)));
                            }
                            let (head, body) = response.into_parts();
                            State::Collect {
                                collecting: Box::new(Collecting {
                                    head: Some(head),
                                    body: Some(Box::pin(body)),
                                    read: VecDeque::new(),
                                    len: 0,
                                    trailers: None,
                                    guard: Some(guard),
                                    max_body_bytes,
                                }),
                            }
                        }
                        Err(error) if !followers => {
                            guard.finish();
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Err(CoalesceError::Upstream(error)));
                        }
                        Err(error) => {
                            let shared: Arc<dyn std::error::Error + Send + Sync> =
                                Arc::from(error.into());
                            guard.publish(Outcome::Error(Arc::clone(&shared)));
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Err(CoalesceError::Shared(shared)));
                        }
                    }
                }
                StateProj::Collect { collecting } => {
                    let Collecting {
                        head,
                        body,
                        read,
                        len,
                        trailers,
                        guard,
                        max_body_bytes,
                    } = &mut **collecting;
                    let Some(reading) = body.as_mut() else {
                        return Poll::Pending;
                    };
                    let frame = ready!(reading.as_mut().poll_frame(cx));
                    let ended = match frame {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => {
                                *len = len.saturating_add(data.len() as u64);
                                read.push_back(Frame::data(data));
                                if *len <= *max_body_bytes {
                                    continue;
                                }
                                // The body outgrew the size it declared.
                                Ended::Outgrown
                            }
                            Err(frame) => {
                                if let Ok(t) = frame.into_trailers() {
                                    *trailers = Some(t);
                                }
                                continue;
                            }
                        },
                        Some(Err(error)) => Ended::Failed(error),
                        None => Ended::Complete,
                    };
                    let (Some(head), Some(mut guard), Some(rest)) =
                        (head.take(), guard.take(), body.take())
                    else {
                        return Poll::Pending;
                    };
                    let mut read = std::mem::take(read);
                    let trailers = trailers.take();
                    self.as_mut().project().state.set(State::Done);
                    let body = match ended {
                        Ended::Complete => {
                            let data = concat(read);
                            guard.publish(Outcome::Response(Arc::new(SharedResponse {
                                status: head.status,
                                version: head.version,
                                headers: head.headers.clone(),
                                data: data.clone(),
                                trailers: trailers.clone(),
                            })));
                            CoalesceBody::shared(data, trailers)
                        }
                        // The leader gets what was read and the rest of the body (or its
                        // error); the followers make their own calls.
                        Ended::Outgrown => {
                            guard.publish(Outcome::NotShared);
                            CoalesceBody::replay(read, Ok(rest))
                        }
                        Ended::Failed(error) => {
                            guard.publish(Outcome::NotShared);
                            if let Some(trailers) = trailers {
                                read.push_back(Frame::trailers(trailers));
                            }
                            CoalesceBody::replay(read, Err(error))
                        }
                    };
                    return Poll::Ready(Ok(Response::from_parts(head, body)));
                }
                StateProj::Follow { future } => return future.as_mut().poll(cx),
                StateProj::Done => return Poll::Pending,
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// A leader reading its answer's body to share it with its followers.
struct Collecting<B> {
    head: Option<http::response::Parts>,
    body: Option<Pin<Box<B>>>,
    read: VecDeque<Frame<Bytes>>,
    len: u64,
    trailers: Option<HeaderMap>,
    guard: Option<LeaderGuard>,
    max_body_bytes: u64,
}

/// How reading a body to share it ended.
enum Ended<E> {
    Complete,
    Outgrown,
    Failed(E),
}

/// The data frames of a body as one buffer; a body of one frame is not copied.
fn concat(mut frames: VecDeque<Frame<Bytes>>) -> Bytes {
    if frames.len() == 1 {
        if let Some(Ok(data)) = frames.pop_front().map(Frame::into_data) {
            return data;
        }
        return Bytes::new();
    }
    let len = frames
        .iter()
        .filter_map(|f| f.data_ref().map(Bytes::len))
        .sum();
    let mut buffer = BytesMut::with_capacity(len);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    buffer.freeze()
}

/// Starts the future of a request that `role` made a follower: it waits for the flight, and
/// makes its own call with `service` (readied first) when the answer cannot be shared, or
/// leads a new one when the leader's caller went away.
pub(crate) fn follower<S, ReqB, ResB>(
    service: S,
    request: Request<ReqB>,
    guard: FollowerGuard,
    config: Arc<Config>,
) -> ResponseFuture<S::Future, ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Send,
{
    ResponseFuture::follow(Box::pin(follow(service, request, guard, config)))
}

async fn follow<S, ReqB, ResB>(
    mut service: S,
    request: Request<ReqB>,
    mut guard: FollowerGuard,
    config: Arc<Config>,
) -> Answer<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
{
    loop {
        let outcome = guard.flight.outcome().await;
        drop(guard);
        match outcome {
            Outcome::Response(shared) => {
                config.counters.coalesced();
                return Ok(shared.to_response(CoalesceBody::shared));
            }
            Outcome::Error(error) => return Err(CoalesceError::Shared(error)),
            Outcome::NotShared => {
                config.counters.not_shared();
                return ResponseFuture::pass(ready_call(&mut service, request).await?).await;
            }
            Outcome::Abandoned => {
                // The call went with the leader's caller. The first follower to get here
                // leads a new call; the others follow it.
                let key = FlightKey::new(&request, &config.vary, &config.flights.hasher);
                match enter(&config, key) {
                    Role::Follower(next) => guard = next,
                    Role::Leader(leader) => {
                        config.counters.takeover();
                        // Readied after entering, so that identical requests follow this
                        // one while it waits; the guard hands over again if it is dropped.
                        let future = match ready_call(&mut service, request).await {
                            Ok(future) => future,
                            Err(error) => {
                                drop(leader);
                                return Err(error);
                            }
                        };
                        return ResponseFuture::lead(future, leader, config.max_body_bytes).await;
                    }
                }
            }
        }
    }
}

/// Waits for `service` to be ready and calls it.
async fn ready_call<S, R>(service: &mut S, request: R) -> Result<S::Future, CoalesceError<S::Error>>
where
    S: Service<R>,
{
    let ready = service.ready().await.map_err(CoalesceError::Upstream)?;
    Ok(ready.call(request))
}
