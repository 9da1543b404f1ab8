//! A wrapper that injects scripted faults into any [`ObjectClient`].
//!
//! Design: faults are decided per call, first from a FIFO queue (for exact
//! scripts: "the 1st GET fails with 503, the 2nd is truncated") and then from
//! an optional closure (for policies: "every 3rd GET of `k` is reset"). The
//! closure sees a [`CallInfo`] with a global call index, so it can also act as
//! a hook, e.g. replace an object in a mock between two parts and return
//! `None`. Data faults go through the real inner client, so a truncated body
//! really leaves a prefix in the sink and corrupted bytes really reach it, with
//! a range CRC computed over what was written: exactly what a flaky network
//! would produce, which is what CRC verification must catch.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    ClientError, GetRangeMeta, ListPage, ObjectClient, ObjectMeta, RangeSink, Result, ServiceError,
};
use crate::crc64::Crc64Hasher;

/// Which trait method is being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    List,
    Head,
    Get,
}

/// What the fault script sees about one call.
#[derive(Debug, Clone)]
pub struct CallInfo<'a> {
    pub operation: Operation,
    /// Object key (for `List`, the prefix).
    pub key: &'a str,
    /// The requested range (`Get` only).
    pub range: Option<Range<u64>>,
    /// 0-based index of this call among all calls through the wrapper.
    pub call_index: u64,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Return this store error without calling the inner client.
    Service(ServiceError),
    /// Return a transport error (connection reset, timeout) without calling
    /// the inner client.
    Transport(String),
    /// `Get` only: deliver the first `after` bytes of the range (at most
    /// its length minus one, so the body really is short) into the sink,
    /// then fail with [`ClientError::Truncated`].
    Truncate { after: u64 },
    /// `Get` only: deliver the range with the byte at this absolute object
    /// offset bit-flipped (if it lies inside the range), and a range CRC
    /// computed over the corrupted bytes.
    Corrupt { offset: u64 },
}

impl Fault {
    /// OSS bandwidth throttling: 503 `DownloadTrafficRateLimitExceeded`.
    pub fn throttled() -> Self {
        Fault::Service(ServiceError {
            status: 503,
            code: "DownloadTrafficRateLimitExceeded".into(),
            message: "injected: download traffic rate limit exceeded".into(),
            request_id: "injected".into(),
            string_to_sign: None,
        })
    }

    /// 403 `AccessDenied`.
    pub fn access_denied() -> Self {
        Fault::Service(ServiceError {
            status: 403,
            code: "AccessDenied".into(),
            message: "injected: access denied".into(),
            request_id: "injected".into(),
            string_to_sign: None,
        })
    }

    /// A connection reset.
    pub fn reset() -> Self {
        Fault::Transport("injected: connection reset by peer".into())
    }
}

type FaultFn = dyn Fn(&CallInfo<'_>) -> Option<Fault> + Send + Sync;

/// Wraps `C`, injecting faults as scripted. See the module docs.
pub struct FailureInjectingClient<C> {
    inner: C,
    queue: Mutex<VecDeque<(Option<Operation>, Fault)>>,
    script: Option<Box<FaultFn>>,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<C: ObjectClient> FailureInjectingClient<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            queue: Mutex::new(VecDeque::new()),
            script: None,
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Consults `script` for every call the queue has no fault for.
    pub fn with_script(
        mut self,
        script: impl Fn(&CallInfo<'_>) -> Option<Fault> + Send + Sync + 'static,
    ) -> Self {
        self.script = Some(Box::new(script));
        self
    }

    /// Queues `fault` for the next call of `operation`.
    pub fn push_fault(&self, operation: Operation, fault: Fault) {
        self.queue
            .lock()
            .unwrap()
            .push_back((Some(operation), fault));
    }

    /// Queues `fault` for the next call of any operation.
    pub fn push_fault_any(&self, fault: Fault) {
        self.queue.lock().unwrap().push_back((None, fault));
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Calls seen (faulted or not).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Faults still queued.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    fn decide(&self, operation: Operation, key: &str, range: Option<Range<u64>>) -> Option<Fault> {
        let call_index = self.calls.fetch_add(1, Ordering::Relaxed);
        let queued = {
            let mut q = self.queue.lock().unwrap();
            let pos = q
                .iter()
                .position(|(op, _)| op.is_none_or(|op| op == operation));
            pos.and_then(|p| q.remove(p)).map(|(_, f)| f)
        };
        let fault = queued.or_else(|| {
            self.script.as_ref().and_then(|s| {
                s(&CallInfo {
                    operation,
                    key,
                    range,
                    call_index,
                })
            })
        });
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }
}

/// Fails with the fault if it needs no data; `None` for data faults.
fn immediate(fault: &Fault) -> Option<super::ObjectClientError> {
    match fault {
        Fault::Service(e) => Some(e.clone().into()),
        Fault::Transport(m) => Some(ClientError::Transport(m.clone()).into()),
        Fault::Truncate { .. } | Fault::Corrupt { .. } => None,
    }
}

/// Flips one byte on its way to the real sink and hashes what it forwards.
struct CorruptingSink<'a> {
    inner: &'a dyn RangeSink,
    offset: u64,
    hasher: Mutex<Crc64Hasher>,
}

impl RangeSink for CorruptingSink<'_> {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset + data.len() as u64;
        if (offset..end).contains(&self.offset) {
            let mut copy = data.to_vec();
            copy[(self.offset - offset) as usize] ^= 0x01;
            self.hasher.lock().unwrap().update(&copy);
            self.inner.write_at(offset, &copy)
        } else {
            self.hasher.lock().unwrap().update(data);
            self.inner.write_at(offset, data)
        }
    }
}

#[async_trait]
impl<C: ObjectClient> ObjectClient for FailureInjectingClient<C> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        if let Some(f) = self.decide(Operation::List, prefix, None) {
            if let Some(e) = immediate(&f) {
                return Err(e);
            }
        }
        self.inner
            .list_page(prefix, continuation_token, max_keys)
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        if let Some(f) = self.decide(Operation::Head, key, None) {
            if let Some(e) = immediate(&f) {
                return Err(e);
            }
        }
        self.inner.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        let Some(fault) = self.decide(Operation::Get, key, Some(range.clone())) else {
            return self.inner.get_range(key, range, if_match, sink).await;
        };
        if let Some(e) = immediate(&fault) {
            return Err(e);
        }
        match fault {
            Fault::Truncate { after } => {
                let expected = range.end - range.start;
                let received = after.min(expected.saturating_sub(1));
                if received > 0 {
                    let prefix = range.start..range.start + received;
                    self.inner.get_range(key, prefix, if_match, sink).await?;
                }
                Err(ClientError::Truncated { expected, received }.into())
            }
            Fault::Corrupt { offset } => {
                let corrupting = CorruptingSink {
                    inner: sink,
                    offset,
                    hasher: Mutex::new(Crc64Hasher::new()),
                };
                let mut meta = self
                    .inner
                    .get_range(key, range, if_match, &corrupting)
                    .await?;
                meta.range_crc64 = corrupting.hasher.lock().unwrap().finish();
                Ok(meta)
            }
            Fault::Service(_) | Fault::Transport(_) => unreachable!("handled by immediate()"),
        }
    }
}

/// Shared clients are clients too, so a test can keep an `Arc` to the inner
/// mock (to replace objects or read counters) while a wrapper owns another.
#[async_trait]
impl<C: ObjectClient + ?Sized> ObjectClient for std::sync::Arc<C> {
    fn bucket(&self) -> &str {
        (**self).bucket()
    }

    async fn list_page(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        (**self)
            .list_page(prefix, continuation_token, max_keys)
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        (**self).head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        (**self).get_range(key, range, if_match, sink).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_client::mock::{MockObjectClient, VecSink};
    use crate::object_client::ObjectClientError;

    fn client() -> (FailureInjectingClient<MockObjectClient>, Vec<u8>, String) {
        let m = MockObjectClient::new("b").with_chunk_size(16);
        let d: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let etag = m.put_object("k", d.clone());
        (FailureInjectingClient::new(m), d, etag)
    }

    #[tokio::test]
    async fn queue_faults_apply_in_order_per_operation() {
        let (c, d, etag) = client();
        c.push_fault(Operation::Get, Fault::throttled());
        c.push_fault(Operation::Head, Fault::access_denied());
        c.push_fault(Operation::Get, Fault::reset());
        assert_eq!(c.queued(), 3);

        let e = c.head("k").await.unwrap_err();
        assert_eq!(e.service_code(), Some("AccessDenied"));
        assert!(!e.is_retryable());
        let sink = VecSink::with_len(200);
        let e = c.get_range("k", 0..10, None, &sink).await.unwrap_err();
        assert_eq!(e.service_code(), Some("DownloadTrafficRateLimitExceeded"));
        assert!(e.is_retryable());
        let e = c.get_range("k", 0..10, None, &sink).await.unwrap_err();
        assert!(matches!(
            e,
            ObjectClientError::Client(ClientError::Transport(_))
        ));
        assert!(e.is_retryable());
        let g = c.get_range("k", 0..200, Some(&etag), &sink).await.unwrap();
        assert_eq!(g.range_crc64, crate::crc64::crc64(&d));
        assert_eq!(sink.contents(), d);
        assert_eq!((c.calls(), c.injected(), c.queued()), (4, 3, 0));
        // Faulted calls never reached the store.
        assert_eq!(c.inner().stats().get_requests, 1);
        assert_eq!(c.inner().stats().head_requests, 0);
    }

    #[tokio::test]
    async fn truncation_writes_a_prefix_then_fails() {
        let (c, d, _) = client();
        c.push_fault_any(Fault::Truncate { after: 37 });
        let sink = VecSink::new();
        let e = c.get_range("k", 100..200, None, &sink).await.unwrap_err();
        assert_eq!(
            e,
            ObjectClientError::Client(ClientError::Truncated {
                expected: 100,
                received: 37
            })
        );
        assert_eq!(sink.contents().len(), 137);
        assert_eq!(&sink.contents()[100..137], &d[100..137]);
        // A truncation point past the end still fails short of the end.
        c.push_fault(Operation::Get, Fault::Truncate { after: 1000 });
        let e = c.get_range("k", 0..10, None, &sink).await.unwrap_err();
        assert!(matches!(
            e,
            ObjectClientError::Client(ClientError::Truncated {
                expected: 10,
                received: 9
            })
        ));
    }

    #[tokio::test]
    async fn corruption_reaches_sink_and_range_crc() {
        let (c, d, _) = client();
        c.push_fault(Operation::Get, Fault::Corrupt { offset: 50 });
        let sink = VecSink::with_len(200);
        let g = c.get_range("k", 40..80, None, &sink).await.unwrap();
        let got = sink.contents();
        assert_eq!(got[50], d[50] ^ 1);
        assert_eq!(&got[40..50], &d[40..50]);
        assert_eq!(&got[51..80], &d[51..80]);
        assert_eq!(g.range_crc64, crate::crc64::crc64(&got[40..80]));
        assert_ne!(g.range_crc64, crate::crc64::crc64(&d[40..80]));
    }

    #[tokio::test]
    async fn script_sees_calls_and_can_act_as_hook() {
        let m = std::sync::Arc::new(MockObjectClient::new("b"));
        m.put_object("k", vec![1u8; 10]);
        let hook = m.clone();
        let c = FailureInjectingClient::new(m.clone()).with_script(move |call| {
            if call.call_index == 1 {
                hook.put_object("k", vec![2u8; 10]);
            }
            (call.operation == Operation::List).then(Fault::reset)
        });
        let meta = c.head("k").await.unwrap();
        let sink = VecSink::new();
        let e = c
            .get_range("k", 0..10, Some(&meta.etag), &sink)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            ObjectClientError::Client(ClientError::ObjectChanged { .. })
        ));
        assert!(c.list_page("", None, 10).await.is_err());
        assert_eq!(c.injected(), 1);
    }
}
