//! Answering queries from the current zone.
//!
//! hickory parses packets (malformed ones never reach us) and encodes
//! answers, truncating over UDP to the client's advertised size (512 without
//! EDNS) with the TC bit set, so the client retries over TCP.

use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};

/// The largest UDP answer we send and the size we advertise: 1232 bytes, the
/// DNS Flag Day 2020 / RFC 9715 value that fits an IPv6 minimum MTU without
/// fragmentation (and the WireGuard tunnel's).
pub const UDP_PAYLOAD: u16 = 1232;
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use prometheus::{IntCounter, IntCounterVec};

use crate::zone::{Answer, Zone};

/// The zone being served; replaced whole on every refresh.
#[derive(Default)]
pub struct ZoneCell(RwLock<Option<Arc<Zone>>>);

impl ZoneCell {
    pub fn get(&self) -> Option<Arc<Zone>> {
        self.0
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set(&self, zone: Arc<Zone>) {
        match self.0.write() {
            Ok(mut g) => *g = Some(zone),
            Err(p) => *p.into_inner() = Some(zone),
        }
    }
}

#[derive(Clone)]
pub struct Handler {
    pub zone: Arc<ZoneCell>,
    pub axfr_allow: Vec<IpNet>,
    pub queries: QueryCounters,
    /// UDP answers served from a socket's answer cache.
    pub cache_hits: IntCounter,
}

/// Query types get their own label; everything else is `other` (labels must
/// stay bounded whatever clients send).
const QTYPES: [&str; 11] = [
    "A", "AAAA", "SRV", "SOA", "NS", "TXT", "CNAME", "AXFR", "IXFR", "ANY", "other",
];
const RCODES: [&str; 8] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL", "FORMERR", "NOTIMP", "BADVERS", "other",
];

fn qtype_index(t: RecordType) -> usize {
    match t {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::SRV => 2,
        RecordType::SOA => 3,
        RecordType::NS => 4,
        RecordType::TXT => 5,
        RecordType::CNAME => 6,
        RecordType::AXFR => 7,
        RecordType::IXFR => 8,
        RecordType::ANY => 9,
        _ => 10,
    }
}

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::Refused => 2,
        ResponseCode::ServFail => 3,
        ResponseCode::FormErr => 4,
        ResponseCode::NotImp => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// `queries_total{qtype,rcode}`, resolved once: the hot path increments an
/// atomic instead of looking a label pair up in a locked map per query.
#[derive(Clone)]
pub struct QueryCounters(Vec<IntCounter>);

impl QueryCounters {
    pub fn new(vec: &IntCounterVec) -> Self {
        let mut all = Vec::with_capacity(QTYPES.len() * RCODES.len());
        for q in QTYPES {
            for r in RCODES {
                all.push(vec.with_label_values(&[q, r]));
            }
        }
        Self(all)
    }

    fn inc(&self, qtype: RecordType, rcode: ResponseCode) {
        self.inc_at(Self::index(qtype, rcode));
    }

    /// The counter a (type, rcode) pair lands in (the UDP answer cache
    /// keeps it with each answer, so a cached answer is counted the same).
    pub fn index(qtype: RecordType, rcode: ResponseCode) -> usize {
        qtype_index(qtype) * RCODES.len() + rcode_index(rcode)
    }

    pub fn inc_at(&self, index: usize) {
        if let Some(c) = self.0.get(index) {
            c.inc();
        }
    }
}

impl Handler {
    /// Counts a packet answered FORMERR before it reached the handler.
    pub fn count_formerr(&self) {
        self.queries
            .inc(RecordType::Unknown(0), ResponseCode::FormErr);
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let query = request.queries.queries();
        let qtype = query
            .first()
            .map(|q| q.query_type())
            .unwrap_or(RecordType::Unknown(0));

        // Decide the answer.
        let zone = self.zone.get();
        let mut answers: Vec<&Record> = Vec::new();
        let mut soa: Vec<&Record> = Vec::new();
        let rcode = if request.metadata.op_code != OpCode::Query {
            ResponseCode::NotImp
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 6.1.3: we speak EDNS version 0 only; the answer
            // carries our version so the client can fall back.
            ResponseCode::BADVERS
        } else if query.len() != 1 {
            ResponseCode::FormErr
        } else if let Some(zone) = zone.as_deref() {
            let q = &query[0];
            let class_ok = matches!(q.query_class(), DNSClass::IN | DNSClass::ANY);
            if !class_ok {
                ResponseCode::Refused
            } else if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
                let allowed = request.protocol() == Protocol::Tcp
                    && self
                        .axfr_allow
                        .iter()
                        .any(|n| n.contains(&request.src().ip()));
                if allowed && zone.origin == *q.name() {
                    // RFC 5936: SOA, everything else, SOA. One message:
                    // hickory caps it at 64 KiB (see docs/dns-sync.md).
                    answers.push(zone.soa());
                    answers.extend(zone.all_but_soa());
                    answers.push(zone.soa());
                    ResponseCode::NoError
                } else {
                    ResponseCode::Refused
                }
            } else {
                match zone.lookup(q.name(), qtype) {
                    Answer::Refused => ResponseCode::Refused,
                    Answer::NxDomain => {
                        soa.push(zone.soa());
                        ResponseCode::NXDomain
                    }
                    Answer::NoData => {
                        soa.push(zone.soa());
                        ResponseCode::NoError
                    }
                    Answer::Records(r) => {
                        answers = r;
                        ResponseCode::NoError
                    }
                }
            }
        } else {
            // No zone loaded yet: fail rather than deny names that exist.
            ResponseCode::ServFail
        };
        meta.response_code = rcode;
        meta.authoritative = matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        self.queries.inc(qtype, rcode);

        // EDNS answered with our own UDP payload size (the client's bounds
        // what we send; see udp.rs) and the DO bit echoed (RFC 3225).
        let edns = request.edns.as_ref().map(|e| {
            let mut out = Edns::new();
            out.set_max_payload(UDP_PAYLOAD);
            out.set_dnssec_ok(e.flags().dnssec_ok);
            out.set_version(0);
            out
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(meta, answers, std::iter::empty(), soa, std::iter::empty());
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS answer failed");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
