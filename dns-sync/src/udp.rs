//! The UDP fast path: one loop per socket that receives, answers and sends
//! in the same task.
//!
//! hickory-server's own UDP loop spawns a task per query and hands every
//! answer to a channel drained by another task; under load those two hops,
//! and the wake-ups they cost, dominated the profile. Here the work per
//! query is a parse, a lookup in an in-memory zone and an encode, so doing
//! it inline is cheaper than scheduling it. Parsing and encoding are still
//! hickory's (`Request::from_bytes`, `MessageResponse::destructive_emit`);
//! TCP (and AXFR) stay on hickory's server.
//!
//! Each loop also keeps the answers it encoded, keyed by the query's bytes
//! after the ID. An answer is a pure function of those bytes and the zone
//! (the client's address only matters for AXFR, which is never cached), so
//! a repeated query is answered by copying the bytes and patching the ID.
//! The cache belongs to one zone: a new zone empties it, and it is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::server::{Handler, QueryCounters, UDP_PAYLOAD};
use crate::zone::Zone;

/// Largest query we read; anything longer is truncated and fails to parse.
const MAX_QUERY: usize = 4096;

/// Most distinct queries one socket remembers answers for, and most bytes
/// of queries and answers; past either the cache starts over (a flood of
/// distinct or padded queries cannot grow memory).
const CACHE_MAX: usize = 16_384;
const CACHE_MAX_BYTES: usize = 4 << 20;

/// Sends an answer straight back on the socket it came in on, and keeps a
/// copy for the answer cache.
#[derive(Clone)]
struct Direct {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    sent: Arc<Mutex<Option<Vec<u8>>>>,
    /// The largest answer this client takes.
    limit: u16,
}

struct Cached {
    bytes: Vec<u8>,
    counter: usize,
}

/// Encoded answers of one zone, keyed by the query after its ID.
#[derive(Default)]
struct AnswerCache {
    zone: Option<Arc<Zone>>,
    answers: HashMap<Vec<u8>, Cached>,
    /// Bytes of keys and answers held.
    bytes: usize,
}

impl AnswerCache {
    /// Forgets everything when the zone was swapped.
    fn follow(&mut self, zone: &Option<Arc<Zone>>) {
        let same = match (&self.zone, zone) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.answers.clear();
            self.bytes = 0;
            self.zone = zone.clone();
        }
    }

    /// Remembers an answer, starting over when a bound would be passed.
    fn insert(&mut self, key: Vec<u8>, answer: Cached) {
        let size = key.len() + answer.bytes.len();
        if self.answers.len() >= CACHE_MAX || self.bytes + size > CACHE_MAX_BYTES {
            self.answers.clear();
            self.bytes = 0;
        }
        let key_len = key.len();
        self.bytes += size;
        if let Some(old) = self.answers.insert(key, answer) {
            self.bytes -= key_len + old.bytes.len();
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Direct {
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
        // RFC 1035 4.2.1: 512 bytes without EDNS; with it, what the client
        // advertised, but never over our own UDP_PAYLOAD. Anything larger
        // is cut with TC set by the encoder.
        let max = self.limit;
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        match response.destructive_emit(&mut encoder) {
            Ok(info) => {
                self.socket.send_to(&bytes, self.dst).await?;
                if let Ok(mut slot) = self.sent.lock() {
                    *slot = Some(bytes);
                }
                Ok(info)
            }
            Err(e) => {
                // An answer that cannot be encoded still gets an answer.
                let _ = self.socket.send_to(&error_header(id, 0, 2), self.dst).await;
                Err(e.into())
            }
        }
    }
}

/// A bare response header: `id`, QR set, `opcode_bits` (already in
/// position) and `rcode`, no records.
fn error_header(id: u16, opcode_bits: u8, rcode: u8) -> [u8; 12] {
    let [hi, lo] = id.to_be_bytes();
    [
        hi,
        lo,
        0x80 | opcode_bits,
        rcode & 0x0f,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Serves one socket until `shutdown`.
pub async fn serve(socket: Arc<UdpSocket>, handler: Handler, shutdown: CancellationToken) {
    let mut buf = vec![0u8; MAX_QUERY];
    let mut cache = AnswerCache::default();
    let mut reply = Vec::with_capacity(512);
    let sent = Arc::new(Mutex::new(None));
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, src) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP-induced errors (ECONNREFUSED from an earlier send) are
                // per-packet; back off briefly on anything else.
                tracing::debug!(error = %e, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        if src.port() == 0 || src.ip().is_unspecified() {
            continue;
        }
        let packet = &buf[..n];
        let zone = handler.zone.get();
        cache.follow(&zone);
        // A query (QR clear) seen before: the same answer, with its ID.
        if n >= 12 && packet[2] & 0x80 == 0 {
            if let Some(hit) = cache.answers.get(&packet[2..]) {
                reply.clear();
                reply.extend_from_slice(&hit.bytes);
                reply[..2].copy_from_slice(&packet[..2]);
                handler.queries.inc_at(hit.counter);
                handler.cache_hits.inc();
                let _ = socket.send_to(&reply, src).await;
                continue;
            }
        }
        match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
            Ok(request) => {
                // Never answer answers: that is how reflection loops start.
                if request.metadata.message_type == MessageType::Response {
                    continue;
                }
                let direct = Direct {
                    socket: socket.clone(),
                    dst: src,
                    sent: sent.clone(),
                    limit: request
                        .edns
                        .as_ref()
                        .map_or(512, |e| e.max_payload().clamp(512, UDP_PAYLOAD)),
                };
                handler
                    .handle_request::<_, TokioTime>(&request, direct)
                    .await;
                let answer = sent.lock().ok().and_then(|mut s| s.take());
                let qtype = request
                    .queries
                    .queries()
                    .first()
                    .map(|q| q.query_type())
                    .unwrap_or(RecordType::Unknown(0));
                // (BADVERS answers are rare and keep half their rcode in
                // the OPT record, which the cache's counting does not read.)
                let cacheable = zone.is_some()
                    && request.metadata.op_code == OpCode::Query
                    && !matches!(qtype, RecordType::AXFR | RecordType::IXFR)
                    && request.edns.as_ref().is_none_or(|e| e.version() == 0);
                if let (Some(bytes), true) = (answer, cacheable) {
                    if bytes.len() >= 12 {
                        let rcode = ResponseCode::from(0, bytes[3] & 0x0f);
                        cache.insert(
                            packet[2..].to_vec(),
                            Cached {
                                counter: QueryCounters::index(qtype, rcode),
                                bytes,
                            },
                        );
                    }
                }
            }
            Err(_) if n >= 12 && packet[2] & 0x80 == 0 => {
                // A readable header but a broken body: FORMERR, as hickory's
                // own loop does. Shorter packets and responses get nothing.
                handler.count_formerr();
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let _ = socket
                    .send_to(&error_header(id, packet[2] & 0x78, 1), src)
                    .await;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AnswerCache, Cached, CACHE_MAX_BYTES};

    #[test]
    fn the_answer_cache_is_bounded_in_bytes() {
        let mut c = AnswerCache::default();
        let answer = || Cached {
            bytes: vec![0; 1200],
            counter: 0,
        };
        for i in 0..10_000u32 {
            let mut key = vec![0u8; 3000];
            key[..4].copy_from_slice(&i.to_be_bytes());
            c.insert(key, answer());
            assert!(c.bytes <= CACHE_MAX_BYTES);
        }
        // The same key again replaces, not adds.
        let before = c.bytes;
        c.insert(vec![1; 10], answer());
        c.insert(vec![1; 10], answer());
        assert_eq!(c.bytes, before + 1210);
    }

    #[test]
    fn error_header_layout() {
        let h = super::error_header(0xabcd, 0, 1);
        assert_eq!(h[..4], [0xab, 0xcd, 0x80, 0x01]);
        assert!(h[4..].iter().all(|b| *b == 0));
    }
}
