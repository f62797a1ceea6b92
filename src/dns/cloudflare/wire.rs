//! Cloudflare's wire format: the JSON envelope, record and zone types, the
//! bodies Vantage sends, parsing and pagination helpers, error-code checks,
//! and the classification of one HTTP answer.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::dns::RecordType;

/// Longest piece of an unparseable error body quoted in an error message.
const SNIPPET_LEN: usize = 200;

/// "The record already exists."
pub const CODE_RECORD_EXISTS: i64 = 81057;

/// "An identical record already exists."
pub const CODE_IDENTICAL_RECORD_EXISTS: i64 = 81058;

/// "Record does not exist."
pub const CODE_RECORD_DOES_NOT_EXIST: i64 = 81044;

/// Error codes meaning the credentials are wrong or lack permission.
const AUTH_CODES: &[i64] = &[6003, 6111, 9103, 9106, 9107, 9109, 10000, 10001];

/// One entry of `errors` / `messages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub(super) struct CfMessage {
    #[serde(default, deserialize_with = "lenient_code")]
    pub(super) code: i64,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) error_chain: Option<Vec<CfMessage>>,
}

impl fmt::Display for CfMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)?;
        for c in self.error_chain.iter().flatten() {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

fn lenient_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match &v {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ResultInfo {
    #[serde(default)]
    pub(super) page: Option<f64>,
    #[serde(default)]
    pub(super) per_page: Option<f64>,
    #[serde(default)]
    pub(super) total_count: Option<f64>,
    #[serde(default)]
    pub(super) total_pages: Option<f64>,
}

/// The response envelope every endpoint uses.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    pub(super) success: bool,
    #[serde(default)]
    pub(super) errors: Option<Vec<CfMessage>>,
    #[serde(default)]
    pub(super) result: serde_json::Value,
    #[serde(default)]
    pub(super) result_info: Option<ResultInfo>,
}

/// A DNS record as listed; only the fields used here (others are ignored).
#[derive(Clone, Debug, Deserialize)]
pub(super) struct CfRecord {
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) rtype: String,
    pub(super) name: String,
    #[serde(default)]
    pub(super) content: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub(super) struct CfZone {
    pub(super) id: String,
    pub(super) name: String,
}

#[derive(Debug, Serialize)]
pub(super) struct PostRecord<'a> {
    pub(super) name: &'a str,
    #[serde(rename = "type")]
    pub(super) rtype: &'static str,
    pub(super) content: &'a str,
    pub(super) ttl: u32,
    pub(super) proxied: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) comment: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub(super) struct DeleteId<'a> {
    pub(super) id: &'a str,
}

#[derive(Debug, Serialize)]
pub(super) struct BatchBody<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) deletes: Vec<DeleteId<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) posts: Vec<PostRecord<'a>>,
}

pub(super) fn parse_envelope(body: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed response body ({} bytes): {e}", body.len()))
}

pub(super) fn parse_records(result: serde_json::Value) -> Result<Vec<CfRecord>, String> {
    if result.is_null() {
        return Err("response has no result".to_string());
    }
    serde_json::from_value(result).map_err(|e| format!("malformed record list: {e}"))
}

pub(super) fn parse_zones(result: serde_json::Value) -> Result<Vec<CfZone>, String> {
    if result.is_null() {
        return Err("response has no result".to_string());
    }
    serde_json::from_value(result).map_err(|e| format!("malformed zone list: {e}"))
}

/// Whether another page follows page `page` (which held `got` items).
pub(super) fn has_more_pages(info: Option<&ResultInfo>, page: u64, got: usize, requested_per_page: u64) -> bool {
    if got == 0 {
        return false;
    }
    let Some(ri) = info else { return false };
    if let Some(tp) = ri.total_pages {
        return (page as f64) < tp;
    }
    if let (Some(tc), Some(pp)) = (ri.total_count, ri.per_page.or(Some(requested_per_page as f64))) {
        let current = ri.page.unwrap_or(page as f64);
        return current * pp < tc;
    }
    got as u64 >= requested_per_page
}

pub(super) fn fmt_errors(errors: &[CfMessage]) -> String {
    if errors.is_empty() {
        "no error details".to_string()
    } else {
        errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
    }
}

pub(super) fn has_code(errors: &[CfMessage], codes: &[i64]) -> bool {
    errors
        .iter()
        .any(|e| codes.contains(&e.code) || e.error_chain.as_deref().is_some_and(|c| has_code(c, codes)))
}

pub(super) fn is_auth_failure(status: u16, errors: &[CfMessage]) -> bool {
    status == 401 || status == 403 || has_code(errors, AUTH_CODES)
}

/// Whether two record contents are the same (addresses compared as addresses).
pub(super) fn same_content(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

pub(super) fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

pub(super) fn record_type(s: &str) -> Option<RecordType> {
    match s {
        "A" => Some(RecordType::A),
        "AAAA" => Some(RecordType::AAAA),
        _ => None,
    }
}

/// How one HTTP attempt ended.
pub(super) enum Attempt {
    Done(Envelope),
    Refused {
        status: u16,
        errors: Vec<CfMessage>,
    },
    RateLimited(Option<Duration>),
    /// `sent`: the server may have processed the request.
    Transient {
        msg: String,
        sent: bool,
    },
}

pub(super) fn classify(what: &str, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Attempt {
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::RateLimited(retry_after);
    }
    if status.is_server_error() {
        let detail = parse_envelope(body).ok().and_then(|e| e.errors).map(|e| fmt_errors(&e));
        return Attempt::Transient {
            msg: format!(
                "{what}: HTTP {code}{}",
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            sent: true,
        };
    }
    if status.is_success() {
        return match parse_envelope(body) {
            Ok(env) if env.success => Attempt::Done(env),
            Ok(env) => Attempt::Refused {
                status: code,
                errors: env.errors.unwrap_or_default(),
            },
            Err(e) => Attempt::Transient {
                msg: format!("{what}: HTTP {code}: {e}"),
                sent: true,
            },
        };
    }
    match parse_envelope(body) {
        Ok(env) => Attempt::Refused {
            status: code,
            errors: env.errors.unwrap_or_default(),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.chars().take(SNIPPET_LEN).collect();
            Attempt::Refused {
                status: code,
                errors: vec![CfMessage {
                    code: 0,
                    message: format!("unparseable body: {:?}", snippet.trim()),
                    error_chain: None,
                }],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/cloudflare/vectors")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn parses_every_vector_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/cloudflare/vectors");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let env =
                parse_envelope(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.contains("zones") {
                assert!(!parse_zones(env.result).unwrap().is_empty());
            } else if name.contains("81057") {
                assert!(!env.success);
            } else {
                assert!(!parse_records(env.result).unwrap().is_empty());
            }
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn cloudflare_go_list_page() {
        let env = parse_envelope(&vector("cloudflare-go_v0.116.0_dns_list_page_1.json")).unwrap();
        assert!(env.success);
        let info = env.result_info.as_ref().unwrap();
        assert!(has_more_pages(Some(info), 1, 3, 100));
        assert!(!has_more_pages(Some(info), 2, 2, 100));
        let recs = parse_records(env.result).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].name, "sub1.example.com");
        assert_eq!(recs[1].content.as_deref(), Some("198.51.100.5"));
        assert_eq!(record_type(&recs[0].rtype), Some(RecordType::A));
    }

    #[test]
    fn octodns_records_and_zones() {
        let env = parse_envelope(&vector("octodns_dns_records_page_1.json")).unwrap();
        assert!(has_more_pages(env.result_info.as_ref(), 1, 10, 100));
        let recs = parse_records(env.result).unwrap();
        assert_eq!(recs.len(), 10);
        assert_eq!(recs.iter().filter(|r| record_type(&r.rtype).is_some()).count(), 5);
        assert_eq!(
            recs[4].content.as_deref(),
            Some("2601:644:500:e210:62f8:1dff:feb8:947a")
        );
        let env = parse_envelope(&vector("octodns_zones_page_1.json")).unwrap();
        let zones = parse_zones(env.result).unwrap();
        assert_eq!(zones[0].id, "234234243423aaabb334342aaa343433");
        assert_eq!(zones[1].name, "github.io");
    }

    #[test]
    fn lexicon_81057_is_refused_with_the_code() {
        let body = vector("lexicon_81057_2020.json");
        match classify("create", StatusCode::BAD_REQUEST, None, &body) {
            Attempt::Refused { status, errors } => {
                assert_eq!(status, 400);
                assert!(has_code(&errors, &[CODE_RECORD_EXISTS]));
                assert_eq!(fmt_errors(&errors), "[81057] The record already exists.");
            }
            _ => panic!("not refused"),
        }
    }

    #[test]
    fn classify_failures() {
        assert!(matches!(
            classify("x", StatusCode::OK, None, br#"{"success":true,"errors":[],"res"#),
            Attempt::Transient { sent: true, .. }
        ));
        assert!(matches!(
            classify(
                "x",
                StatusCode::OK,
                None,
                br#"{"success":false,"errors":[{"code":1004,"message":"bad"}],"messages":[],"result":null}"#
            ),
            Attempt::Refused { status: 200, .. }
        ));
        assert!(matches!(
            classify("x", StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), b""),
            Attempt::RateLimited(Some(d)) if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify("x", StatusCode::BAD_GATEWAY, None, b"<html>"),
            Attempt::Transient { sent: true, .. }
        ));
        assert!(matches!(
            classify("x", StatusCode::NOT_FOUND, None, b"<html>"),
            Attempt::Refused { status: 404, .. }
        ));
        // Error codes given as strings are accepted.
        let env = parse_envelope(br#"{"success":false,"errors":[{"code":"81044","message":"gone"}]}"#).unwrap();
        assert!(has_code(&env.errors.unwrap(), &[CODE_RECORD_DOES_NOT_EXIST]));
    }

    #[test]
    fn pagination_without_total_pages() {
        let ri = ResultInfo {
            page: Some(1.0),
            per_page: Some(2.0),
            total_count: Some(5.0),
            total_pages: None,
        };
        assert!(has_more_pages(Some(&ri), 1, 2, 100));
        let ri = ResultInfo {
            page: Some(3.0),
            per_page: Some(2.0),
            total_count: Some(5.0),
            total_pages: None,
        };
        assert!(!has_more_pages(Some(&ri), 3, 1, 100));
        assert!(!has_more_pages(None, 1, 100, 100));
    }
}
