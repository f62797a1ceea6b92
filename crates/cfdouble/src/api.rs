//! The simulated Cloudflare semantics (no HTTP here).

use super::util::{new_id, now_rfc3339};
use super::Record;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An API-level error to be rendered as a Cloudflare envelope.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub status: u16,
    pub code: u32,
    pub message: String,
    /// Set when the request was malformed in a way Cloudflare rejects (a client bug):
    /// the text is recorded in `Double::violations()`.
    pub violation: Option<String>,
}

impl ApiErr {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
            violation: None,
        }
    }
    /// 400 / 1004 "DNS Validation Error" that is also a recorded violation.
    fn invalid(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        ApiErr {
            status: 400,
            code: 1004,
            message: format!("DNS Validation Error: {detail}"),
            violation: Some(detail),
        }
    }
    fn not_found() -> Self {
        ApiErr::new(404, 81044, "Record does not exist.")
    }
}

pub type ApiResult = Result<(Value, Option<Value>), ApiErr>;

/// Code used when a batch has more operations than the plan allows (not documented by
/// Cloudflare; chosen for the double).
pub const BATCH_LIMIT_CODE: u32 = 81098;

#[derive(Debug, Clone)]
pub struct Zone {
    pub id: String,
    pub name: String,
    pub account_id: String,
    pub created_on: String,
    pub records: Vec<Record>,
}

impl Zone {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "status": "active",
            "paused": false,
            "type": "full",
            "development_mode": 0,
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            "original_name_servers": [],
            "original_registrar": null,
            "original_dnshost": null,
            "created_on": self.created_on,
            "modified_on": self.created_on,
            "activated_on": self.created_on,
            "owner": {"id": self.account_id, "type": "user", "email": "dns-owner@example.com"},
            "account": {"id": self.account_id, "name": "Vantage test account"},
            "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3,
                     "phishing_detected": false, "multiple_railguns_allowed": false},
            "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
            "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0,
                     "currency": "USD", "frequency": "", "is_subscribed": false, "can_subscribe": false,
                     "legacy_id": "free", "legacy_discount": false, "externally_managed": false}
        })
    }
}

/// Record types the double simulates.
const SUPPORTED: [&str; 7] = ["A", "AAAA", "CNAME", "TXT", "MX", "NS", "PTR"];

fn proxiable(t: &str) -> bool {
    matches!(t, "A" | "AAAA" | "CNAME")
}

fn q_str<'a>(q: &'a BTreeMap<String, Value>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(Value::as_str)
}

fn q_num(q: &BTreeMap<String, Value>, k: &str, default: u64) -> u64 {
    q.get(k)
        .and_then(Value::as_f64)
        .map(|f| f.max(1.0) as u64)
        .unwrap_or(default)
}

/// Paginate `items`; returns (page slice, result_info). `max_per_page` caps the
/// requested page size (the answer's `per_page` reports the size used).
fn paginate(
    items: Vec<Value>,
    q: &BTreeMap<String, Value>,
    default_per_page: u64,
    max_per_page: Option<u64>,
) -> (Value, Option<Value>) {
    let page = q_num(q, "page", 1);
    let per_page = q_num(q, "per_page", default_per_page).min(max_per_page.unwrap_or(u64::MAX).max(1));
    let total = items.len() as u64;
    let total_pages = total.div_ceil(per_page);
    let start = (page - 1).saturating_mul(per_page);
    let slice: Vec<Value> = items.into_iter().skip(start as usize).take(per_page as usize).collect();
    let info = json!({
        "page": page,
        "per_page": per_page,
        "count": slice.len(),
        "total_count": total,
        "total_pages": total_pages,
    });
    (Value::Array(slice), Some(info))
}

/// `name` filter of GET /zones with its optional operator prefix.
fn zone_name_matches(filter: &str, name: &str) -> bool {
    let ops = [
        "not_equal:",
        "equal:",
        "starts_with_case_sensitive:",
        "ends_with_case_sensitive:",
        "contains_case_sensitive:",
        "starts_with:",
        "ends_with:",
        "contains:",
    ];
    let (op, arg) = ops
        .iter()
        .find_map(|p| filter.strip_prefix(p).map(|a| (p.trim_end_matches(':'), a)))
        .unwrap_or(("equal", filter));
    let (n, a) = (name.to_ascii_lowercase(), arg.to_ascii_lowercase());
    match op {
        "equal" => n == a,
        "not_equal" => n != a,
        "starts_with" => n.starts_with(&a),
        "ends_with" => n.ends_with(&a),
        "contains" => n.contains(&a),
        "starts_with_case_sensitive" => name.starts_with(arg),
        "ends_with_case_sensitive" => name.ends_with(arg),
        "contains_case_sensitive" => name.contains(arg),
        _ => false,
    }
}

pub fn list_zones(zones: &[Zone], q: &BTreeMap<String, Value>) -> ApiResult {
    type Pred<'a> = Box<dyn Fn(&Zone) -> bool + 'a>;
    let mut preds: Vec<Pred<'_>> = Vec::new();
    if let Some(n) = q_str(q, "name") {
        preds.push(Box::new(move |z| zone_name_matches(n, &z.name)));
    }
    if let Some(s) = q_str(q, "status") {
        preds.push(Box::new(move |_| s == "active"));
    }
    if let Some(a) = q_str(q, "account.id") {
        preds.push(Box::new(move |z| z.account_id == a));
    }
    if let Some(a) = q_str(q, "account.name") {
        preds.push(Box::new(move |_| zone_name_matches(a, "Vantage test account")));
    }
    let any = q_str(q, "match") == Some("any");
    let mut hits: Vec<&Zone> = zones
        .iter()
        .filter(|z| {
            preds.is_empty()
                || if any {
                    preds.iter().any(|p| p(z))
                } else {
                    preds.iter().all(|p| p(z))
                }
        })
        .collect();
    if let Some(o) = q_str(q, "order") {
        if o == "name" {
            hits.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    if q_str(q, "direction") == Some("desc") {
        hits.reverse();
    }
    let items = hits.iter().map(|z| z.to_json()).collect();
    Ok(paginate(items, q, 20, None))
}

/// How `GET .../dns_records` departs from the documented behaviour (see
/// [`crate::Double::set_max_per_page`] and [`crate::Double::set_ignore_list_filters`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ListOptions {
    pub max_per_page: Option<u64>,
    pub ignore_filters: bool,
}

pub fn list_records(zone: &Zone, q: &BTreeMap<String, Value>, opts: ListOptions) -> ApiResult {
    type Pred<'a> = Box<dyn Fn(&Record) -> bool + 'a>;
    let lc = |s: &str| s.to_ascii_lowercase();
    let mut preds: Vec<Pred<'_>> = Vec::new();
    if let Some(n) = q_str(q, "name") {
        let n = lc(n.trim_end_matches('.'));
        preds.push(Box::new(move |r| r.name == n));
    }
    if let Some(t) = q_str(q, "type") {
        preds.push(Box::new(move |r| r.record_type == t));
    }
    if let Some(c) = q_str(q, "content") {
        preds.push(Box::new(move |r| r.content.eq_ignore_ascii_case(c)));
    }
    if let Some(p) = q.get("proxied").and_then(Value::as_bool) {
        preds.push(Box::new(move |r| r.proxied == p));
    }
    let comment = |r: &Record| r.comment.as_deref().map(lc);
    for key in [
        "comment",
        "comment.exact",
        "comment.contains",
        "comment.startswith",
        "comment.endswith",
    ] {
        if let Some(v) = q_str(q, key) {
            let v = lc(v);
            preds.push(Box::new(move |r| {
                comment(r).is_some_and(|c| match key {
                    "comment.contains" => c.contains(&v),
                    "comment.startswith" => c.starts_with(&v),
                    "comment.endswith" => c.ends_with(&v),
                    _ => c == v,
                })
            }));
        }
    }
    if q.contains_key("comment.present") {
        preds.push(Box::new(|r| r.comment.is_some()));
    }
    if q.contains_key("comment.absent") {
        preds.push(Box::new(|r| r.comment.is_none()));
    }
    if let Some(s) = q_str(q, "search") {
        let s = lc(s);
        preds.push(Box::new(move |r| {
            r.name.contains(&s) || lc(&r.content).contains(&s) || comment(r).is_some_and(|c| c.contains(&s))
        }));
    }
    // Tag filters, combined by tag_match, then treated as one more predicate.
    let mut tag_preds: Vec<Pred<'_>> = Vec::new();
    let split = |t: &str| match t.split_once(':') {
        Some((a, b)) => (lc(a), Some(lc(b))),
        None => (lc(t), None),
    };
    for key in [
        "tag",
        "tag.present",
        "tag.absent",
        "tag.exact",
        "tag.contains",
        "tag.startswith",
        "tag.endswith",
    ] {
        if let Some(v) = q_str(q, key) {
            let (want_name, want_val) = split(v);
            let key = if key == "tag" {
                if want_val.is_some() {
                    "tag.exact"
                } else {
                    "tag.present"
                }
            } else {
                key
            };
            tag_preds.push(Box::new(move |r| {
                let mut tags = r.tags.iter().map(|t| split(t));
                match key {
                    "tag.present" => tags.any(|(n, _)| n == want_name),
                    "tag.absent" => !tags.any(|(n, _)| n == want_name),
                    _ => {
                        let wv = want_val.clone().unwrap_or_default();
                        tags.any(|(n, val)| {
                            let val = val.unwrap_or_default();
                            n == want_name
                                && match key {
                                    "tag.contains" => val.contains(&wv),
                                    "tag.startswith" => val.starts_with(&wv),
                                    "tag.endswith" => val.ends_with(&wv),
                                    _ => val == wv,
                                }
                        })
                    }
                }
            }));
        }
    }
    if !tag_preds.is_empty() {
        let tag_any = q_str(q, "tag_match") == Some("any");
        preds.push(Box::new(move |r| {
            if tag_any {
                tag_preds.iter().any(|p| p(r))
            } else {
                tag_preds.iter().all(|p| p(r))
            }
        }));
    }
    if opts.ignore_filters {
        preds.clear();
    }
    let any = q_str(q, "match") == Some("any");
    let mut hits: Vec<&Record> = zone
        .records
        .iter()
        .filter(|r| {
            preds.is_empty()
                || if any {
                    preds.iter().any(|p| p(r))
                } else {
                    preds.iter().all(|p| p(r))
                }
        })
        .collect();
    match q_str(q, "order").unwrap_or("type") {
        "name" => hits.sort_by(|a, b| a.name.cmp(&b.name)),
        "content" => hits.sort_by(|a, b| a.content.cmp(&b.content)),
        "ttl" => hits.sort_by_key(|r| r.ttl),
        "proxied" => hits.sort_by_key(|r| r.proxied),
        _ => hits.sort_by(|a, b| a.record_type.cmp(&b.record_type)),
    }
    if q_str(q, "direction") == Some("desc") {
        hits.reverse();
    }
    let items = hits.iter().map(|r| r.to_json()).collect();
    Ok(paginate(items, q, 100, opts.max_per_page))
}

pub fn get_record(zone: &Zone, id: &str) -> ApiResult {
    zone.records
        .iter()
        .find(|r| r.id == id)
        .map(|r| (r.to_json(), None))
        .ok_or_else(ApiErr::not_found)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Post,
    Put,
    Patch,
}

/// Normalise a record name the way Cloudflare does (relative names get the zone appended).
pub fn normalize_name(name: &str, zone: &str) -> String {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let z = zone.to_ascii_lowercase();
    if n == "@" || n.is_empty() {
        z
    } else if n == z || n.ends_with(&format!(".{z}")) {
        n
    } else {
        format!("{n}.{z}")
    }
}

/// Build the new state of a record from a request body (POST/PUT replace, PATCH merges).
fn build(zone: &Zone, body: &Value, base: Option<&Record>, kind: Kind) -> Result<Record, ApiErr> {
    let Some(b) = body.as_object() else {
        return Err(ApiErr::invalid("request body must be an object"));
    };
    let s = |k: &str| b.get(k).and_then(Value::as_str);
    let now = now_rfc3339();
    let mut r = match (kind, base) {
        (Kind::Patch, Some(old)) => old.clone(),
        (_, old) => Record {
            id: old.map(|o| o.id.clone()).unwrap_or_else(new_id),
            zone_id: zone.id.clone(),
            zone_name: zone.name.clone(),
            name: String::new(),
            record_type: String::new(),
            content: String::new(),
            proxiable: false,
            proxied: false,
            ttl: 1,
            priority: None,
            comment: None,
            tags: vec![],
            settings: json!({}),
            meta: json!({"auto_added": false, "managed_by_apps": false, "managed_by_argo_tunnel": false}),
            created_on: old.map(|o| o.created_on.clone()).unwrap_or_else(|| now.clone()),
            modified_on: now.clone(),
        },
    };
    r.modified_on = now;
    if let Some(t) = s("type") {
        r.record_type = t.to_string();
    } else if kind != Kind::Patch {
        return Err(ApiErr::invalid("'type' is required"));
    }
    if !SUPPORTED.contains(&r.record_type.as_str()) {
        return Err(ApiErr::invalid(format!(
            "record type {:?} is not supported by the test double (supported: {})",
            r.record_type,
            SUPPORTED.join(", ")
        )));
    }
    match s("name") {
        Some(n) => r.name = normalize_name(n, &zone.name),
        None if kind != Kind::Patch => return Err(ApiErr::invalid("'name' is required")),
        None => {}
    }
    if r.name.len() > 255 {
        return Err(ApiErr::invalid("name is longer than 255 characters"));
    }
    match s("content") {
        Some(c) => r.content = c.to_string(),
        None if kind != Kind::Patch => {
            return Err(ApiErr::invalid(format!("content is required for {}", r.record_type)))
        }
        None => {}
    }
    match r.record_type.as_str() {
        "A" => match r.content.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => r.content = ip.to_string(),
            Err(_) => {
                return Err(ApiErr::invalid(format!(
                    "content {:?} is not a valid IPv4 address",
                    r.content
                )))
            }
        },
        "AAAA" => match r.content.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => r.content = ip.to_string(),
            Err(_) => {
                return Err(ApiErr::invalid(format!(
                    "content {:?} is not a valid IPv6 address",
                    r.content
                )))
            }
        },
        "CNAME" | "NS" | "PTR" | "MX" => r.content = r.content.trim_end_matches('.').to_ascii_lowercase(),
        _ => {}
    }
    if r.content.is_empty() {
        return Err(ApiErr::invalid("content must not be empty"));
    }
    if kind != Kind::Patch {
        r.proxied = false;
        r.comment = None;
        r.tags = vec![];
        r.ttl = 1;
        r.priority = None;
        r.settings = json!({});
    }
    if let Some(p) = b.get("proxied") {
        r.proxied = p
            .as_bool()
            .ok_or_else(|| ApiErr::invalid("proxied must be a boolean"))?;
    }
    if let Some(t) = b.get("ttl") {
        let f = t.as_f64().unwrap_or(-1.0);
        if f.fract() != 0.0 || !(f == 1.0 || (30.0..=86400.0).contains(&f)) {
            return Err(ApiErr::invalid(format!(
                "ttl {t} must be 1 (automatic) or an integer in 30..=86400"
            )));
        }
        r.ttl = f as u32;
    }
    if let Some(p) = b.get("priority") {
        let f = p.as_f64().unwrap_or(-1.0);
        if f.fract() != 0.0 || !(0.0..=65535.0).contains(&f) {
            return Err(ApiErr::invalid(format!("priority {p} must be an integer in 0..=65535")));
        }
        r.priority = Some(f as u16);
    }
    if r.record_type == "MX" && r.priority.is_none() {
        return Err(ApiErr::invalid("MX records need a priority"));
    }
    match b.get("comment") {
        Some(Value::String(c)) => r.comment = Some(c.clone()),
        Some(Value::Null) => r.comment = None,
        Some(_) => return Err(ApiErr::invalid("comment must be a string")),
        None => {}
    }
    if let Some(t) = b.get("tags") {
        let tags = t.as_array().ok_or_else(|| ApiErr::invalid("tags must be an array"))?;
        r.tags = tags
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiErr::invalid("tags must be strings"))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(st) = b.get("settings") {
        r.settings = st.clone();
    }
    r.proxiable = proxiable(&r.record_type);
    if r.proxied && !r.proxiable {
        let mut e = ApiErr::invalid(format!("{} records cannot be proxied", r.record_type));
        e.code = 9004;
        e.message = "This record type cannot be proxied.".into();
        return Err(e);
    }
    Ok(r)
}

/// Conflicts of `r` with the other records of the zone.
fn conflicts(records: &[Record], r: &Record, kind: Kind) -> Result<(), ApiErr> {
    let others = records.iter().filter(|o| o.id != r.id);
    for o in others {
        if o.record_type == r.record_type && o.name == r.name && o.content.eq_ignore_ascii_case(&r.content) {
            return Err(if kind == Kind::Post {
                ApiErr::new(400, 81057, "The record already exists.")
            } else {
                ApiErr::new(400, 81058, "An identical record already exists.")
            });
        }
        let addr = |t: &str| matches!(t, "A" | "AAAA" | "CNAME");
        if o.name == r.name
            && addr(&o.record_type)
            && addr(&r.record_type)
            && (o.record_type == "CNAME" || r.record_type == "CNAME")
        {
            return Err(ApiErr::new(
                400,
                81053,
                "An A, AAAA, or CNAME record with that host already exists.",
            ));
        }
    }
    Ok(())
}

fn do_create(zone: &Zone, records: &mut Vec<Record>, body: &Value) -> Result<Record, ApiErr> {
    let r = build(zone, body, None, Kind::Post)?;
    conflicts(records, &r, Kind::Post)?;
    records.push(r.clone());
    Ok(r)
}

fn do_update(zone: &Zone, records: &mut [Record], id: &str, body: &Value, kind: Kind) -> Result<Record, ApiErr> {
    let idx = records.iter().position(|r| r.id == id).ok_or_else(ApiErr::not_found)?;
    let r = build(zone, body, Some(&records[idx]), kind)?;
    conflicts(records, &r, kind)?;
    records[idx] = r.clone();
    Ok(r)
}

fn do_delete(records: &mut Vec<Record>, id: &str) -> Result<Record, ApiErr> {
    let idx = records.iter().position(|r| r.id == id).ok_or_else(ApiErr::not_found)?;
    Ok(records.remove(idx))
}

pub fn create(zone: &mut Zone, body: &Value) -> ApiResult {
    let mut recs = std::mem::take(&mut zone.records);
    let res = do_create(zone, &mut recs, body);
    zone.records = recs;
    res.map(|r| (r.to_json(), None))
}

pub fn update(zone: &mut Zone, id: &str, body: &Value, patch: bool) -> ApiResult {
    let mut recs = std::mem::take(&mut zone.records);
    let res = do_update(zone, &mut recs, id, body, if patch { Kind::Patch } else { Kind::Put });
    zone.records = recs;
    res.map(|r| (r.to_json(), None))
}

pub fn delete(zone: &mut Zone, id: &str) -> ApiResult {
    do_delete(&mut zone.records, id).map(|r| (json!({"id": r.id}), None))
}

/// POST /batch: deletes, patches, puts, posts; all-or-nothing.
pub fn batch(zone: &mut Zone, body: &Value, limit: usize) -> ApiResult {
    let empty = Vec::new();
    let list = |k: &str| body.get(k).and_then(Value::as_array).unwrap_or(&empty);
    let (dels, patches, puts, posts) = (list("deletes"), list("patches"), list("puts"), list("posts"));
    let total = dels.len() + patches.len() + puts.len() + posts.len();
    if total > limit {
        return Err(ApiErr::new(
            400,
            BATCH_LIMIT_CODE,
            format!("Batch request has {total} operations, which exceeds the limit of {limit} per request."),
        ));
    }
    let mut work = zone.records.clone();
    let id_of = |op: &Value| op.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    let mut out: Map<String, Value> = Map::new();
    let mut results = Vec::new();
    for op in dels {
        results.push(do_delete(&mut work, &id_of(op))?.to_json());
    }
    out.insert("deletes".into(), Value::Array(std::mem::take(&mut results)));
    for op in patches {
        results.push(do_update(zone, &mut work, &id_of(op), op, Kind::Patch)?.to_json());
    }
    out.insert("patches".into(), Value::Array(std::mem::take(&mut results)));
    for op in puts {
        results.push(do_update(zone, &mut work, &id_of(op), op, Kind::Put)?.to_json());
    }
    out.insert("puts".into(), Value::Array(std::mem::take(&mut results)));
    for op in posts {
        results.push(do_create(zone, &mut work, op)?.to_json());
    }
    out.insert("posts".into(), Value::Array(results));
    zone.records = work;
    Ok((Value::Object(out), None))
}
