//! HTTP layer: request intake, validation, fault injection, dispatch, logging.

use super::api::{self, ApiErr, ApiResult, ListOptions, Zone};
use super::spec::{Checked, Cred, Reject, ReqView, Spec};
use super::{Fault, FaultFilter, Record, RequestRecord, API_PREFIX};
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const BODY_LIMIT: usize = 64 << 20;

pub struct Shared {
    pub spec: Spec,
    pub tokens: Vec<String>,
    pub legacy: Option<(String, String)>,
    pub reject_undeclared: bool,
    pub started: Instant,
    pub state: Mutex<State>,
}

pub struct State {
    pub zones: Vec<Zone>,
    pub seeds: Vec<Record>,
    pub log: Vec<RequestRecord>,
    pub violations: Vec<String>,
    pub self_check: Vec<String>,
    pub faults: VecDeque<(Fault, FaultFilter)>,
    pub always: Option<Fault>,
    pub batch_limit: usize,
    pub batch_enabled: bool,
    pub list: ListOptions,
    /// Record contents refused with a validation error (lower-case).
    pub refused_contents: BTreeSet<String>,
    /// Quote the presented credential in authentication errors.
    pub echo_credentials: bool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new().fallback(handle).with_state(shared);
    let _ = axum::serve(listener, app).await;
}

/// What will be written back.
struct Out {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    retry_after: Option<u64>,
}

impl Out {
    fn json(status: u16, v: &Value) -> Out {
        Out {
            status,
            body: v.to_string().into_bytes(),
            content_type: "application/json",
            retry_after: None,
        }
    }
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut b = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, self.content_type);
        if let Some(s) = self.retry_after {
            b = b.header(header::RETRY_AFTER, s.to_string());
        }
        b.body(Body::from(self.body))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

pub fn failure(code: u32, message: &str) -> Value {
    json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
}

fn success(result: Value, info: Option<Value>) -> Value {
    let mut v = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(i) = info {
        v["result_info"] = i;
    }
    v
}

fn html(status: u16, title: &str) -> Out {
    let body = format!(
        "<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n<center><h1>{status} {title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    );
    Out {
        status,
        body: body.into_bytes(),
        content_type: "text/html",
        retry_after: None,
    }
}

async fn handle(AxState(sh): AxState<Arc<Shared>>, req: Request) -> Response {
    let at = sh.started.elapsed();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_ascii_uppercase();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let headers: HeaderMap = parts.headers;
    let header_list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let hdr = |n: &str| -> Option<String> {
        let vals: Vec<&str> = headers.get_all(n).iter().filter_map(|v| v.to_str().ok()).collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    };
    let label = if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    };
    let mut violations = Vec::new();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            violations.push(format!("request body could not be read: {e}"));
            Bytes::new()
        }
    };

    // Pick the fault for this request.
    let fault = {
        let mut st = sh.lock();
        let pos = st.faults.iter().position(|(_, f)| f.matches(&method, &path));
        match pos.and_then(|i| st.faults.remove(i)) {
            Some((f, _)) => Some(f),
            None => st.always.clone(),
        }
    };

    // Validate against the OpenAPI document.
    let api_path = path.strip_prefix(API_PREFIX).filter(|p| p.starts_with('/'));
    let checked = match api_path {
        Some(p) => sh.spec.check(
            &ReqView {
                method: &method,
                path: p,
                query: Some(&query),
                header: &hdr,
                body: &bytes,
            },
            sh.reject_undeclared,
        ),
        None => Checked {
            violations: vec![format!("path is outside the API base {API_PREFIX}")],
            reject: Some(Reject::NoRoute),
            ..Default::default()
        },
    };
    violations.extend(checked.violations.iter().cloned());

    if let Some(Fault::Slow(d)) = &fault {
        tokio::time::sleep(*d).await;
    }

    let pre_empt = match &fault {
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut o = Out::json(429, &failure(10100, "More than 1200 requests per 300 seconds reached"));
            o.retry_after = Some(*retry_after_secs);
            Some(o)
        }
        Some(Fault::ServerError(code)) => Some(match code {
            502 => html(502, "Bad Gateway"),
            503 => html(503, "Service Temporarily Unavailable"),
            504 => html(504, "Gateway Time-out"),
            c => Out::json(*c, &failure(10001, "Internal server error")),
        }),
        Some(Fault::Raw { status, body }) => Some(Out {
            status: *status,
            body: body.clone().into_bytes(),
            content_type: "application/json",
            retry_after: None,
        }),
        Some(Fault::Garbage) => Some(Out {
            status: 200,
            body: b"<html><body>upstream says hi \x00\xff not json".to_vec(),
            content_type: "application/json",
            retry_after: None,
        }),
        _ => None,
    };

    let out = match pre_empt {
        Some(o) => o,
        None => {
            let (status, v, semantic) = sh.execute(&checked, &method, api_path.unwrap_or(&path));
            if let Some(s) = semantic {
                violations.push(s);
            }
            // Self-check of our own response against the document.
            if !checked.template.is_empty() {
                let problems = sh
                    .spec
                    .check_response(&checked.template, &method.to_ascii_lowercase(), status, &v);
                if !problems.is_empty() {
                    let mut st = sh.lock();
                    st.self_check
                        .extend(problems.into_iter().map(|p| format!("{label} -> {status}: {p}")));
                }
            }
            let o = Out::json(status, &v);
            match &fault {
                Some(Fault::TruncatedJson) => {
                    let mut o = o;
                    o.status = 200;
                    o.body.truncate(o.body.len() / 2);
                    o
                }
                Some(Fault::AppliedButLost) => html(502, "Bad Gateway"),
                _ => o,
            }
        }
    };

    let body_json: Option<Value> = serde_json::from_slice(&bytes).ok();
    let record = RequestRecord {
        at,
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body_json,
        raw_body: String::from_utf8_lossy(&bytes).into_owned(),
        status: out.status,
        vantage_node: hdr("x-vantage-node"),
        vantage_term: hdr("x-vantage-term"),
        headers: header_list,
        fault,
    };
    let late = match &record.fault {
        Some(Fault::SlowAfterApplying(d)) => Some(*d),
        _ => None,
    };
    {
        let mut st = sh.lock();
        st.violations
            .extend(violations.into_iter().map(|v| format!("{label}: {v}")));
        st.log.push(record);
    }
    // Logged (and applied) before the wait: a client that gives up meanwhile
    // cannot undo either.
    if let Some(d) = late {
        tokio::time::sleep(d).await;
    }
    out.into_response()
}

impl Shared {
    fn authorized(&self, alternatives: &[Vec<Cred>]) -> Result<(), (u32, String)> {
        let valid = |c: &Cred| match c {
            Cred::Bearer(t) => self.tokens.iter().any(|x| x == t),
            Cred::Header(name, v) => match (&self.legacy, name.as_str()) {
                (Some((email, _)), "x-auth-email") => email.eq_ignore_ascii_case(v),
                (Some((_, key)), "x-auth-key") => key == v,
                _ => false,
            },
            Cred::Other => false,
        };
        if alternatives.iter().any(|creds| creds.iter().all(valid)) {
            return Ok(());
        }
        let bearer = alternatives.iter().flatten().any(|c| matches!(c, Cred::Bearer(_)));
        let (code, mut msg) = if bearer {
            (10000, "Authentication error".to_string())
        } else {
            (9103, "Unknown X-Auth-Key or X-Auth-Email".to_string())
        };
        if self.lock().echo_credentials {
            let presented: Vec<String> = alternatives
                .iter()
                .flatten()
                .filter_map(|c| match c {
                    Cred::Bearer(t) => Some(format!("Bearer {t}")),
                    Cred::Header(name, v) => Some(format!("{name}: {v}")),
                    Cred::Other => None,
                })
                .collect();
            msg = format!("{msg} (got {})", presented.join(", "));
        }
        Err((code, msg))
    }

    /// Run a validated request against the simulated state.
    /// Returns (status, body, semantic violation).
    fn execute(&self, c: &Checked, method: &str, api_path: &str) -> (u16, Value, Option<String>) {
        if let Some(rej) = &c.reject {
            let detail = c.violations.join("; ");
            let (status, code, msg) = match rej {
                Reject::NoRoute => (400, 7000, "No route for that URI".to_string()),
                Reject::MethodNotAllowed => (400, 7001, "Method not allowed for this route".to_string()),
                Reject::NoCredentials => (403, 10000, "Authentication error".to_string()),
                Reject::BadPath => (
                    400,
                    7003,
                    format!("Could not route to {api_path}, perhaps your object identifier is invalid?"),
                ),
                Reject::BadQuery => (400, 6003, format!("Invalid request: {detail}")),
                Reject::BadBody => (400, 9207, format!("Request body is invalid: {detail}")),
            };
            return (status, failure(code, &msg), None);
        }
        if !c.anonymous_ok {
            if let Err((code, msg)) = self.authorized(&c.security) {
                return (403, failure(code, &msg), None);
            }
        }
        let empty = Value::Null;
        let body = c.body.as_ref().unwrap_or(&empty);
        let mut st = self.lock();
        let st = &mut *st;
        let refused = match method {
            "POST" | "PUT" | "PATCH" => refused_content(body, &st.refused_contents),
            _ => None,
        };
        let zone_id = c.path_params.get("zone_id").cloned().unwrap_or_default();
        let record_id = c.path_params.get("dns_record_id").cloned().unwrap_or_default();
        let no_zone = || {
            ApiErr::new(
                404,
                7003,
                format!("Could not route to {api_path}, perhaps your object identifier is invalid?"),
            )
        };
        let res: ApiResult = match (c.template.as_str(), method) {
            ("/zones", "GET") => api::list_zones(&st.zones, &c.query),
            (t, m) if t.starts_with("/zones/{zone_id}/") => {
                let list = st.list;
                let batch_enabled = st.batch_enabled;
                let limit = st.batch_limit;
                match st.zones.iter_mut().find(|z| z.id == zone_id) {
                    None => Err(no_zone()),
                    Some(_) if t.ends_with("/batch") && !batch_enabled => Err(no_zone()),
                    Some(_) if refused.is_some() => Err(ApiErr::new(
                        400,
                        1004,
                        format!(
                            "DNS Validation Error: content {:?} is refused",
                            refused.unwrap_or_default()
                        ),
                    )),
                    Some(zone) => match (t, m) {
                        ("/zones/{zone_id}/dns_records", "GET") => api::list_records(zone, &c.query, list),
                        ("/zones/{zone_id}/dns_records", "POST") => api::create(zone, body),
                        ("/zones/{zone_id}/dns_records/{dns_record_id}", "GET") => api::get_record(zone, &record_id),
                        ("/zones/{zone_id}/dns_records/{dns_record_id}", "PATCH") => {
                            api::update(zone, &record_id, body, true)
                        }
                        ("/zones/{zone_id}/dns_records/{dns_record_id}", "PUT") => {
                            api::update(zone, &record_id, body, false)
                        }
                        ("/zones/{zone_id}/dns_records/{dns_record_id}", "DELETE") => api::delete(zone, &record_id),
                        ("/zones/{zone_id}/dns_records/batch", "POST") => api::batch(zone, body, limit),
                        _ => Err(unimplemented_op(t, m)),
                    },
                }
            }
            (t, m) => Err(unimplemented_op(t, m)),
        };
        match res {
            Ok((result, info)) => (200, success(result, info), None),
            Err(e) => (e.status, failure(e.code, &e.message), e.violation),
        }
    }
}

/// A content of `body` (a record, or a batch's patches, puts and posts) that is
/// in `refused`.
fn refused_content(body: &Value, refused: &BTreeSet<String>) -> Option<String> {
    if refused.is_empty() {
        return None;
    }
    let hit = |r: &Value| {
        r.get("content")
            .and_then(Value::as_str)
            .filter(|c| refused.contains(&c.to_ascii_lowercase()))
            .map(str::to_string)
    };
    let batch_ops = ["patches", "puts", "posts"]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_array))
        .flatten();
    hit(body).or_else(|| batch_ops.into_iter().find_map(hit))
}

fn unimplemented_op(t: &str, m: &str) -> ApiErr {
    ApiErr {
        status: 400,
        code: 7000,
        message: "No route for that URI".into(),
        violation: Some(format!("the double does not implement {m} {t}")),
    }
}
