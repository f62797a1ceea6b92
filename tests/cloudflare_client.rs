//! The Cloudflare client against a local fake of the API (axum).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use vantage::dns::cloudflare::{Cloudflare, CloudflareConfig, Credentials, Secret};
use vantage::dns::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};

const TOKEN: &str = "tok-SECRET-0123456789abcdef";
const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// Content the fake refuses with a validation error.
const POISON: &str = "192.0.2.66";

// ---------------------------------------------------------------------------
// Fake Cloudflare
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Rec {
    id: String,
    name: String,
    rtype: String,
    content: String,
    ttl: u64,
    proxied: bool,
    comment: Option<String>,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status (HTML body for 5xx), doing nothing.
    Status(u16),
    /// 429 with `retry-after: n`.
    TooMany(u64),
    /// Do the work, then answer with a truncated JSON body.
    Truncate,
    /// Do the work, then answer only after this long.
    Slow(Duration),
    /// Answer with this status and raw body, doing nothing.
    Raw(u16, &'static str),
}

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Value,
    at: Instant,
}

struct Fake {
    records: Vec<Rec>,
    next_id: u64,
    page_size: usize,
    batch: bool,
    batch_limit: usize,
    ignore_filters: bool,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    log: Vec<Logged>,
    token: String,
}

type Shared = Arc<Mutex<Fake>>;

struct Reply {
    status: u16,
    body: String,
    retry_after: Option<u64>,
    delay: Option<Duration>,
}

fn ok(result: Value) -> Reply {
    let body = json!({"success": true, "errors": [], "messages": [], "result": result});
    Reply {
        status: 200,
        body: body.to_string(),
        retry_after: None,
        delay: None,
    }
}

fn fail(status: u16, code: i64, message: &str) -> Reply {
    let body =
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null});
    Reply {
        status,
        body: body.to_string(),
        retry_after: None,
        delay: None,
    }
}

fn rec_json(r: &Rec) -> Value {
    json!({
        "id": r.id, "type": r.rtype, "name": r.name, "content": r.content, "ttl": r.ttl,
        "proxied": r.proxied, "proxiable": true, "comment": r.comment, "tags": [],
        "created_on": "2024-01-01T00:00:00Z", "modified_on": "2024-01-01T00:00:00Z", "meta": {}
    })
}

impl Fake {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:032x}", self.next_id)
    }

    fn validate_post(&self, records: &[Rec], p: &Value, exists_code: i64) -> Result<Rec, Reply> {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let rtype = p["type"].as_str().unwrap_or_default().to_string();
        let content = p["content"].as_str().unwrap_or_default().to_string();
        if content == POISON || p["ttl"].as_u64().is_none() || name.is_empty() {
            return Err(fail(400, 1004, "DNS Validation Error"));
        }
        if records
            .iter()
            .any(|r| r.name == name && r.rtype == rtype && r.content == content)
        {
            let msg = if exists_code == 81057 {
                "The record already exists."
            } else {
                "An identical record already exists."
            };
            return Err(fail(400, exists_code, msg));
        }
        Ok(Rec {
            id: String::new(),
            name,
            rtype,
            content,
            ttl: p["ttl"].as_u64().unwrap_or(1),
            proxied: p["proxied"].as_bool().unwrap_or(false),
            comment: p["comment"].as_str().map(String::from),
        })
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        q: &HashMap<String, String>,
        h: &HeaderMap,
        body: &Value,
    ) -> Reply {
        let bearer_ok = h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {}", self.token));
        let legacy_ok = h.get("x-auth-email").is_some_and(|v| v == "ops@example.com")
            && h.get("x-auth-key").and_then(|v| v.to_str().ok()) == Some(self.token.as_str());
        if !bearer_ok && !legacy_ok {
            // Echo what was sent, as a careless server might: the client must redact it.
            let got = h
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            return fail(403, 10000, &format!("Authentication error (got {got})"));
        }
        let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
        let key: &'static str = match (method.as_str(), seg.as_slice()) {
            ("GET", ["zones"]) => "zones",
            ("GET", ["zones", _, "dns_records"]) => "list",
            ("POST", ["zones", _, "dns_records"]) => "create",
            ("POST", ["zones", _, "dns_records", "batch"]) => "batch",
            ("DELETE", ["zones", _, "dns_records", _]) => "delete",
            _ => return fail(404, 7000, "No route for that URI"),
        };
        if key != "zones" && seg[1] != ZONE_ID {
            return fail(
                404,
                7003,
                "Could not route to /zones/..., perhaps your object identifier is invalid?",
            );
        }
        let fault = self.faults.get_mut(key).and_then(|f| f.pop_front());
        match &fault {
            Some(Fault::Status(s)) => {
                return Reply {
                    status: *s,
                    body: format!("<html>{s}</html>"),
                    retry_after: None,
                    delay: None,
                }
            }
            Some(Fault::TooMany(secs)) => {
                let mut r = fail(429, 10100, "More than 1200 requests per 300 seconds reached. Please wait and consider throttling your request speed");
                r.retry_after = Some(*secs);
                return r;
            }
            Some(Fault::Raw(s, b)) => {
                return Reply {
                    status: *s,
                    body: b.to_string(),
                    retry_after: None,
                    delay: None,
                }
            }
            _ => {}
        }
        let mut reply = match key {
            "zones" => {
                let name = q.get("name").cloned().unwrap_or_default();
                let zones: Vec<Value> = [
                    ("example.com", ZONE_ID),
                    ("example.org", "99999999999999999999999999999999"),
                ]
                .iter()
                .filter(|(n, _)| name.is_empty() || *n == name)
                .map(|(n, id)| json!({"id": id, "name": n, "status": "active"}))
                .collect();
                ok(Value::Array(zones))
            }
            "list" => {
                let matching: Vec<&Rec> = self
                    .records
                    .iter()
                    .filter(|r| self.ignore_filters || q.get("type").is_none_or(|t| *t == r.rtype))
                    .filter(|r| self.ignore_filters || q.get("name").is_none_or(|n| *n == r.name))
                    .collect();
                let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(100);
                let per_page = per_page.min(self.page_size);
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let total_pages = matching.len().div_ceil(per_page);
                let items: Vec<Value> = matching
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|r| rec_json(r))
                    .collect();
                let body = json!({
                    "success": true, "errors": [], "messages": [], "result": items,
                    "result_info": {"page": page, "per_page": per_page, "count": items.len(),
                                    "total_count": matching.len(), "total_pages": total_pages}
                });
                Reply {
                    status: 200,
                    body: body.to_string(),
                    retry_after: None,
                    delay: None,
                }
            }
            "create" => match self.validate_post(&self.records, body, 81057) {
                Ok(mut r) => {
                    r.id = self.new_id();
                    let v = rec_json(&r);
                    self.records.push(r);
                    ok(v)
                }
                Err(e) => e,
            },
            "delete" => {
                let id = seg[3];
                match self.records.iter().position(|r| r.id == id) {
                    Some(i) => {
                        self.records.remove(i);
                        ok(json!({"id": id}))
                    }
                    None => fail(404, 81044, "Record does not exist."),
                }
            }
            "batch" => {
                if !self.batch {
                    return fail(404, 7000, "No route for that URI");
                }
                let deletes = body["deletes"].as_array().cloned().unwrap_or_default();
                let posts = body["posts"].as_array().cloned().unwrap_or_default();
                if deletes.len() + posts.len() > self.batch_limit {
                    return fail(400, 81300, "Too many operations in batch");
                }
                let mut next = self.records.clone();
                let mut out_d = Vec::new();
                for d in &deletes {
                    let id = d["id"].as_str().unwrap_or_default();
                    match next.iter().position(|r| r.id == id) {
                        Some(i) => out_d.push(rec_json(&next.remove(i))),
                        None => return fail(400, 81044, "Record does not exist."),
                    }
                }
                let mut out_p = Vec::new();
                for p in &posts {
                    match self.validate_post(&next, p, 81058) {
                        Ok(mut r) => {
                            r.id = self.new_id();
                            out_p.push(rec_json(&r));
                            next.push(r);
                        }
                        Err(e) => return e,
                    }
                }
                self.records = next;
                ok(json!({"deletes": out_d, "posts": out_p}))
            }
            _ => unreachable!(),
        };
        match fault {
            Some(Fault::Truncate) => {
                let n = reply.body.len() / 2;
                reply.body.truncate(n);
            }
            Some(Fault::Slow(d)) => reply.delay = Some(d),
            _ => {}
        }
        reply
    }
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().strip_prefix("/client/v4").unwrap_or(uri.path()).to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut f = s.lock().unwrap();
        f.log.push(Logged {
            method: method.to_string(),
            path: path.clone(),
            query: q.clone(),
            headers: headers.clone(),
            body: body.clone(),
            at: Instant::now(),
        });
        f.route(&method, &path, &q, &headers, &body)
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(s) = reply.retry_after {
        resp.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
    }
    resp
}

#[derive(Clone)]
struct Server {
    state: Shared,
    base: String,
}

impl Server {
    async fn start() -> Server {
        let state: Shared = Arc::new(Mutex::new(Fake {
            records: Vec::new(),
            next_id: 0,
            page_size: 100,
            batch: true,
            batch_limit: 200,
            ignore_filters: false,
            faults: HashMap::new(),
            log: Vec::new(),
            token: TOKEN.to_string(),
        }));
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server {
            state,
            base: format!("http://{addr}/client/v4"),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn add(&self, name: &str, rtype: &str, content: &str) -> String {
        self.with(|f| {
            let id = f.new_id();
            f.records.push(Rec {
                id: id.clone(),
                name: name.into(),
                rtype: rtype.into(),
                content: content.into(),
                ttl: 300,
                proxied: false,
                comment: None,
            });
            id
        })
    }

    fn fault(&self, route: &'static str, fault: Fault) {
        self.with(|f| f.faults.entry(route).or_default().push_back(fault));
    }

    fn log(&self) -> Vec<Logged> {
        self.with(|f| f.log.clone())
    }

    fn count(&self, method: &str, suffix: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.method == method && l.path.ends_with(suffix))
            .count()
    }

    fn records_named(&self, name: &str) -> Vec<Rec> {
        self.with(|f| f.records.iter().filter(|r| r.name == name).cloned().collect())
    }
}

fn config(server: &Server) -> CloudflareConfig {
    let mut c = CloudflareConfig::new("example.com", Credentials::Token(Secret::new(TOKEN)));
    c.api_base = server.base.clone();
    c.request_timeout = Duration::from_secs(3);
    c
}

fn client(server: &Server) -> Cloudflare {
    Cloudflare::new(config(server)).unwrap()
}

fn owned(entries: &[(&str, &[&str])]) -> Owned {
    let mut o = Owned::default();
    for (name, addrs) in entries {
        o.names.insert(
            name.to_string(),
            addrs.iter().map(|a| a.to_string()).collect::<BTreeSet<_>>(),
        );
    }
    o
}

fn rec(name: &str, content: &str) -> Record {
    Record::new(name, content)
}

fn all_applied(out: &[(Change, Outcome)]) {
    for (c, o) in out {
        assert_eq!(o, &Outcome::Applied, "{c}");
    }
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn list_follows_pagination_through_three_pages() {
    let s = Server::start().await;
    s.with(|f| f.page_size = 2);
    let addrs: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
    for a in &addrs {
        s.add("www.example.com", "A", a);
    }
    let refs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    let cf = client(&s);
    let got = cf.list(&owned(&[("www.example.com", &refs)])).await.unwrap();
    assert_eq!(got.len(), 6);
    let lists: Vec<Logged> = s
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("/dns_records"))
        .collect();
    assert_eq!(lists.len(), 3);
    for (i, l) in lists.iter().enumerate() {
        assert_eq!(l.query["page"], (i + 1).to_string());
        assert_eq!(l.query["type"], "A");
        assert_eq!(l.query["name"], "www.example.com");
        assert!(l.query["per_page"].parse::<u64>().unwrap() >= 100);
    }
}

#[tokio::test]
async fn list_returns_only_owned_records() {
    for ignore_filters in [false, true] {
        let s = Server::start().await;
        s.with(|f| {
            f.ignore_filters = ignore_filters;
            f.page_size = 3;
        });
        let mine_a = s.add("www.example.com", "A", "10.0.0.1");
        let mine_v6 = s.add("www.example.com", "AAAA", "2001:db8::1");
        s.add("www.example.com", "A", "10.0.0.9"); // address not configured
        s.add("mail.example.com", "A", "10.0.0.1"); // name not configured
        s.add("www.example.com", "TXT", "v=spf1 -all");
        s.add("www.example.com", "MX", "10.0.0.1");
        s.add("api.example.com", "AAAA", "2001:db8::2"); // api only has v4 configured
        let mine_api = s.add("api.example.com", "A", "10.0.0.2");
        let cf = client(&s);
        // The configured spelling of the v6 address differs from Cloudflare's.
        let o = owned(&[
            ("www.example.com", &["10.0.0.1", "2001:DB8:0::1"]),
            ("api.example.com", &["10.0.0.2"]),
        ]);
        let got = cf.list(&o).await.unwrap();
        let mut want = vec![
            Existing {
                record: rec("www.example.com", "10.0.0.1"),
                id: mine_a,
            },
            Existing {
                record: rec("www.example.com", "2001:DB8:0::1"),
                id: mine_v6,
            },
            Existing {
                record: rec("api.example.com", "10.0.0.2"),
                id: mine_api,
            },
        ];
        want.sort();
        assert_eq!(got, want, "ignore_filters={ignore_filters}");
        assert!(got.iter().all(|e| o.owns(&e.record)));
    }
}

#[tokio::test]
async fn list_failures_are_errors_never_empty() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let mut c = config(&s);
    c.max_attempts = 2;
    let cf = Cloudflare::new(c).unwrap();
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);

    s.fault(
        "list",
        Fault::Raw(
            200,
            r#"{"success":false,"errors":[{"code":1002,"message":"bad filter"}],"messages":[],"result":null}"#,
        ),
    );
    let e = cf.list(&o).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Permanent(m) if m.contains("[1002] bad filter")),
        "{e}"
    );

    s.fault(
        "list",
        Fault::Raw(
            400,
            r#"{"success":false,"errors":[{"code":9106,"message":"Missing X-Auth-Key"}],"messages":[],"result":null}"#,
        ),
    );
    let e = cf.list(&o).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Permanent(m) if m.contains("HTTP 400") && m.contains("9106")),
        "{e}"
    );

    s.fault("list", Fault::Raw(200, "not json"));
    s.fault("list", Fault::Raw(200, r#"{"success":true,"result":[{"id":"x"#));
    let e = cf.list(&o).await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e}");

    s.fault(
        "list",
        Fault::Raw(200, r#"{"success":true,"errors":[],"messages":[],"result":null}"#),
    );
    assert!(cf.list(&o).await.is_err());

    s.fault("list", Fault::Status(502));
    s.fault("list", Fault::Status(502));
    assert!(matches!(cf.list(&o).await, Err(ProviderError::Transient(_))));

    // And it works again afterwards.
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
}

#[tokio::test]
async fn zone_id_is_looked_up_once_or_taken_from_config() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);
    let cf = client(&s);
    cf.list(&o).await.unwrap();
    cf.list(&o).await.unwrap();
    let zones: Vec<Logged> = s.log().into_iter().filter(|l| l.path == "/zones").collect();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].query["name"], "example.com");

    let s2 = Server::start().await;
    let mut c = config(&s2);
    c.zone_id = Some(ZONE_ID.into());
    Cloudflare::new(c).unwrap().list(&o).await.unwrap();
    assert_eq!(s2.count("GET", "/zones"), 0);

    let mut c = config(&s2);
    c.zone_name = "nowhere.net".into();
    let e = Cloudflare::new(c)
        .unwrap()
        .list(&owned(&[("www.nowhere.net", &["10.0.0.1"])]))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Permanent(_)), "{e}");
}

// ---------------------------------------------------------------------------
// Applying
// ---------------------------------------------------------------------------

#[tokio::test]
async fn batch_apply_is_chunked_and_deletes_go_first() {
    let s = Server::start().await;
    let mut changes = Vec::new();
    for i in 0..440u32 {
        changes.push(Change::Create(rec(
            "www.example.com",
            &format!("10.1.{}.{}", i / 200, i % 200),
        )));
        if i % 44 == 0 {
            let id = s.add("www.example.com", "A", &format!("10.9.0.{i}"));
            changes.push(Change::Delete(Existing {
                record: rec("www.example.com", &format!("10.9.0.{i}")),
                id,
            }));
        }
    }
    assert_eq!(changes.len(), 450);
    let mut c = config(&s);
    c.batch_limit = 200;
    c.ttl = 120;
    c.proxied = true;
    let cf = Cloudflare::new(c).unwrap();
    let out = cf.apply(&changes).await.unwrap();
    assert_eq!(out.len(), 450);
    assert_eq!(out.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(), changes);
    all_applied(&out);
    let batches: Vec<Logged> = s.log().into_iter().filter(|l| l.path.ends_with("/batch")).collect();
    let sizes: Vec<(usize, usize)> = batches
        .iter()
        .map(|b| {
            (
                b.body["deletes"].as_array().map_or(0, |a| a.len()),
                b.body["posts"].as_array().map_or(0, |a| a.len()),
            )
        })
        .collect();
    assert_eq!(sizes, vec![(10, 190), (0, 200), (0, 50)]);
    let post = &batches[0].body["posts"][0];
    assert_eq!(post["name"], "www.example.com");
    assert_eq!(post["type"], "A");
    assert_eq!(post["ttl"], 120);
    assert_eq!(post["proxied"], true);
    assert_eq!(post["comment"], "managed by vantage");
    assert!(batches[0].body["deletes"][0]["id"].is_string());
    let recs = s.records_named("www.example.com");
    assert_eq!(recs.len(), 440);
    assert!(recs
        .iter()
        .all(|r| r.content.starts_with("10.1.") && r.comment.as_deref() == Some("managed by vantage")));
}

#[tokio::test]
async fn batch_404_falls_back_to_single_calls() {
    let s = Server::start().await;
    s.with(|f| f.batch = false);
    let old = s.add("www.example.com", "A", "10.0.0.9");
    let cf = client(&s);
    let changes = vec![
        Change::Create(rec("www.example.com", "10.0.0.1")),
        Change::Create(rec("www.example.com", "2001:db8::1")),
        Change::Delete(Existing {
            record: rec("www.example.com", "10.0.0.9"),
            id: old,
        }),
    ];
    all_applied(&cf.apply(&changes).await.unwrap());
    assert_eq!(s.count("POST", "/batch"), 1);
    assert_eq!(s.count("POST", "/dns_records"), 2);
    assert_eq!(s.count("DELETE", ""), 1);
    // The delete went first.
    let writes: Vec<String> = s
        .log()
        .iter()
        .filter(|l| l.method != "GET" && !l.path.ends_with("/batch"))
        .map(|l| l.method.clone())
        .collect();
    assert_eq!(writes, ["DELETE", "POST", "POST"]);
    assert_eq!(cf.stats().batch_fallbacks, 1);
    let contents: BTreeSet<String> = s
        .records_named("www.example.com")
        .into_iter()
        .map(|r| r.content)
        .collect();
    assert_eq!(contents, ["10.0.0.1".to_string(), "2001:db8::1".to_string()].into());

    // The next apply does not try the batch endpoint again.
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.2"))])
            .await
            .unwrap(),
    );
    assert_eq!(s.count("POST", "/batch"), 1);
}

#[tokio::test]
async fn already_exists_and_already_gone_count_as_applied() {
    // Single calls: 81057 on create, 81044 on delete.
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let mut c = config(&s);
    c.use_batch = false;
    let cf = Cloudflare::new(c).unwrap();
    let changes = vec![
        Change::Create(rec("www.example.com", "10.0.0.1")),
        Change::Delete(Existing {
            record: rec("www.example.com", "10.0.0.7"),
            id: "deadbeef".into(),
        }),
    ];
    all_applied(&cf.apply(&changes).await.unwrap());
    assert_eq!(s.records_named("www.example.com").len(), 1);
    assert_eq!(s.count("POST", "/batch"), 0);

    // Batch: the whole batch is refused (81058); after re-listing, the rest is sent once.
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let cf = client(&s);
    let changes = vec![
        Change::Create(rec("www.example.com", "10.0.0.1")),
        Change::Create(rec("www.example.com", "10.0.0.2")),
        Change::Delete(Existing {
            record: rec("www.example.com", "10.0.0.7"),
            id: "deadbeef".into(),
        }),
    ];
    all_applied(&cf.apply(&changes).await.unwrap());
    let contents: Vec<String> = s
        .records_named("www.example.com")
        .into_iter()
        .map(|r| r.content)
        .collect();
    assert_eq!(contents, ["10.0.0.1", "10.0.0.2"]);
    let batches: Vec<Logged> = s.log().into_iter().filter(|l| l.path.ends_with("/batch")).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].body["posts"].as_array().unwrap().len(), 1);
    assert!(batches[1].body.get("deletes").is_none());
}

#[tokio::test]
async fn validation_failure_is_isolated_per_change() {
    let s = Server::start().await;
    let cf = client(&s);
    let changes = vec![
        Change::Create(rec("www.example.com", "10.0.0.1")),
        Change::Create(rec("www.example.com", POISON)),
        Change::Create(rec("www.example.com", "10.0.0.2")),
        // Refused before sending.
        Change::Create(Record {
            name: "www.example.com".into(),
            rtype: RecordType::AAAA,
            content: "10.0.0.3".into(),
        }),
        Change::Create(rec("www.elsewhere.org", "10.0.0.4")),
    ];
    let out = cf.apply(&changes).await.unwrap();
    assert_eq!(out[0].1, Outcome::Applied);
    assert!(
        matches!(&out[1].1, Outcome::Failed(m) if m.contains("1004")),
        "{:?}",
        out[1].1
    );
    assert_eq!(out[2].1, Outcome::Applied);
    assert!(matches!(&out[3].1, Outcome::Failed(_)));
    assert!(matches!(&out[4].1, Outcome::Failed(m) if m.contains("not in zone")));
    assert_eq!(s.records_named("www.example.com").len(), 2);
    assert!(s.log().iter().all(|l| !l.body.to_string().contains("10.0.0.3")));
}

#[tokio::test]
async fn rate_limited_answers_are_waited_out() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let cf = client(&s);
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);
    s.fault("list", Fault::TooMany(1));
    let t = Instant::now();
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    let st = cf.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.retries, 1);

    // A 429 on a write means it was not done: it is simply sent again.
    s.fault("batch", Fault::TooMany(1));
    let t = Instant::now();
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.2"))])
            .await
            .unwrap(),
    );
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(s.count("POST", "/batch"), 2);
    assert_eq!(s.records_named("www.example.com").len(), 2);

    // Exhausted attempts: a transient error, and nothing changed.
    let mut c = config(&s);
    c.max_attempts = 1;
    let cf = Cloudflare::new(c).unwrap();
    s.fault("zones", Fault::TooMany(1));
    assert!(matches!(cf.list(&o).await, Err(ProviderError::Transient(_))));
}

#[tokio::test]
async fn burst_of_503_then_success() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let cf = client(&s);
    let o = owned(&[("www.example.com", &["10.0.0.1", "10.0.0.2"])]);
    for _ in 0..3 {
        s.fault("list", Fault::Status(503));
    }
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
    assert_eq!(cf.stats().retries, 3);

    // A 503 on a write is ambiguous: re-list, then send what is still missing.
    s.fault("batch", Fault::Status(503));
    s.fault("batch", Fault::Status(503));
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.2"))])
            .await
            .unwrap(),
    );
    assert_eq!(s.count("POST", "/batch"), 3);
    assert_eq!(s.records_named("www.example.com").len(), 2);
    assert_eq!(cf.stats().ambiguous_writes, 2);
}

#[tokio::test]
async fn truncated_answer_to_a_create_is_settled_by_relisting() {
    for use_batch in [false, true] {
        let s = Server::start().await;
        let mut c = config(&s);
        c.use_batch = use_batch;
        let cf = Cloudflare::new(c).unwrap();
        let route = if use_batch { "batch" } else { "create" };
        s.fault(route, Fault::Truncate);
        let old = s.add("www.example.com", "A", "10.0.0.9");
        let changes = vec![
            Change::Create(rec("www.example.com", "10.0.0.1")),
            Change::Delete(Existing {
                record: rec("www.example.com", "10.0.0.9"),
                id: old,
            }),
        ];
        all_applied(&cf.apply(&changes).await.unwrap());
        let recs = s.records_named("www.example.com");
        assert_eq!(recs.len(), 1, "use_batch={use_batch}: {recs:?}");
        assert_eq!(recs[0].content, "10.0.0.1");
        let writes = s.log().iter().filter(|l| l.method != "GET").count();
        assert_eq!(
            writes,
            if use_batch { 1 } else { 2 },
            "no write was resent (use_batch={use_batch})"
        );
        assert!(s.count("GET", "/dns_records") >= 1);
        assert_eq!(cf.stats().ambiguous_writes, 1);
    }
}

#[tokio::test]
async fn timeout_after_a_write_is_settled_by_relisting() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.request_timeout = Duration::from_millis(400);
    let cf = Cloudflare::new(c).unwrap();
    s.fault("batch", Fault::Slow(Duration::from_millis(1200)));
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.1"))])
            .await
            .unwrap(),
    );
    assert_eq!(s.count("POST", "/batch"), 1);
    assert_eq!(s.records_named("www.example.com").len(), 1);
}

#[tokio::test]
async fn unresolvable_write_is_unknown() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.max_attempts = 2;
    let cf = Cloudflare::new(c).unwrap();
    // The write fails ambiguously, and so does every listing that would settle it.
    s.fault("batch", Fault::Status(502));
    for _ in 0..2 {
        s.fault("list", Fault::Status(502));
    }
    let out = cf
        .apply(&[Change::Create(rec("www.example.com", "10.0.0.1"))])
        .await
        .unwrap();
    assert!(
        matches!(&out[0].1, Outcome::Unknown(m) if m.contains("502")),
        "{:?}",
        out[0].1
    );
}

#[tokio::test]
async fn rate_limit_is_never_exceeded() {
    let s = Server::start().await;
    let window = Duration::from_millis(500);
    let mut c = config(&s);
    c.zone_id = Some(ZONE_ID.into());
    c.rate_limit = (5, window);
    let cf = Arc::new(Cloudflare::new(c).unwrap());
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let cf = cf.clone();
        let o = o.clone();
        tasks.push(tokio::spawn(async move { cf.list(&o).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(start.elapsed() >= window * 3);
    let mut at: Vec<Instant> = s.log().iter().map(|l| l.at).collect();
    assert_eq!(at.len(), 20);
    at.sort();
    // Server-side arrival times jitter a little against client-side start times.
    let slack = Duration::from_millis(40);
    for w in at.windows(6) {
        assert!(
            w[5].duration_since(w[0]) + slack >= window,
            "6 requests within {:?}",
            w[5].duration_since(w[0])
        );
    }
    assert_eq!(cf.stats().requests, 20);
}

// ---------------------------------------------------------------------------
// Headers and secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_request_carries_auth_and_context_headers() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.extra_headers = vec![("x-extra".into(), "yes".into())];
    let cf = Cloudflare::new(c).unwrap();
    cf.set_context(3, 7);
    cf.list(&owned(&[("www.example.com", &["10.0.0.1"])])).await.unwrap();
    cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.1"))])
        .await
        .unwrap();
    let log = s.log();
    assert!(log.len() >= 3);
    for l in &log {
        assert_eq!(l.headers["authorization"], format!("Bearer {TOKEN}").as_str());
        assert_eq!(l.headers["x-vantage-node"], "3");
        assert_eq!(l.headers["x-vantage-term"], "7");
        assert_eq!(l.headers["x-extra"], "yes");
        if l.method == "POST" {
            assert_eq!(l.headers["content-type"], "application/json");
        }
    }
    cf.set_context(4, 9);
    cf.list(&owned(&[("www.example.com", &["10.0.0.1"])])).await.unwrap();
    assert_eq!(s.log().last().unwrap().headers["x-vantage-term"], "9");

    // Legacy key and email.
    let s = Server::start().await;
    let mut c = config(&s);
    c.credentials = Credentials::Legacy {
        email: "ops@example.com".into(),
        key: Secret::new(TOKEN),
    };
    Cloudflare::new(c)
        .unwrap()
        .list(&owned(&[("www.example.com", &["10.0.0.1"])]))
        .await
        .unwrap();
    for l in s.log() {
        assert_eq!(l.headers["x-auth-email"], "ops@example.com");
        assert_eq!(l.headers["x-auth-key"], TOKEN);
        assert!(!l.headers.contains_key("authorization"));
    }
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let s = Server::start().await;
    s.with(|f| f.token = "the-server-wants-another-token".into());
    let mut texts: Vec<String> = Vec::new();
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);

    // The fake echoes the Authorization header it got in its 403 message.
    let cf = client(&s);
    let e = cf.list(&o).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Permanent(m) if m.contains("10000") && m.contains("<redacted>")),
        "{e}"
    );
    texts.push(format!("{e} {e:?}"));
    let mut c = config(&s);
    c.zone_id = Some(ZONE_ID.into());
    let cf2 = Cloudflare::new(c).unwrap();
    let e = cf2
        .apply(&[Change::Create(rec("www.example.com", "10.0.0.1"))])
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Permanent(_)));
    texts.push(format!("{e} {e:?}"));
    let mut c = config(&s);
    c.zone_id = Some(ZONE_ID.into());
    c.use_batch = false;
    let e = Cloudflare::new(c)
        .unwrap()
        .apply(&[Change::Delete(Existing {
            record: rec("www.example.com", "10.0.0.1"),
            id: "x".into(),
        })])
        .await
        .unwrap_err();
    texts.push(format!("{e} {e:?}"));

    // Transport failure: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = config(&s);
    c.api_base = format!("http://127.0.0.1:{port}/client/v4");
    c.max_attempts = 2;
    let dead = Cloudflare::new(c).unwrap();
    let e = dead.list(&o).await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e}");
    texts.push(format!("{e} {e:?}"));

    // Configuration errors.
    let mut c = config(&s);
    c.ttl = 5;
    texts.push(Cloudflare::new(c).unwrap_err());
    let mut c = config(&s);
    c.extra_headers = vec![("bad header".into(), TOKEN.into())];
    texts.push(Cloudflare::new(c).unwrap_err());
    let mut c = config(&s);
    c.credentials = Credentials::Token(Secret::new(format!("{TOKEN}\n")));
    texts.push(Cloudflare::new(c).unwrap_err());
    let dir = std::env::temp_dir().join(format!("cfclient-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, format!("{TOKEN} trailing-junk")).unwrap();
    texts.push(Credentials::from_env_or_file(None, Some(&f), None, None).unwrap_err());
    std::env::set_var("CFCLIENT_TEST_BAD_TOKEN", format!("{TOKEN} x"));
    texts.push(Credentials::from_env_or_file(Some("CFCLIENT_TEST_BAD_TOKEN"), None, None, None).unwrap_err());

    // Debug / Display of everything that holds the secret.
    let cfg = config(&s);
    texts.push(format!("{cfg:?} {cfg:#?}"));
    texts.push(format!("{:?} {:#?}", cf, cf));
    texts.push(format!("{:?} {}", Secret::new(TOKEN), Secret::new(TOKEN)));
    let legacy = Credentials::Legacy {
        email: "ops@example.com".into(),
        key: Secret::new(TOKEN),
    };
    texts.push(format!("{legacy:?}"));
    texts.push(format!(
        "{:?}",
        Cloudflare::new(CloudflareConfig {
            credentials: legacy,
            ..config(&s)
        })
        .unwrap()
    ));

    for t in &texts {
        assert!(!t.contains(TOKEN), "secret leaked: {t}");
        assert!(!t.contains("0123456789abcdef"), "secret leaked: {t}");
    }
    assert!(texts.iter().any(|t| t.contains("<redacted>")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn credentials_from_env_or_file() {
    let dir = std::env::temp_dir().join(format!("cfclient-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, "  file-token-value \n").unwrap();

    std::env::set_var("CFCLIENT_TEST_TOKEN", "env-token-value");
    std::env::set_var("CFCLIENT_TEST_EMAIL", "ops@example.com");
    std::env::set_var("CFCLIENT_TEST_KEY", "legacy-key-value");
    std::env::remove_var("CFCLIENT_TEST_UNSET");

    let c = Credentials::from_env_or_file(Some("CFCLIENT_TEST_TOKEN"), Some(&f), None, None).unwrap();
    assert_eq!(c, Credentials::Token(Secret::new("env-token-value")));
    let c = Credentials::from_env_or_file(Some("CFCLIENT_TEST_UNSET"), Some(&f), None, None).unwrap();
    assert_eq!(c, Credentials::Token(Secret::new("file-token-value")));
    let c = Credentials::from_env_or_file(
        Some("CFCLIENT_TEST_UNSET"),
        None,
        Some("CFCLIENT_TEST_EMAIL"),
        Some("CFCLIENT_TEST_KEY"),
    )
    .unwrap();
    assert_eq!(
        c,
        Credentials::Legacy {
            email: "ops@example.com".into(),
            key: Secret::new("legacy-key-value")
        }
    );

    let e = Credentials::from_env_or_file(Some("CFCLIENT_TEST_UNSET"), None, None, None).unwrap_err();
    assert!(e.contains("CFCLIENT_TEST_UNSET"), "{e}");
    let missing = dir.join("missing");
    let e = Credentials::from_env_or_file(None, Some(&missing), None, None).unwrap_err();
    assert!(e.contains("missing") && e.contains("token file"), "{e}");
    let e = Credentials::from_env_or_file(None, None, Some("CFCLIENT_TEST_EMAIL"), Some("CFCLIENT_TEST_UNSET"))
        .unwrap_err();
    assert!(e.contains("CFCLIENT_TEST_UNSET"), "{e}");
    assert!(Credentials::from_env_or_file(None, None, None, None).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_is_checked() {
    let base = || CloudflareConfig::new("Example.COM.", Credentials::Token(Secret::new("t")));
    assert!(Cloudflare::new(base()).is_ok());
    for bad in [
        CloudflareConfig { ttl: 29, ..base() },
        CloudflareConfig { ttl: 86401, ..base() },
        CloudflareConfig {
            batch_limit: 0,
            ..base()
        },
        CloudflareConfig {
            max_attempts: 0,
            ..base()
        },
        CloudflareConfig {
            rate_limit: (0, Duration::from_secs(1)),
            ..base()
        },
        CloudflareConfig {
            zone_name: String::new(),
            ..base()
        },
        CloudflareConfig {
            api_base: "ftp://x".into(),
            ..base()
        },
    ] {
        assert!(Cloudflare::new(bad).is_err());
    }
    let cf = Cloudflare::new(CloudflareConfig { ttl: 1, ..base() }).unwrap();
    assert_eq!(cf.describe(), "cloudflare zone example.com");
}

#[tokio::test]
async fn later_chunk_failing_keeps_earlier_outcomes() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.batch_limit = 2;
    c.max_attempts = 1;
    c.zone_id = Some(ZONE_ID.into());
    let cf = Cloudflare::new(c).unwrap();
    let changes: Vec<Change> = (1..=4)
        .map(|i| Change::Create(rec("www.example.com", &format!("10.0.0.{i}"))))
        .collect();
    // First batch fails before anything happened: the whole call is a transient error.
    s.fault("batch", Fault::TooMany(0));
    assert!(matches!(cf.apply(&changes).await, Err(ProviderError::Transient(_))));
    assert!(s.records_named("www.example.com").is_empty());
    // First batch done, second refused by the rate limit: outcomes are reported per change.
    s.with(|f| {
        f.faults
            .entry("batch")
            .or_default()
            .extend([Fault::Slow(Duration::ZERO), Fault::TooMany(0)])
    });
    let out = cf.apply(&changes).await.unwrap();
    assert_eq!(out[0].1, Outcome::Applied);
    assert_eq!(out[1].1, Outcome::Applied);
    assert!(
        matches!(&out[2].1, Outcome::Unknown(m) if m.contains("429")),
        "{:?}",
        out[2].1
    );
    assert!(matches!(&out[3].1, Outcome::Unknown(_)));
    assert_eq!(s.records_named("www.example.com").len(), 2);
}
