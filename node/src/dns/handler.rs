//! hickory's `RequestHandler` for the workspace zone: rate limit, validate the message, ask
//! [`Zone`] for the answer, encode it with EDNS and truncate correctly for UDP.
//!
//! Owns the wire-level rules (opcodes, EDNS, TC=1). Must never block or await anything but the
//! send (UDP spawns a task per query), and never let an oversized UDP answer go out half-cut:
//! hickory's encoder would drop the OPT record (upstream #3633), so we trial-encode and send an
//! empty TC=1 answer instead, which makes real clients retry over TCP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::health::SharedView;
use super::ratelimit::{Decision, RateLimiter};
use super::zone::{Reply, View, Zone};

/// A view older than this is not trusted: the health task is stuck or the process was frozen.
const MAX_VIEW_AGE: Duration = Duration::from_secs(3);

pub struct Handler {
    pub zone: Zone,
    pub view: SharedView,
    pub limiter: Arc<RateLimiter>,
}

fn header_only(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

impl Handler {
    fn reply_for(&self, request: &Request) -> Reply {
        let Some(query) = request.queries.queries().first() else {
            return Reply::error(ResponseCode::FormErr);
        };
        if request.queries.len() != 1 {
            return Reply::error(ResponseCode::FormErr);
        }
        // The zone exists in class IN only; answering IN data to a CH or HS query would mislabel it.
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return Reply::error(ResponseCode::Refused);
        }
        let (view, at) = self.view.get();
        if Instant::now().saturating_duration_since(at) > MAX_VIEW_AGE {
            // Only `ready` matters to a node that is not ready: it answers SERVFAIL.
            return self
                .zone
                .answer(&View::default(), query.name(), query.query_type());
        }
        self.zone.answer(&view, query.name(), query.query_type())
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let udp = request.protocol() == Protocol::Udp;
        let mut slip = false;
        if udp {
            match self.limiter.check(request.src().ip()) {
                Decision::Allow => {}
                Decision::Slip => {
                    crate::metrics::dns_rate_limited("slip");
                    slip = true
                }
                Decision::Drop => {
                    crate::metrics::dns_rate_limited("drop");
                    tracing::trace!(src = %request.src(), "dns rate limit: dropped");
                    return header_only(request, ResponseCode::Refused);
                }
            }
        }
        // A fresh OPT record, as RFC 6891 asks when the query had one; without it the reply
        // would be capped at 512 bytes.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            e
        });
        let reply = if request.metadata.message_type != MessageType::Query {
            Reply::error(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else if edns.is_some() && request.version() > 0 {
            Reply::error(ResponseCode::BADVERS)
        } else {
            self.reply_for(request)
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = reply.authoritative;
        meta.response_code = reply.rcode;
        crate::metrics::dns_answered(reply.rcode);
        let fits = !slip && (!udp || fits(request, edns.as_ref(), meta, &reply));
        let (answers, authority): (&[Record], &[Record]) = if fits {
            (&reply.answers, &reply.authority)
        } else {
            meta.truncation = true;
            (&[], &[])
        };
        let rebuilt = clean_question(request);
        let queries = rebuilt.as_ref().unwrap_or(&request.queries);
        let response = MessageResponseBuilder::new(queries, edns.as_ref()).build(
            meta,
            answers.iter(),
            authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "cannot send a dns response");
                header_only(request, ResponseCode::ServFail)
            }
        }
    }
}

/// hickory echoes the question section as the raw bytes it arrived in. A question whose name is
/// a compression pointer (only a forged query has one: nothing but the header precedes the
/// first name) would then point into the *response's* header, which differs from the query's,
/// and the answer would go out unparseable (the fuzz test found this). Such a question is
/// echoed re-encoded without compression instead; `None` keeps the original bytes, which is
/// every well-formed query (checked without allocating: this runs on every query).
fn clean_question(request: &Request) -> Option<Queries> {
    if !names_have_pointer(request.queries.as_bytes(), request.queries.len()) {
        return None;
    }
    let mut buf = Vec::new();
    {
        let mut encoder = BinEncoder::new(&mut buf);
        for q in request.queries.queries() {
            if q.emit(&mut encoder).is_err() {
                return Queries::read(&mut BinDecoder::new(&[]), 0).ok();
            }
        }
    }
    Queries::read(&mut BinDecoder::new(&buf), request.queries.len())
        .or_else(|_| Queries::read(&mut BinDecoder::new(&[]), 0))
        .ok()
}

/// Whether any of the `count` questions in `bytes` (name, type, class) ends its name with a
/// compression pointer. Anything that does not walk cleanly counts as one, so it is re-encoded.
fn names_have_pointer(bytes: &[u8], count: usize) -> bool {
    let mut i = 0;
    for _ in 0..count {
        loop {
            match bytes.get(i) {
                None => return true,
                Some(0) => {
                    i += 1;
                    break;
                }
                Some(len) if len & 0xC0 != 0 => return true,
                Some(len) => i += 1 + usize::from(*len),
            }
        }
        i += 4; // type and class
    }
    i != bytes.len()
}

/// Whether the full answer fits the client's UDP buffer (512 without EDNS).
fn fits(request: &Request, edns: Option<&Edns>, meta: Metadata, reply: &Reply) -> bool {
    let limit = edns.map_or(512, |e| e.max_payload().max(512));
    let mut buf = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit);
    let rebuilt = clean_question(request);
    MessageResponseBuilder::new(rebuilt.as_ref().unwrap_or(&request.queries), edns)
        .build(
            meta,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            std::iter::empty(),
        )
        .destructive_emit(&mut encoder)
        // The encoder stops at the limit and flags the header instead of failing.
        .is_ok_and(|info| !info.truncation)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::health::SharedView;
    use super::super::zone::{Member, tests as zt};
    use super::*;
    use hickory_server::net::NetError;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::{Name, RecordType};
    use hickory_server::zone_handler::MessageResponse;
    use std::net::IpAddr;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut buf = Vec::new();
            let info = response
                .destructive_emit(&mut BinEncoder::new(&mut buf))
                .map_err(NetError::from)?;
            *self.0.lock().unwrap() = Some(buf);
            Ok(info)
        }
    }

    fn handler(view: View, qps: u32) -> Handler {
        let shared = SharedView::new();
        shared.set(view);
        Handler {
            zone: zt::zone(),
            view: shared,
            limiter: Arc::new(RateLimiter::new(qps, qps)),
        }
    }

    async fn ask(
        h: &Handler,
        q: &str,
        t: RecordType,
        edns: Option<u16>,
        proto: Protocol,
    ) -> Option<Message> {
        let mut m = Message::query();
        m.metadata.id = 42;
        m.add_query(Query::query(Name::from_ascii(q).unwrap(), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        let req = Request::from_bytes(
            m.to_vec().unwrap(),
            "192.0.2.1:5353".parse().unwrap(),
            proto,
        )
        .unwrap();
        let cap = Capture::default();
        h.handle_request::<_, TokioTime>(&req, cap.clone()).await;
        let bytes = cap.0.lock().unwrap().take()?;
        Some(Message::from_vec(&bytes).unwrap())
    }

    fn big_view() -> View {
        View {
            ready: true,
            serial: 1,
            members: (1..=60)
                .map(|id| Member {
                    id,
                    api: Some((IpAddr::from([10, 0, 1, id as u8]), 8080)),
                    voter: false,
                    healthy: true,
                    https_port: None,
                })
                .collect(),
            statics: Default::default(),
        }
    }

    #[tokio::test]
    async fn answers_with_edns_when_asked() {
        let h = handler(zt::view3(), 1000);
        let m = ask(
            &h,
            "chat.corp.lan.",
            RecordType::A,
            Some(1232),
            Protocol::Udp,
        )
        .await
        .unwrap();
        assert_eq!(m.answers.len(), 2);
        assert!(m.metadata.authoritative);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp)
            .await
            .unwrap();
        assert!(m.edns.is_none());
        assert_eq!(m.answers.len(), 2);
    }

    #[tokio::test]
    async fn oversized_udp_answers_are_truncated_with_opt() {
        let h = handler(big_view(), 1000);
        // 60 A records are ~960 bytes: too big for 512, fine for 1232, fine over TCP.
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp)
            .await
            .unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        let m = ask(
            &h,
            "chat.corp.lan.",
            RecordType::A,
            Some(512),
            Protocol::Udp,
        )
        .await
        .unwrap();
        assert!(m.metadata.truncation);
        assert!(m.edns.is_some(), "the TC=1 reply keeps its OPT record");
        let m = ask(
            &h,
            "chat.corp.lan.",
            RecordType::A,
            Some(1232),
            Protocol::Udp,
        )
        .await
        .unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Tcp)
            .await
            .unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
    }

    #[tokio::test]
    async fn over_the_limit_queries_are_dropped_or_slipped() {
        let h = handler(zt::view3(), 2);
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp).await;
            outcomes.push(m.map(|m| m.metadata.truncation));
        }
        assert_eq!(
            outcomes,
            [Some(false), Some(false), None, Some(true), None, Some(true)]
        );
        // TCP is not limited: it cannot be spoofed, so it cannot amplify.
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Tcp)
            .await
            .unwrap();
        assert_eq!(m.answers.len(), 2);
    }

    #[tokio::test]
    async fn a_stale_view_is_not_served() {
        // A ready view that has not been refreshed for longer than MAX_VIEW_AGE (stuck health
        // task, or a process that was frozen) must not be served.
        let h = handler(zt::view3(), 100);
        let old = Instant::now()
            .checked_sub(MAX_VIEW_AGE + Duration::from_secs(1))
            .unwrap();
        h.view.set_at(zt::view3(), old);
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp)
            .await
            .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        h.view.set(zt::view3());
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp)
            .await
            .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }

    #[tokio::test]
    async fn a_question_given_as_a_compression_pointer_gets_a_parseable_answer() {
        // Found by the fuzz test: the name is a pointer to offset 0 (into the header).
        let h = handler(zt::view3(), 1000);
        for hexq in [
            "014601000001000000000000c00000010001",
            "018d01000001000000000000c00000010001",
        ] {
            let bytes = hex::decode(hexq).unwrap();
            let req = Request::from_bytes(bytes, "192.0.2.1:5353".parse().unwrap(), Protocol::Udp)
                .unwrap();
            let cap = Capture::default();
            h.handle_request::<_, TokioTime>(&req, cap.clone()).await;
            let out = cap.0.lock().unwrap().take().unwrap();
            let m = Message::from_vec(&out).unwrap_or_else(|e| {
                panic!("unparseable answer {} to {hexq}: {e}", hex::encode(&out))
            });
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::Refused,
                "out of zone"
            );
            assert_eq!(m.queries.len(), 1);
        }
        assert!(names_have_pointer(&hex::decode("c00000010001").unwrap(), 1));
        assert!(!names_have_pointer(
            &hex::decode("036e733100000100010000010001").unwrap(),
            2
        ));
        assert!(
            names_have_pointer(&hex::decode("036e73").unwrap(), 1),
            "truncated"
        );
        // A normal query still echoes its own bytes.
        let m = ask(&h, "chat.corp.lan.", RecordType::A, None, Protocol::Udp)
            .await
            .unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
}
