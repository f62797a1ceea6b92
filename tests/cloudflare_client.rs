//! The Cloudflare client against the strict double of the API (`cfdouble`),
//! which validates every request against Cloudflare's published schema.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cfdouble::{Double, DoubleConfig, Fault, FaultFilter, RequestRecord, SeedRecord};
use serde_json::Value;
use vantage::dns::cloudflare::{Cloudflare, CloudflareConfig, Credentials, Secret};
use vantage::dns::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};

const TOKEN: &str = "tok-SECRET-0123456789abcdef";
const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const EMAIL: &str = "ops@example.com";
/// Content the double refuses with a validation error.
const POISON: &str = "192.0.2.66";

// ---------------------------------------------------------------------------
// The double
// ---------------------------------------------------------------------------

fn openapi() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/cloudflare/dns-openapi.json"
    ))
}

/// The token (or the legacy key with `EMAIL`) is accepted; two zones; `POISON` is refused.
fn double_config() -> DoubleConfig {
    DoubleConfig::new(openapi())
        .token(TOKEN)
        .legacy_key(EMAIL, TOKEN)
        .zone("example.com", ZONE_ID)
        .zone("example.org", "99999999999999999999999999999999")
        .refuse_content(POISON)
}

struct Server {
    d: Double,
    base: String,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(double_config()).await
    }

    async fn start_with(cfg: DoubleConfig) -> Server {
        let d = cfdouble::start(cfg).await;
        let base = d.base_url();
        Server { d, base }
    }

    /// A record created by someone else; its id.
    fn add(&self, name: &str, rtype: &str, content: &str) -> String {
        let mut r = SeedRecord::new("example.com", rtype, name, content);
        r.ttl = 300;
        if rtype == "MX" {
            r.priority = Some(10);
        }
        self.d.add_record(r).unwrap().id
    }

    /// Queue `fault` for the next request to `route`: "zones" (zone lookup),
    /// "list", "create", "batch" or "delete".
    fn fault(&self, route: &str, fault: Fault) {
        let records = format!("/zones/{ZONE_ID}/dns_records");
        let filter = match route {
            "zones" => FaultFilter::route("GET", "/zones"),
            "list" => FaultFilter::route("GET", &records),
            "create" => FaultFilter::route("POST", &records),
            "batch" => FaultFilter::route("POST", &format!("{records}/batch")),
            "delete" => FaultFilter {
                method: Some("DELETE".into()),
                path_prefix: Some(format!("{records}/")),
                ..Default::default()
            },
            other => panic!("unknown route {other}"),
        };
        self.d.inject_when(fault, filter);
    }

    fn log(&self) -> Vec<RequestRecord> {
        self.d.requests()
    }

    fn count(&self, method: &str, suffix: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.method == method && l.path.ends_with(suffix))
            .count()
    }

    fn records_named(&self, name: &str) -> Vec<cfdouble::Record> {
        self.d
            .records("example.com")
            .into_iter()
            .filter(|r| r.name == name)
            .collect()
    }

    /// Every request the client sent is one the real API accepts as well-formed.
    fn assert_clean(&self) {
        assert!(self.d.violations().is_empty(), "violations: {:#?}", self.d.violations());
        assert!(
            self.d.self_check_failures().is_empty(),
            "double self-check: {:#?}",
            self.d.self_check_failures()
        );
    }
}

fn too_many(retry_after_secs: u64) -> Fault {
    Fault::TooManyRequests { retry_after_secs }
}

fn raw(status: u16, body: &str) -> Fault {
    Fault::Raw {
        status,
        body: body.into(),
    }
}

fn body(l: &RequestRecord) -> Value {
    l.body.clone().unwrap_or(Value::Null)
}

fn header(l: &RequestRecord, name: &str) -> String {
    l.header(name)
        .unwrap_or_else(|| panic!("{} {}: no {name} header", l.method, l.path))
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
    let s = Server::start_with(double_config().max_per_page(2)).await;
    let addrs: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
    for a in &addrs {
        s.add("www.example.com", "A", a);
    }
    let refs: Vec<&str> = addrs.iter().map(|a| a.as_str()).collect();
    let cf = client(&s);
    let got = cf.list(&owned(&[("www.example.com", &refs)])).await.unwrap();
    assert_eq!(got.len(), 6);
    let lists: Vec<RequestRecord> = s
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("/dns_records"))
        .collect();
    assert_eq!(lists.len(), 3);
    for (i, l) in lists.iter().enumerate() {
        assert_eq!(l.query_param("page"), Some((i + 1).to_string()));
        assert_eq!(l.query_param("type").as_deref(), Some("A"));
        assert_eq!(l.query_param("name").as_deref(), Some("www.example.com"));
        assert!(l.query_param("per_page").unwrap().parse::<u64>().unwrap() >= 100);
    }
    s.assert_clean();
}

#[tokio::test]
async fn list_returns_only_owned_records() {
    for ignore_filters in [false, true] {
        let s = Server::start().await;
        // A server that ignores the name and type filters must not widen the result.
        s.d.set_ignore_list_filters(ignore_filters);
        s.d.set_max_per_page(Some(3));
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
        s.assert_clean();
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
        raw(
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
        raw(
            400,
            r#"{"success":false,"errors":[{"code":9106,"message":"Missing X-Auth-Key"}],"messages":[],"result":null}"#,
        ),
    );
    let e = cf.list(&o).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Permanent(m) if m.contains("HTTP 400") && m.contains("9106")),
        "{e}"
    );

    s.fault("list", raw(200, "not json"));
    s.fault("list", raw(200, r#"{"success":true,"result":[{"id":"x"#));
    let e = cf.list(&o).await.unwrap_err();
    assert!(matches!(e, ProviderError::Transient(_)), "{e}");

    s.fault(
        "list",
        raw(200, r#"{"success":true,"errors":[],"messages":[],"result":null}"#),
    );
    assert!(cf.list(&o).await.is_err());

    s.fault("list", Fault::ServerError(502));
    s.fault("list", Fault::ServerError(502));
    assert!(matches!(cf.list(&o).await, Err(ProviderError::Transient(_))));

    // And it works again afterwards.
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
    s.assert_clean();
}

#[tokio::test]
async fn zone_id_is_looked_up_once_or_taken_from_config() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);
    let cf = client(&s);
    cf.list(&o).await.unwrap();
    cf.list(&o).await.unwrap();
    let zones: Vec<RequestRecord> = s.log().into_iter().filter(|l| l.api_path() == "/zones").collect();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].query_param("name").as_deref(), Some("example.com"));

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
    s.assert_clean();
    s2.assert_clean();
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
            // An address the API accepts (10.9.0.0 to 10.9.0.9).
            let old = format!("10.9.0.{}", i / 44);
            let id = s.add("www.example.com", "A", &old);
            changes.push(Change::Delete(Existing {
                record: rec("www.example.com", &old),
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
    let batches: Vec<RequestRecord> = s.log().into_iter().filter(|l| l.path.ends_with("/batch")).collect();
    let sizes: Vec<(usize, usize)> = batches
        .iter()
        .map(|b| {
            (
                body(b)["deletes"].as_array().map_or(0, |a| a.len()),
                body(b)["posts"].as_array().map_or(0, |a| a.len()),
            )
        })
        .collect();
    assert_eq!(sizes, vec![(10, 190), (0, 200), (0, 50)]);
    let first = body(&batches[0]);
    let post = &first["posts"][0];
    assert_eq!(post["name"], "www.example.com");
    assert_eq!(post["type"], "A");
    assert_eq!(post["ttl"], 120);
    assert_eq!(post["proxied"], true);
    assert_eq!(post["comment"], "managed by vantage");
    assert!(first["deletes"][0]["id"].is_string());
    let recs = s.records_named("www.example.com");
    assert_eq!(recs.len(), 440);
    assert!(recs
        .iter()
        .all(|r| r.content.starts_with("10.1.") && r.comment.as_deref() == Some("managed by vantage")));
    s.assert_clean();
}

#[tokio::test]
async fn batch_404_falls_back_to_single_calls() {
    let s = Server::start_with(double_config().batch_enabled(false)).await;
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
    s.assert_clean();
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
    s.assert_clean();

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
    let batches: Vec<RequestRecord> = s.log().into_iter().filter(|l| l.path.ends_with("/batch")).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(body(&batches[1])["posts"].as_array().unwrap().len(), 1);
    assert!(body(&batches[1]).get("deletes").is_none());
    s.assert_clean();
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
    assert!(s.log().iter().all(|l| !l.raw_body.contains("10.0.0.3")));
    s.assert_clean();
}

#[tokio::test]
async fn rate_limited_answers_are_waited_out() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let cf = client(&s);
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);
    s.fault("list", too_many(1));
    let t = Instant::now();
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    let st = cf.stats();
    assert_eq!(st.rate_limited, 1);
    assert_eq!(st.retries, 1);

    // A 429 on a write means it was not done: it is simply sent again.
    s.fault("batch", too_many(1));
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
    s.fault("zones", too_many(1));
    assert!(matches!(cf.list(&o).await, Err(ProviderError::Transient(_))));
    s.assert_clean();
}

#[tokio::test]
async fn burst_of_503_then_success() {
    let s = Server::start().await;
    s.add("www.example.com", "A", "10.0.0.1");
    let cf = client(&s);
    let o = owned(&[("www.example.com", &["10.0.0.1", "10.0.0.2"])]);
    for _ in 0..3 {
        s.fault("list", Fault::ServerError(503));
    }
    assert_eq!(cf.list(&o).await.unwrap().len(), 1);
    assert_eq!(cf.stats().retries, 3);

    // A 503 on a write is ambiguous: re-list, then send what is still missing.
    s.fault("batch", Fault::ServerError(503));
    s.fault("batch", Fault::ServerError(503));
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.2"))])
            .await
            .unwrap(),
    );
    assert_eq!(s.count("POST", "/batch"), 3);
    assert_eq!(s.records_named("www.example.com").len(), 2);
    assert_eq!(cf.stats().ambiguous_writes, 2);
    s.assert_clean();
}

#[tokio::test]
async fn truncated_answer_to_a_create_is_settled_by_relisting() {
    for use_batch in [false, true] {
        let s = Server::start().await;
        let mut c = config(&s);
        c.use_batch = use_batch;
        let cf = Cloudflare::new(c).unwrap();
        let route = if use_batch { "batch" } else { "create" };
        s.fault(route, Fault::TruncatedJson);
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
        s.assert_clean();
    }
}

#[tokio::test]
async fn timeout_after_a_write_is_settled_by_relisting() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.request_timeout = Duration::from_millis(400);
    let cf = Cloudflare::new(c).unwrap();
    // Done at once, answered only after the client has given up.
    s.fault("batch", Fault::SlowAfterApplying(Duration::from_millis(1200)));
    all_applied(
        &cf.apply(&[Change::Create(rec("www.example.com", "10.0.0.1"))])
            .await
            .unwrap(),
    );
    assert_eq!(s.count("POST", "/batch"), 1);
    assert_eq!(s.records_named("www.example.com").len(), 1);
    s.assert_clean();
}

#[tokio::test]
async fn unresolvable_write_is_unknown() {
    let s = Server::start().await;
    let mut c = config(&s);
    c.max_attempts = 2;
    let cf = Cloudflare::new(c).unwrap();
    // The write fails ambiguously, and so does every listing that would settle it.
    s.fault("batch", Fault::ServerError(502));
    for _ in 0..2 {
        s.fault("list", Fault::ServerError(502));
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
    s.assert_clean();
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
    let mut at: Vec<Duration> = s.log().iter().map(|l| l.at).collect();
    assert_eq!(at.len(), 20);
    at.sort();
    // Server-side arrival times jitter a little against client-side start times.
    let slack = Duration::from_millis(40);
    for w in at.windows(6) {
        assert!(w[5] - w[0] + slack >= window, "6 requests within {:?}", w[5] - w[0]);
    }
    assert_eq!(cf.stats().requests, 20);
    s.assert_clean();
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
        assert_eq!(header(l, "authorization"), format!("Bearer {TOKEN}"));
        assert_eq!(header(l, "x-vantage-node"), "3");
        assert_eq!(header(l, "x-vantage-term"), "7");
        assert_eq!(header(l, "x-extra"), "yes");
        if l.method == "POST" {
            assert_eq!(header(l, "content-type"), "application/json");
        }
    }
    cf.set_context(4, 9);
    cf.list(&owned(&[("www.example.com", &["10.0.0.1"])])).await.unwrap();
    assert_eq!(header(s.log().last().unwrap(), "x-vantage-term"), "9");
    s.assert_clean();

    // Legacy key and email.
    let s = Server::start().await;
    let mut c = config(&s);
    c.credentials = Credentials::Legacy {
        email: EMAIL.into(),
        key: Secret::new(TOKEN),
    };
    Cloudflare::new(c)
        .unwrap()
        .list(&owned(&[("www.example.com", &["10.0.0.1"])]))
        .await
        .unwrap();
    for l in s.log() {
        assert_eq!(header(&l, "x-auth-email"), EMAIL);
        assert_eq!(header(&l, "x-auth-key"), TOKEN);
        assert!(l.header("authorization").is_none());
    }
    s.assert_clean();
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug_output() {
    let mut cfg = double_config().echo_credentials(true);
    cfg.tokens = vec!["the-server-wants-another-token".into()];
    cfg.legacy_key = Some((EMAIL.into(), "the-server-wants-another-key".into()));
    let s = Server::start_with(cfg).await;
    let mut texts: Vec<String> = Vec::new();
    let o = owned(&[("www.example.com", &["10.0.0.1"])]);

    // The double echoes the credential it got in its 403 message.
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
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
    s.assert_clean();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn credentials_from_env_or_file() {
    let dir = std::env::temp_dir().join(format!("cfclient-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("token");
    std::fs::write(&f, "  file-token-value \n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

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
    s.fault("batch", too_many(0));
    assert!(matches!(cf.apply(&changes).await, Err(ProviderError::Transient(_))));
    assert!(s.records_named("www.example.com").is_empty());
    // First batch done, second refused by the rate limit: outcomes are reported per change.
    s.fault("batch", Fault::Slow(Duration::ZERO));
    s.fault("batch", too_many(0));
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
    s.assert_clean();
}
