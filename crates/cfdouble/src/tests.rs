//! Tests, using a tiny hand-written HTTP/1.1 client over `tokio::net::TcpStream`.

use super::*;
use serde::Deserialize;
use serde_json::{json, Value};

const ZONE: &str = "example.com";
const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const TOKEN: &str = "good-token";

fn openapi_path() -> String {
    std::env::var("CFDOUBLE_OPENAPI").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/cloudflare/dns-openapi.json"
        )
        .into()
    })
}

fn vectors_dir() -> String {
    std::env::var("CFDOUBLE_VECTORS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/cloudflare/vectors").into())
}

fn config() -> DoubleConfig {
    DoubleConfig::new(openapi_path())
        .token(TOKEN)
        .legacy_key("ops@example.com", "legacy-key")
        .zone(ZONE, ZONE_ID)
}

// ---------------------------------------------------------------- raw client

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn error_code(&self) -> u64 {
        self.json()["errors"][0]["code"].as_u64().unwrap_or(0)
    }
}

/// Send one request (Connection: close) and read the whole response.
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    // Only the `net` feature of tokio is assumed: use readiness + try_read/try_write.
    let mut sent = 0;
    while sent < bytes.len() {
        s.writable().await?;
        match s.try_write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        s.readable().await?;
        match s.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    parse_response(&buf)
        .ok_or_else(|| std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&buf))))
}

fn parse_response(buf: &[u8]) -> Option<Resp> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Resp { status, headers, body })
}

/// Authenticated JSON call relative to the API base.
async fn call(d: &Double, method: &str, rel: &str, body: Option<Value>) -> Resp {
    let auth = format!("Bearer {TOKEN}");
    let text = body.map(|b| b.to_string());
    let mut headers = vec![("Authorization", auth.as_str())];
    if text.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    raw(
        d.addr(),
        method,
        &format!("{API_PREFIX}{rel}"),
        &headers,
        text.as_deref().map(str::as_bytes),
    )
    .await
    .expect("request failed")
}

fn a_record(name: &str, ip: &str) -> Value {
    json!({"type": "A", "name": name, "content": ip, "ttl": 60, "proxied": false})
}

async fn create(d: &Double, name: &str, ip: &str) -> Value {
    let r = call(
        d,
        "POST",
        &format!("/zones/{ZONE_ID}/dns_records"),
        Some(a_record(name, ip)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["result"].clone()
}

fn assert_clean(d: &Double) {
    assert!(d.violations().is_empty(), "violations: {:#?}", d.violations());
    assert!(
        d.self_check_failures().is_empty(),
        "self-check: {:#?}",
        d.self_check_failures()
    );
}

// ---------------------------------------------------------------- envelope shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Envelope {
    success: bool,
    errors: Vec<ApiMessage>,
    messages: Vec<ApiMessage>,
    result: Value,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ApiMessage {
    code: u32,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ResultInfo {
    page: u64,
    per_page: u64,
    count: u64,
    total_count: u64,
    total_pages: u64,
}

/// The record fields a client relies on; both the vectors and the double must provide them.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct RecordView {
    id: String,
    #[serde(rename = "type")]
    record_type: String,
    name: String,
    content: String,
    proxiable: bool,
    proxied: bool,
    ttl: u32,
    created_on: String,
    modified_on: String,
    meta: Value,
    #[serde(default)]
    zone_id: Option<String>,
    #[serde(default)]
    zone_name: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

fn vector(name: &str) -> Value {
    let p = format!("{}/{name}", vectors_dir());
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))).expect("vector JSON")
}

fn shape(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn vectors_and_double_share_the_envelope_shape() {
    let d = start(config()).await;
    for i in 0..3 {
        create(&d, &format!("h{i}"), &format!("198.51.100.{i}")).await;
    }
    let ours_list = call(&d, "GET", &format!("/zones/{ZONE_ID}/dns_records?per_page=2"), None)
        .await
        .json();
    let ours_zones = call(&d, "GET", &format!("/zones?name={ZONE}"), None).await.json();
    let ours_dup = call(
        &d,
        "POST",
        &format!("/zones/{ZONE_ID}/dns_records"),
        Some(a_record("h0", "198.51.100.0")),
    )
    .await
    .json();

    for (name, v) in [
        (
            "cloudflare-go list",
            vector("cloudflare-go_v0.116.0_dns_list_page_1.json"),
        ),
        ("octodns records", vector("octodns_dns_records_page_1.json")),
        ("octodns zones", vector("octodns_zones_page_1.json")),
        ("lexicon 81057", vector("lexicon_81057_2020.json")),
        ("double list", ours_list.clone()),
        ("double zones", ours_zones.clone()),
        ("double dup", ours_dup.clone()),
    ] {
        let env: Envelope = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        if env.success {
            assert!(env.result_info.is_some(), "{name}: list without result_info");
        }
        if name.contains("records") || name.contains("list") {
            let recs: Vec<RecordView> = serde_json::from_value(env.result).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!recs.is_empty());
        }
    }
    // Same top-level keys as the real bodies.
    assert_eq!(shape(&ours_list), shape(&vector("octodns_dns_records_page_1.json")));
    assert_eq!(shape(&ours_zones), shape(&vector("octodns_zones_page_1.json")));
    assert_eq!(shape(&ours_dup), shape(&vector("lexicon_81057_2020.json")));
    assert_eq!(
        ours_dup,
        vector("lexicon_81057_2020.json"),
        "81057 body must equal the recorded one"
    );
    // Our records carry every field the octodns record has, except the legacy `locked`.
    let real = &vector("octodns_dns_records_page_1.json")["result"][0];
    let ours = &ours_list["result"][0];
    for k in shape(real) {
        assert!(k == "locked" || ours.get(&k).is_some(), "double record lacks {k}");
    }
    assert_clean(&d);
}

// ---------------------------------------------------------------- validation

#[tokio::test]
async fn unknown_path_and_method_are_violations() {
    let d = start(config()).await;
    let r = call(&d, "GET", &format!("/zones/{ZONE_ID}/dns_recordz"), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["success"], json!(false));
    assert_eq!(r.error_code(), 7000);
    let r = raw(
        d.addr(),
        "GET",
        "/zones",
        &[("Authorization", "Bearer good-token")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "outside /client/v4");
    let r = call(&d, "DELETE", "/zones", None).await;
    assert_eq!((r.status, r.error_code()), (400, 7001));
    let r = call(&d, "GET", "/zones/", None).await;
    assert_eq!(r.status, 400, "trailing slash / empty segment");
    let v = d.violations();
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(
        v[0].starts_with(&format!("GET /client/v4/zones/{ZONE_ID}/dns_recordz: no path")),
        "{v:#?}"
    );
    assert!(v[2].contains("DELETE") && v[2].contains("declared: GET"), "{v:#?}");
}

#[tokio::test]
async fn path_parameter_schema_is_enforced() {
    let d = start(config()).await;
    let long = "a".repeat(33);
    let r = call(&d, "GET", &format!("/zones/{long}/dns_records"), None).await;
    assert_eq!((r.status, r.error_code()), (400, 7003));
    assert!(d.violations()[0].contains("maxLength 32"), "{:#?}", d.violations());
    // A well-formed but unknown zone is state, not a violation.
    let r = call(&d, "GET", &format!("/zones/{}/dns_records", "b".repeat(32)), None).await;
    assert_eq!((r.status, r.error_code()), (404, 7003));
    assert_eq!(d.violations().len(), 1);
}

#[tokio::test]
async fn query_parameters_must_be_declared_and_valid() {
    let d = start(config()).await;
    let base = format!("/zones/{ZONE_ID}/dns_records");
    for (q, needle) in [
        ("bogus=1", "'bogus' is not declared"),
        ("name.exact=www.example.com", "'name.exact' is not declared"),
        ("type=BOGUS", "is not one of"),
        ("per_page=0", "below the minimum"),
        ("page=abc", "not a valid number"),
        ("match=some", "is not one of"),
        ("proxied=yes", "not a valid boolean"),
        ("type=A&type=AAAA", "given 2 times"),
    ] {
        let before = d.violations().len();
        let r = call(&d, "GET", &format!("{base}?{q}"), None).await;
        assert_eq!((r.status, r.error_code()), (400, 6003), "{q}");
        let v = d.violations();
        assert_eq!(v.len(), before + 1, "{q}: {v:#?}");
        assert!(v[before].contains(needle), "{q}: {}", v[before]);
    }
    // GET /zones: per_page is limited to 5..=50 by the document.
    let r = call(&d, "GET", "/zones?name=example.com&per_page=51", None).await;
    assert_eq!(r.status, 400);
    // Declared ones pass, including dotted names and percent-encoding.
    let n = d.violations().len();
    for q in [
        "type=A&name=www.example.com&match=any&per_page=5&page=2",
        "comment.contains=hello%20w",
        "tag=team%3Adns&proxied=false",
    ] {
        let r = call(&d, "GET", &format!("{base}?{q}"), None).await;
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = call(&d, "GET", "/zones?name=example.com&per_page=50&status=active", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(d.violations().len(), n);
}

#[tokio::test]
async fn request_bodies_are_validated() {
    let d = start(config()).await;
    let url = format!("/zones/{ZONE_ID}/dns_records");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"type": "A", "content": "192.0.2.1", "ttl": 60}),
            "missing required property 'name'",
        ),
        (
            json!({"type": "A", "name": "x", "content": "192.0.2.1", "ttl": "60"}),
            "/ttl: expected number, got string",
        ),
        (
            json!({"type": "A", "name": "x", "content": "192.0.2.1"}),
            "missing required property 'ttl'",
        ),
        (
            json!({"type": "A", "name": "x", "content": "not-an-ip", "ttl": 60}),
            "not a valid ipv4",
        ),
        (
            json!({"type": "AAAA", "name": "x", "content": "192.0.2.1", "ttl": 60}),
            "not a valid ipv6",
        ),
        (
            json!({"type": "A", "name": "x", "content": "192.0.2.1", "ttl": 5}),
            "below the minimum 30",
        ),
        (
            json!({"type": "A", "name": "", "content": "192.0.2.1", "ttl": 60}),
            "shorter than minLength",
        ),
        (
            json!({"type": "SPF", "name": "x", "content": "v", "ttl": 60}),
            "is not one of",
        ),
        (
            json!({"type": "A", "name": "x", "content": "192.0.2.1", "ttl": 60, "tags": "t"}),
            "/tags: expected array",
        ),
        (json!(["not", "an", "object"]), "matches none of anyOf"),
    ];
    for (body, needle) in cases {
        let before = d.violations().len();
        let r = call(&d, "POST", &url, Some(body.clone())).await;
        assert_eq!((r.status, r.error_code()), (400, 9207), "{body}");
        let v = d.violations();
        assert_eq!(v.len(), before + 1, "{body}: {v:#?}");
        assert!(v[before].contains(needle), "{body}: {}", v[before]);
    }
    // The document's A schema does not list `type` as required, so a missing type is
    // caught by the semantic layer (1004) - still a violation.
    let before = d.violations().len();
    let r = call(
        &d,
        "POST",
        &url,
        Some(json!({"name": "x", "content": "192.0.2.1", "ttl": 60})),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, 1004));
    assert!(d.violations()[before].contains("'type' is required"));
    // Not JSON / wrong content type / body on GET.
    let auth = [
        ("Authorization", "Bearer good-token"),
        ("Content-Type", "application/json"),
    ];
    let r = raw(d.addr(), "POST", &format!("{API_PREFIX}{url}"), &auth, Some(b"{nope"))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    let r = raw(
        d.addr(),
        "POST",
        &format!("{API_PREFIX}{url}"),
        &auth[..1],
        Some(br#"{"type":"A"}"#),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "missing content-type");
    let r = raw(d.addr(), "POST", &format!("{API_PREFIX}{url}"), &auth, None)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "missing required body");
    let r = raw(d.addr(), "GET", &format!("{API_PREFIX}{url}"), &auth, Some(b"{}"))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "GET with body");
    assert_eq!(d.violations().len(), before + 5);
    // PATCH content that is not an IPv4 for an A record: schema ok, semantics not.
    let rec = create(&d, "www", "192.0.2.10").await;
    let r = call(
        &d,
        "PATCH",
        &format!("{url}/{}", rec["id"].as_str().unwrap()),
        Some(json!({"content": "::1"})),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, 1004));
    assert_eq!(d.violations().len(), before + 6);
    assert!(d.self_check_failures().is_empty(), "{:#?}", d.self_check_failures());
}

#[tokio::test]
async fn authentication() {
    let d = start(config()).await;
    let t = format!("{API_PREFIX}/zones?name={ZONE}");
    let r = raw(d.addr(), "GET", &t, &[("Authorization", "Bearer wrong")], None)
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code()), (403, 10000));
    assert_eq!(r.json()["errors"][0]["message"], "Authentication error");
    assert!(d.violations().is_empty(), "a wrong token is not a spec violation");
    let r = raw(
        d.addr(),
        "GET",
        &t,
        &[("X-Auth-Email", "ops@example.com"), ("X-Auth-Key", "nope")],
        None,
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.error_code()), (403, 9103));
    let r = raw(
        d.addr(),
        "GET",
        &t,
        &[("X-Auth-Email", "ops@example.com"), ("X-Auth-Key", "legacy-key")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"][0]["id"], ZONE_ID);
    assert!(d.violations().is_empty());
    // No usable credential at all: 403 and a violation.
    for h in [
        vec![],
        vec![("Authorization", "Token good-token")],
        vec![("X-Auth-Email", "ops@example.com")],
    ] {
        let r = raw(d.addr(), "GET", &t, &h, None).await.unwrap();
        assert_eq!((r.status, r.error_code()), (403, 10000), "{h:?}");
    }
    assert_eq!(d.violations().len(), 3);
    assert!(d.violations()[0].contains("no security requirement satisfied"));
    assert!(d.self_check_failures().is_empty());
}

// ---------------------------------------------------------------- behaviour

#[tokio::test]
async fn zones_lookup_and_pagination_of_records() {
    let d = start(config().zone("other.org", "0123456789abcdef0123456789abcdef")).await;
    let z = call(&d, "GET", "/zones?name=example.com", None).await.json();
    assert_eq!(z["result"].as_array().unwrap().len(), 1);
    assert_eq!(z["result"][0]["id"], ZONE_ID);
    assert_eq!(z["result_info"]["per_page"], 20);
    for i in 0..5 {
        create(&d, &format!("n{i}"), &format!("192.0.2.{i}")).await;
    }
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = call(
            &d,
            "GET",
            &format!("/zones/{ZONE_ID}/dns_records?per_page=2&page={page}"),
            None,
        )
        .await
        .json();
        let info = &r["result_info"];
        assert_eq!(info["page"], page);
        assert_eq!(info["per_page"], 2);
        assert_eq!(info["total_count"], 5);
        assert_eq!(info["total_pages"], 3);
        let n = if page < 3 { 2 } else { 1 };
        assert_eq!(info["count"], n);
        assert_eq!(r["result"].as_array().unwrap().len(), n);
        seen.extend(
            r["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["name"].as_str().unwrap().to_string()),
        );
    }
    seen.sort();
    assert_eq!(seen, ["n0", "n1", "n2", "n3", "n4"].map(|n| format!("{n}.example.com")));
    let r = call(
        &d,
        "GET",
        &format!("/zones/{ZONE_ID}/dns_records?per_page=2&page=4"),
        None,
    )
    .await
    .json();
    assert_eq!(r["result"], json!([]));
    assert_eq!(r["result_info"]["count"], 0);
    // Default per_page is 100; filters.
    let r = call(&d, "GET", &format!("/zones/{ZONE_ID}/dns_records"), None)
        .await
        .json();
    assert_eq!(r["result_info"]["per_page"], 100);
    let r = call(
        &d,
        "GET",
        &format!("/zones/{ZONE_ID}/dns_records?type=A&name=n3.example.com"),
        None,
    )
    .await
    .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 1);
    let r = call(
        &d,
        "GET",
        &format!("/zones/{ZONE_ID}/dns_records?name=n3.example.com&content=192.0.2.4&match=any"),
        None,
    )
    .await
    .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 2);
    let r = call(&d, "GET", &format!("/zones/{ZONE_ID}/dns_records?type=AAAA"), None)
        .await
        .json();
    assert_eq!(r["result"], json!([]));
    assert_clean(&d);
}

#[tokio::test]
async fn crud_and_duplicates() {
    let d = start(config()).await;
    let url = format!("/zones/{ZONE_ID}/dns_records");
    let rec = create(&d, "www", "192.0.2.1").await;
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(rec["name"], "www.example.com");
    assert_eq!(rec["zone_id"], ZONE_ID);
    assert_eq!(rec["zone_name"], ZONE);
    assert_eq!(rec["proxiable"], true);
    // duplicate
    let r = call(&d, "POST", &url, Some(a_record("www.example.com", "192.0.2.1"))).await;
    assert_eq!((r.status, r.error_code()), (400, 81057));
    assert_eq!(r.json()["result"], Value::Null);
    // a second address on the same name is fine
    let other = create(&d, "www", "192.0.2.2").await;
    // get / patch / put
    let r = call(&d, "GET", &format!("{url}/{id}"), None).await.json();
    assert_eq!(r["result"]["content"], "192.0.2.1");
    let r = call(
        &d,
        "PATCH",
        &format!("{url}/{id}"),
        Some(json!({"content": "192.0.2.3", "comment": "vantage"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"]["content"], "192.0.2.3");
    assert_eq!(r.json()["result"]["ttl"], 60, "PATCH keeps other fields");
    let r = call(&d, "PUT", &format!("{url}/{id}"), Some(a_record("www", "192.0.2.2"))).await;
    assert_eq!((r.status, r.error_code()), (400, 81058), "PUT onto an identical record");
    let r = call(&d, "PUT", &format!("{url}/{id}"), Some(a_record("www", "192.0.2.4")))
        .await
        .json();
    assert_eq!(r["result"]["content"], "192.0.2.4");
    assert!(r["result"].get("comment").is_none(), "PUT resets unspecified fields");
    // delete
    let r = call(&d, "DELETE", &format!("{url}/{id}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], json!({"id": id}));
    let r = call(&d, "DELETE", &format!("{url}/{id}"), None).await;
    assert_eq!((r.status, r.error_code()), (404, 81044));
    assert_eq!(r.json()["errors"][0]["message"], "Record does not exist.");
    let r = call(&d, "GET", &format!("{url}/{id}"), None).await;
    assert_eq!(r.status, 404);
    // CNAME clash
    let r = call(
        &d,
        "POST",
        &url,
        Some(json!({"type": "CNAME", "name": "www", "content": "x.example.net", "ttl": 1})),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, 81053));
    let recs = d.records(ZONE);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].id, other["id"].as_str().unwrap());
    assert_clean(&d);
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let seed = SeedRecord::new(ZONE, "A", "seed", "203.0.113.9");
    let d = start(config().seed(seed)).await;
    let url = format!("/zones/{ZONE_ID}/dns_records/batch");
    let a = create(&d, "a", "192.0.2.1").await;
    let b = create(&d, "b", "192.0.2.2").await;
    let before = d.records(ZONE);
    // delete a, then post a duplicate of b -> whole batch fails, a is still there
    let body = json!({"deletes": [{"id": a["id"]}], "posts": [a_record("b", "192.0.2.2")]});
    let r = call(&d, "POST", &url, Some(body)).await;
    assert_eq!((r.status, r.error_code()), (400, 81057));
    assert_eq!(d.records(ZONE), before, "nothing applied");
    // a later patch of a deleted record also fails the whole batch
    let body = json!({"deletes": [{"id": a["id"]}], "patches": [{"id": a["id"], "content": "192.0.2.9"}]});
    let r = call(&d, "POST", &url, Some(body)).await;
    assert_eq!((r.status, r.error_code()), (404, 81044));
    assert_eq!(d.records(ZONE), before);
    // a good batch: delete a, patch b, put b, post c
    let body = json!({
        "deletes": [{"id": a["id"]}],
        "patches": [{"id": b["id"], "ttl": 300}],
        "puts": [{"id": b["id"], "type": "A", "name": "b", "content": "192.0.2.20", "ttl": 120}],
        "posts": [a_record("c", "192.0.2.3")]
    });
    let r = call(&d, "POST", &url, Some(body)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let res = &r.json()["result"];
    assert_eq!(res["deletes"][0]["id"], a["id"]);
    assert_eq!(res["patches"][0]["ttl"], 300);
    assert_eq!(res["puts"][0]["content"], "192.0.2.20");
    assert_eq!(res["posts"][0]["name"], "c.example.com");
    let names: Vec<String> = d.records(ZONE).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["seed.example.com", "b.example.com", "c.example.com"]);
    assert!(d.seed_records_intact().is_ok());
    // invalid item inside a batch is a schema violation
    let r = call(&d, "POST", &url, Some(json!({"deletes": [{}]}))).await;
    assert_eq!(r.status, 400);
    assert_eq!(d.violations().len(), 1);
    assert!(
        d.violations()[0].contains("/deletes/0: missing required property 'id'"),
        "{:?}",
        d.violations()
    );
    assert!(d.self_check_failures().is_empty(), "{:#?}", d.self_check_failures());
}

#[tokio::test]
async fn batch_limit_and_disabled_endpoint() {
    let d = start(config().batch_limit(3)).await;
    let url = format!("/zones/{ZONE_ID}/dns_records/batch");
    let posts: Vec<Value> = (0..4).map(|i| a_record(&format!("h{i}"), "192.0.2.1")).collect();
    let r = call(&d, "POST", &url, Some(json!({"posts": posts}))).await;
    assert_eq!((r.status, r.error_code()), (400, u64::from(BATCH_LIMIT_CODE)));
    assert!(d.records(ZONE).is_empty());
    let r = call(&d, "POST", &url, Some(json!({"posts": posts[..3]}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(d.records(ZONE).len(), 3);
    d.set_batch_enabled(false);
    let r = call(&d, "POST", &url, Some(json!({"posts": []}))).await;
    assert_eq!((r.status, r.error_code()), (404, 7003));
    assert_clean(&d);
    // Free-plan default is 200.
    let d2 = start(config()).await;
    let posts: Vec<Value> = (0..201).map(|i| a_record(&format!("h{i}"), "192.0.2.1")).collect();
    let r = call(&d2, "POST", &url, Some(json!({"posts": posts}))).await;
    assert_eq!(r.status, 400);
    let r = call(&d2, "POST", &url, Some(json!({"posts": posts[..200]}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(d2.records(ZONE).len(), 200);
}

#[tokio::test]
async fn seed_records_are_tracked() {
    let mut s = SeedRecord::new(ZONE, "TXT", "_acme", "token-value");
    s.id = Some("ffffffffffffffffffffffffffffffff".into());
    let d = start(config().seed(s).seed(SeedRecord::new(ZONE, "A", "@", "203.0.113.1"))).await;
    assert!(d.seed_records_intact().is_ok());
    assert_eq!(d.records(ZONE)[0].id, "ffffffffffffffffffffffffffffffff");
    assert_eq!(d.records(ZONE_ID)[1].name, "example.com");
    let r = call(
        &d,
        "DELETE",
        &format!("/zones/{ZONE_ID}/dns_records/ffffffffffffffffffffffffffffffff"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let e = d.seed_records_intact().unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("was deleted"));
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn faults_seen_by_a_raw_client() {
    let d = start(config()).await;
    let list = format!("/zones/{ZONE_ID}/dns_records");

    d.inject(Fault::TooManyRequests { retry_after_secs: 7 });
    let r = call(&d, "GET", &list, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.error_code(), 10100);
    assert_eq!(
        r.json()["errors"][0]["message"],
        "More than 1200 requests per 300 seconds reached"
    );

    d.inject(Fault::ServerError(503));
    let r = call(&d, "GET", &list, None).await;
    assert_eq!(r.status, 503);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err(), "503 is an HTML page");
    d.inject(Fault::ServerError(500));
    let r = call(&d, "GET", &list, None).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["success"], false);

    d.inject(Fault::Slow(Duration::from_millis(300)));
    let t0 = Instant::now();
    let r = call(&d, "GET", &list, None).await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);

    d.inject(Fault::TruncatedJson);
    let r = call(&d, "GET", &list, None).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
    assert!(serde_json::from_slice::<Value>(&r.body).is_err(), "truncated");
    assert_eq!(r.body[0], b'{');

    d.inject(Fault::Garbage);
    let r = call(&d, "POST", &list, Some(a_record("g", "192.0.2.50"))).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert!(d.records(ZONE).is_empty(), "garbage answers do not apply the request");

    // AppliedButLost: the record exists although the client saw a 502.
    d.inject(Fault::AppliedButLost);
    let r = call(&d, "POST", &list, Some(a_record("lost", "192.0.2.60"))).await;
    assert_eq!(r.status, 502);
    assert_eq!(d.records(ZONE).len(), 1);
    assert_eq!(d.records(ZONE)[0].name, "lost.example.com");
    // ...and a retry meets 81057.
    let r = call(&d, "POST", &list, Some(a_record("lost", "192.0.2.60"))).await;
    assert_eq!(r.error_code(), 81057);

    // Filters: a write-only fault skips reads.
    d.inject_when(Fault::ServerError(502), FaultFilter::writes());
    assert_eq!(call(&d, "GET", &list, None).await.status, 200);
    assert_eq!(d.pending_faults(), 1);
    assert_eq!(
        call(&d, "POST", &list, Some(a_record("w", "192.0.2.70"))).await.status,
        502
    );
    assert_eq!(d.pending_faults(), 0);
    d.inject_when(Fault::ServerError(503), FaultFilter::path_prefix("/zones/"));
    assert_eq!(call(&d, "GET", "/zones?name=example.com", None).await.status, 200);
    assert_eq!(call(&d, "GET", &list, None).await.status, 503);
    d.inject_when(Fault::ServerError(503), FaultFilter::method("delete"));
    assert_eq!(call(&d, "GET", &list, None).await.status, 200);
    assert_eq!(d.pending_faults(), 1);

    // Storm until cleared.
    d.set_always(Some(Fault::ServerError(503)));
    for _ in 0..3 {
        assert_eq!(call(&d, "GET", &list, None).await.status, 503);
    }
    d.set_always(None);
    assert_eq!(call(&d, "GET", &list, None).await.status, 200);

    let log = d.requests();
    assert_eq!(log[0].fault, Some(Fault::TooManyRequests { retry_after_secs: 7 }));
    assert_eq!(log[0].status, 429);
    assert_clean(&d);
}

// ---------------------------------------------------------------- observation

#[tokio::test]
async fn request_log_and_window() {
    let d = start(config()).await;
    let body = a_record("n", "192.0.2.1").to_string();
    let target = format!("{API_PREFIX}/zones/{ZONE_ID}/dns_records?");
    let headers = [
        ("Authorization", "Bearer good-token"),
        ("Content-Type", "application/json"),
        ("X-Vantage-Node", "node-2"),
        ("X-Vantage-Term", "17"),
    ];
    let r = raw(d.addr(), "POST", &target, &headers, Some(body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    call(&d, "GET", &format!("/zones/{ZONE_ID}/dns_records?type=A"), None).await;
    let log = d.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, format!("{API_PREFIX}/zones/{ZONE_ID}/dns_records"));
    assert_eq!(log[0].body.as_ref().unwrap()["content"], "192.0.2.1");
    assert_eq!(log[0].vantage_node.as_deref(), Some("node-2"));
    assert_eq!(log[0].vantage_term.as_deref(), Some("17"));
    assert_eq!(log[1].query, "type=A");
    assert_eq!(log[1].vantage_node, None);
    assert!(log[1].at >= log[0].at);
    assert_eq!(d.max_requests_in_window(Duration::from_secs(300)), 2);
    assert_eq!(d.max_requests_in_window(Duration::ZERO), 0);
    assert_clean(&d);
}

#[test]
fn window_arithmetic() {
    let s = Duration::from_secs;
    assert_eq!(max_in_window(&[], s(300)), 0);
    assert_eq!(max_in_window(&[s(5)], s(300)), 1);
    // [t, t+300): 0 and 299 together, 300 starts a new window.
    assert_eq!(max_in_window(&[s(0), s(299), s(300)], s(300)), 2);
    assert_eq!(max_in_window(&[s(0), s(1), s(2), s(302), s(303)], s(300)), 3);
    // unsorted input, a dense burst in the middle
    let mut t: Vec<Duration> = (0..10).map(|i| s(i * 100)).collect();
    t.extend((0..50).map(|i| Duration::from_millis(450_000 + i * 10)));
    t.reverse();
    assert_eq!(max_in_window(&t, s(1)), 50);
    assert_eq!(max_in_window(&t, s(100)), 51);
    assert_eq!(max_in_window(&t, s(1000)), 60);
    // 1,200 requests evenly over 5 minutes fit; one more in the same span does not.
    let even: Vec<Duration> = (0..1200).map(|i| Duration::from_millis(i * 250)).collect();
    assert_eq!(max_in_window(&even, s(300)), 1200);
    let mut more = even.clone();
    more.push(Duration::from_millis(299_999));
    assert_eq!(max_in_window(&more, s(300)), 1201);
}

// ---------------------------------------------------------------- validator internals

#[test]
fn schema_keywords() {
    use schema::{Mode, Validator};
    let doc = json!({"components": {"schemas": {
        "Id": {"type": "string", "maxLength": 3},
        "Obj": {"type": "object", "required": ["id"], "additionalProperties": false,
                "properties": {"id": {"$ref": "#/components/schemas/Id"}, "ro": {"type": "string", "readOnly": true},
                               "n": {"type": "integer", "nullable": true, "minimum": 1, "exclusiveMaximum": true, "maximum": 5}}},
        "One": {"oneOf": [{"type": "number", "minimum": 0}, {"type": "number", "maximum": 10}]},
        "Any": {"anyOf": [{"type": "string", "format": "ipv4"}, {"enum": [1]}]},
        "Arr": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": true},
        "Not": {"not": {"type": "string"}},
        "Multi": {"type": ["string", "boolean"]},
        "Open": {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    }}});
    let req = Validator::new(
        &doc,
        Mode {
            request: true,
            reject_undeclared: false,
        },
    );
    let resp = Validator::new(
        &doc,
        Mode {
            request: false,
            reject_undeclared: false,
        },
    );
    let strict = Validator::new(
        &doc,
        Mode {
            request: true,
            reject_undeclared: true,
        },
    );
    let s = |n: &str| json!({"$ref": format!("#/components/schemas/{n}")});
    let ok = |v: &Validator<'_>, n: &str, x: Value| v.validate(&s(n), &x, "").is_empty();
    assert!(ok(&req, "Obj", json!({"id": "abc", "n": null})));
    assert!(!ok(&req, "Obj", json!({"id": "abcd"})));
    assert!(!ok(&req, "Obj", json!({})));
    assert!(
        !ok(&req, "Obj", json!({"id": "a", "x": 1})),
        "additionalProperties false"
    );
    assert!(!ok(&req, "Obj", json!({"id": "a", "ro": "x"})), "readOnly in request");
    assert!(ok(&resp, "Obj", json!({"id": "a", "ro": "x"})), "readOnly in response");
    assert!(!ok(&req, "Obj", json!({"id": "a", "n": 5})), "exclusiveMaximum");
    assert!(!ok(&req, "Obj", json!({"id": "a", "n": 1.5})), "integer");
    assert!(ok(&req, "Obj", json!({"id": "a", "n": 4.0})), "4.0 is an integer");
    assert!(!ok(&req, "One", json!(5)), "oneOf: both match");
    assert!(ok(&req, "One", json!(-5)));
    assert!(ok(&req, "Any", json!("10.0.0.1")) && ok(&req, "Any", json!(1.0)));
    assert!(!ok(&req, "Any", json!("10.0.0.256")) && !ok(&req, "Any", json!(2)));
    assert!(ok(&req, "Arr", json!(["a", "b"])));
    assert!(
        !ok(&req, "Arr", json!([])) && !ok(&req, "Arr", json!(["a", "a"])) && !ok(&req, "Arr", json!(["a", "b", "c"]))
    );
    assert!(!ok(&req, "Arr", json!([1])));
    assert!(ok(&req, "Not", json!(1)) && !ok(&req, "Not", json!("x")));
    assert!(ok(&req, "Multi", json!(true)) && !ok(&req, "Multi", json!(1)));
    assert!(ok(&req, "Open", json!({"a": 1, "b": 2, "c": 3})));
    assert!(ok(&strict, "Open", json!({"a": 1, "b": 2})));
    assert!(
        !ok(&strict, "Open", json!({"a": 1, "c": 3})),
        "undeclared property in strict mode"
    );
    assert!(!req.validate(&json!({"$ref": "#/nope"}), &json!(1), "").is_empty());
    let cyc = json!({"components": {"schemas": {"L": {"$ref": "#/components/schemas/L"}}}});
    assert!(!Validator::new(
        &cyc,
        Mode {
            request: true,
            reject_undeclared: false
        }
    )
    .validate(&json!({"$ref": "#/components/schemas/L"}), &json!(1), "")
    .is_empty());
    assert!(schema::is_date_time("2017-03-11T18:01:43.054409Z") && schema::is_date_time("2014-01-01T05:20:00+01:00"));
    assert!(!schema::is_date_time("2017-13-11T18:01:43Z") && !schema::is_date_time("2017-03-11"));
}

/// Every keyword used by the document's schemas must be either supported or
/// deliberately ignored; a new keyword in a future document makes this fail.
#[test]
fn document_uses_only_known_keywords() {
    const SUPPORTED: &[&str] = &[
        "$ref",
        "type",
        "nullable",
        "enum",
        "const",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "format",
        "readOnly",
    ];
    const IGNORED: &[&str] = &[
        "pattern",
        "discriminator",
        "writeOnly",
        "default",
        "deprecated",
        "example",
        "examples",
        "title",
        "description",
    ];
    fn walk(s: &Value, out: &mut std::collections::BTreeSet<String>) {
        let Some(m) = s.as_object() else { return };
        for (k, v) in m {
            out.insert(k.clone());
            match k.as_str() {
                "properties" => v
                    .as_object()
                    .into_iter()
                    .flat_map(|p| p.values())
                    .for_each(|x| walk(x, out)),
                "items" | "not" | "additionalProperties" => walk(v, out),
                "allOf" | "anyOf" | "oneOf" => v.as_array().into_iter().flatten().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(openapi_path()).unwrap()).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for s in doc["components"]["schemas"].as_object().unwrap().values() {
        walk(s, &mut used);
    }
    for p in doc["paths"].as_object().unwrap().values() {
        for op in p.as_object().unwrap().values() {
            for prm in op["parameters"].as_array().into_iter().flatten() {
                walk(&prm["schema"], &mut used);
                // OAS parameter serialisation keywords we would have to honour:
                assert!(prm
                    .get("style")
                    .is_none_or(|s| s == "form" || s == "deepObject" || s == "simple"));
            }
            walk(&op["requestBody"]["content"]["application/json"]["schema"], &mut used);
        }
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|k| !k.starts_with("x-") && !SUPPORTED.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()))
        .collect();
    assert!(unknown.is_empty(), "unhandled schema keywords: {unknown:?}");
    assert!(used.contains("anyOf") && used.contains("format") && used.contains("readOnly"));
}

#[test]
fn bad_config_is_reported() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(matches!(
            try_start(DoubleConfig::new("/nonexistent.json")).await,
            Err(DoubleError::Read { .. })
        ));
        let bad_seed = config().seed(SeedRecord::new("nope.test", "A", "x", "192.0.2.1"));
        assert!(matches!(try_start(bad_seed).await, Err(DoubleError::Config(_))));
        let bad_ip = config().seed(SeedRecord::new(ZONE, "A", "x", "999.0.0.1"));
        assert!(matches!(try_start(bad_ip).await, Err(DoubleError::Config(_))));
    });
}

#[tokio::test]
async fn malformed_http_input_does_not_panic() {
    let d = start(config()).await;
    let auth = [("Authorization", "Bearer good-token")];
    for target in [
        format!("{API_PREFIX}/zones?name=%zz"),
        format!("{API_PREFIX}/zones/%ff%fe/dns_records"),
        format!("{API_PREFIX}/zones?=&&name"),
        format!("{API_PREFIX}/zones/{ZONE_ID}/dns_records/{}", "%41".repeat(40)),
    ] {
        let r = raw(d.addr(), "GET", &target, &auth, None).await.unwrap();
        assert!(r.status == 400, "{target}: {}", r.status);
        assert_eq!(r.json()["success"], false);
    }
    let r = raw(
        d.addr(),
        "PATCH",
        &format!("{API_PREFIX}/zones/{ZONE_ID}/dns_records/x"),
        &auth,
        Some(b"\xff\xfe"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(d.violations().len(), 5, "{:#?}", d.violations());
    // still serving
    assert_eq!(call(&d, "GET", "/zones", None).await.status, 200);
}

#[test]
fn response_self_check_is_not_vacuous() {
    let doc: Value = serde_json::from_slice(&std::fs::read(openapi_path()).unwrap()).unwrap();
    let spec = spec::Spec::load(doc).unwrap();
    let good = json!({"success": true, "errors": [], "messages": [], "result": [{
        "id": "372e67954025e0ba6aaa6d586b9e0b59", "type": "A", "name": "example.com", "content": "198.51.100.4",
        "proxiable": true, "proxied": true, "ttl": 120, "created_on": "2014-01-01T05:20:00Z",
        "modified_on": "2014-01-01T05:20:00Z", "meta": {"auto_added": true, "source": "primary"}}],
        "result_info": {"page": 1, "per_page": 3, "count": 1, "total_count": 1, "total_pages": 1}});
    let t = "/zones/{zone_id}/dns_records";
    assert_eq!(spec.check_response(t, "get", 200, &good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["result"][0]["content"] = json!("not-an-ip");
    assert!(!spec.check_response(t, "get", 200, &bad).is_empty());
    let mut bad = good.clone();
    bad["result"][0]["comment"] = Value::Null;
    assert!(
        !spec.check_response(t, "get", 200, &bad).is_empty(),
        "comment is a non-nullable string"
    );
    assert!(
        !spec.check_response(t, "get", 400, &good).is_empty(),
        "success:true is not a failure body"
    );
    assert!(spec
        .check_response(t, "get", 404, &vector("lexicon_81057_2020.json"))
        .is_empty());
}

#[tokio::test]
async fn optional_closed_object_mode() {
    let mut cfg = config();
    cfg.reject_undeclared_properties = true;
    let d = start(cfg).await;
    let url = format!("/zones/{ZONE_ID}/dns_records");
    let mut body = a_record("x", "192.0.2.1");
    body["bogus"] = json!(1);
    let r = call(&d, "POST", &url, Some(body)).await;
    assert_eq!(r.status, 400);
    assert!(
        d.violations()[0].contains("'bogus' is not declared"),
        "{:?}",
        d.violations()
    );
    create(&d, "x", "192.0.2.1").await;
    assert_eq!(d.violations().len(), 1);
    // Default mode: the document leaves objects open.
    let d = start(config()).await;
    let mut body = a_record("x", "192.0.2.1");
    body["bogus"] = json!(1);
    assert_eq!(call(&d, "POST", &url, Some(body)).await.status, 200);
    assert_clean(&d);
}

// ---------------------------------------------------------------- departures and late faults

#[tokio::test]
async fn raw_answers_and_answers_sent_after_applying() {
    let d = start(config()).await;
    let list = format!("/zones/{ZONE_ID}/dns_records");

    let body = r#"{"success":false,"errors":[{"code":1002,"message":"bad filter"}],"messages":[],"result":null}"#;
    d.inject(Fault::Raw {
        status: 200,
        body: body.into(),
    });
    let r = call(&d, "POST", &list, Some(a_record("raw", "192.0.2.1"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(d.records(ZONE).is_empty(), "a raw answer does not apply the request");

    // The record exists and the request is logged while the answer is still held back.
    d.inject(Fault::SlowAfterApplying(Duration::from_millis(600)));
    let t0 = Instant::now();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(150),
        call(&d, "POST", &list, Some(a_record("late", "192.0.2.2"))),
    )
    .await;
    assert!(gave_up.is_err(), "the answer came early");
    assert_eq!(d.records(ZONE).len(), 1);
    assert_eq!(d.records(ZONE)[0].name, "late.example.com");
    let last = d.requests().pop().unwrap();
    assert_eq!(last.fault, Some(Fault::SlowAfterApplying(Duration::from_millis(600))));
    assert_eq!(last.status, 200);
    // A client that waits gets the normal answer.
    d.inject(Fault::SlowAfterApplying(Duration::from_millis(300)));
    let r = call(&d, "GET", &list, None).await;
    assert!(t0.elapsed() >= Duration::from_millis(450));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"][0]["name"], "late.example.com");

    // An exact route filter skips other paths, even those it is a prefix of.
    d.inject_when(Fault::ServerError(503), FaultFilter::route("GET", "/zones"));
    assert_eq!(call(&d, "GET", &list, None).await.status, 200);
    assert_eq!(d.pending_faults(), 1);
    assert_eq!(call(&d, "GET", "/zones?name=example.com", None).await.status, 503);
    d.inject_when(
        Fault::ServerError(503),
        FaultFilter::route("POST", &format!("{API_PREFIX}{list}")),
    );
    assert_eq!(
        call(&d, "POST", &format!("{list}/batch"), Some(json!({"posts": []})))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&d, "POST", &list, Some(a_record("x", "192.0.2.3"))).await.status,
        503
    );
    assert_eq!(d.pending_faults(), 0);
    assert_clean(&d);
}

#[tokio::test]
async fn page_size_cap_and_ignored_filters() {
    let d = start(config().max_per_page(2)).await;
    for i in 0..5 {
        d.add_record(SeedRecord::new(ZONE, "A", &format!("h{i}"), &format!("192.0.2.{i}")))
            .unwrap();
    }
    d.add_record(SeedRecord::new(ZONE, "TXT", "h0", "v=spf1 -all")).unwrap();
    assert!(d
        .add_record(SeedRecord::new("nope.test", "A", "x", "192.0.2.9"))
        .is_err());
    assert!(d.add_record(SeedRecord::new(ZONE, "A", "x", "not-an-address")).is_err());
    assert_eq!(d.records(ZONE).len(), 6);
    assert!(d.seed_records_intact().is_ok(), "added records are not seeds");

    let list = format!("/zones/{ZONE_ID}/dns_records");
    let r = call(&d, "GET", &format!("{list}?type=A&per_page=100"), None)
        .await
        .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 2);
    assert_eq!(r["result_info"]["per_page"], 2);
    assert_eq!(r["result_info"]["total_count"], 5);
    assert_eq!(r["result_info"]["total_pages"], 3);
    d.set_max_per_page(None);
    let r = call(&d, "GET", &format!("{list}?type=A&per_page=100"), None)
        .await
        .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 5);

    d.set_ignore_list_filters(true);
    let r = call(&d, "GET", &format!("{list}?type=TXT&name=h0.example.com"), None)
        .await
        .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 6, "filters ignored");
    d.set_ignore_list_filters(false);
    let r = call(&d, "GET", &format!("{list}?type=TXT&name=h0.example.com"), None)
        .await
        .json();
    assert_eq!(r["result"].as_array().unwrap().len(), 1);

    // The log gives decoded query parameters and the headers sent.
    let last = d.requests().pop().unwrap();
    assert_eq!(last.query_param("name").as_deref(), Some("h0.example.com"));
    assert_eq!(last.query_param("type").as_deref(), Some("TXT"));
    assert_eq!(last.query_param("page"), None);
    assert_eq!(last.header("Authorization"), Some(format!("Bearer {TOKEN}")));
    assert_eq!(last.api_path(), list);
    assert_clean(&d);
}

#[tokio::test]
async fn refused_contents_and_echoed_credentials() {
    let d = start(config().refuse_content("192.0.2.66")).await;
    let list = format!("/zones/{ZONE_ID}/dns_records");
    let r = call(&d, "POST", &list, Some(a_record("p", "192.0.2.66"))).await;
    assert_eq!((r.status, r.error_code()), (400, 1004));
    // A batch holding a refused content is refused whole.
    d.refuse_content("2001:DB8::66");
    let batch = json!({"posts": [a_record("a", "192.0.2.1"),
        {"type": "AAAA", "name": "p", "content": "2001:db8::66", "ttl": 60}]});
    let r = call(&d, "POST", &format!("{list}/batch"), Some(batch)).await;
    assert_eq!((r.status, r.error_code()), (400, 1004));
    assert!(d.records(ZONE).is_empty());
    let id = create(&d, "p", "192.0.2.7").await["id"].as_str().unwrap().to_string();
    let r = call(
        &d,
        "PATCH",
        &format!("{list}/{id}"),
        Some(json!({"content": "192.0.2.66"})),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (400, 1004));
    assert_eq!(d.records(ZONE)[0].content, "192.0.2.7");
    // A refusal is the API's answer to a well-formed request, not a violation.
    assert_clean(&d);

    let wrong = [("Authorization", "Bearer wrong-token-1234")];
    let r = raw(d.addr(), "GET", &format!("{API_PREFIX}{list}"), &wrong, None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(!String::from_utf8_lossy(&r.body).contains("wrong-token-1234"));
    d.set_echo_credentials(true);
    let r = raw(d.addr(), "GET", &format!("{API_PREFIX}{list}"), &wrong, None)
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), 10000);
    assert_eq!(
        r.json()["errors"][0]["message"],
        "Authentication error (got Bearer wrong-token-1234)"
    );
    let legacy = [("X-Auth-Email", "ops@example.com"), ("X-Auth-Key", "wrong-key")];
    let r = raw(d.addr(), "GET", &format!("{API_PREFIX}{list}"), &legacy, None)
        .await
        .unwrap();
    assert_eq!(r.error_code(), 9103);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("x-auth-key: wrong-key"));
    assert_clean(&d);
}
