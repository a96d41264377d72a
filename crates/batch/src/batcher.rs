//! How items are merged into one upstream request and its answer split back.

use crate::error::BoxError;

/// Merges the items of a batch into one upstream request, and splits the upstream's answer
/// into one result per item.
///
/// Implement it for an API's batch endpoint, or make one from two functions with
/// [`batch_fn`].
pub trait Batcher: Send + Sync + 'static {
    /// What one caller asks for (an id, a request).
    type Item: Send + 'static;
    /// The request sent to the upstream for a whole batch.
    type Request;
    /// The upstream's answer to a whole batch.
    type Response;
    /// What one caller gets back.
    type Output: Send + 'static;

    /// The upstream request for `items` (1 to `max_size` of them, in arrival order). An
    /// error fails every item of the batch, and nothing is sent.
    fn merge(&self, items: &[Self::Item]) -> Result<Self::Request, BoxError>;

    /// One result per item of `items` (the same slice `merge` was given), in the same
    /// order. An item whose result is missing gets [`BatchError::Missing`]; results beyond
    /// the last item are dropped.
    ///
    /// [`BatchError::Missing`]: crate::BatchError::Missing
    fn split(
        &self,
        response: Self::Response,
        items: &[Self::Item],
    ) -> Vec<Result<Self::Output, BoxError>>;
}

/// A merge function, boxed.
type MergeFn<Item, Request> = dyn Fn(&[Item]) -> Result<Request, BoxError> + Send + Sync;

/// A split function, boxed.
type SplitFn<Item, Response, Output> =
    dyn Fn(Response, &[Item]) -> Vec<Result<Output, BoxError>> + Send + Sync;

/// A [`Batcher`] made of two functions; see [`batch_fn`].
///
/// The functions are boxed, so that the type can be named (a field of type
/// `BatchLayer<FnBatcher<u32, Request<_>, Bytes, Item>>`, say) without naming closures; it
/// costs one dynamic call per batch.
pub struct FnBatcher<Item, Request, Response, Output> {
    merge: Box<MergeFn<Item, Request>>,
    split: Box<SplitFn<Item, Response, Output>>,
}

impl<Item, Request, Response, Output> std::fmt::Debug
    for FnBatcher<Item, Request, Response, Output>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnBatcher").finish_non_exhaustive()
    }
}

/// A [`Batcher`] from a `merge` function (the items of a batch to one upstream request) and
/// a `split` function (the upstream's answer and the items to one result per item, in
/// order).
///
/// ```
/// use seawall_batch::{Batcher, batch_fn};
///
/// let batcher = batch_fn(
///     |ids: &[u32]| Ok(ids.to_vec()),
///     |names: Vec<String>, _ids: &[u32]| names.into_iter().map(Ok).collect(),
/// );
/// assert_eq!(batcher.merge(&[1, 2])?, vec![1, 2]);
/// # Ok::<(), seawall_batch::BoxError>(())
/// ```
pub fn batch_fn<M, P, Item, Request, Response, Output>(
    merge: M,
    split: P,
) -> FnBatcher<Item, Request, Response, Output>
where
    M: Fn(&[Item]) -> Result<Request, BoxError> + Send + Sync + 'static,
    P: Fn(Response, &[Item]) -> Vec<Result<Output, BoxError>> + Send + Sync + 'static,
{
    FnBatcher {
        merge: Box::new(merge),
        split: Box::new(split),
    }
}

impl<Item, Request, Response, Output> Batcher for FnBatcher<Item, Request, Response, Output>
where
    Item: Send + 'static,
    Request: 'static,
    Response: 'static,
    Output: Send + 'static,
{
    type Item = Item;
    type Request = Request;
    type Response = Response;
    type Output = Output;

    fn merge(&self, items: &[Item]) -> Result<Request, BoxError> {
        (self.merge)(items)
    }

    fn split(&self, response: Response, items: &[Item]) -> Vec<Result<Output, BoxError>> {
        (self.split)(response, items)
    }
}
