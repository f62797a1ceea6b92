//! One conformance suite, every provider: the memory provider, the zone file
//! (read back by BIND's `named-checkzone`), Cloudflare against the strict
//! double, Route 53 against moto behind a gate that checks each SigV4
//! signature with botocore's signer, and RFC 2136 against a real BIND (read
//! back with `dig` AXFR). Each scenario drives the provider the
//! way the reconciler does (list, diff, apply, until the diff is empty) and
//! asserts on the server's own view: moto's API answers through boto3, the
//! double's state, the zone as BIND parses it.
//!
//! Scenarios: initial create; delete one of three; re-add; foreign records
//! (another name, and a value in an owned name) untouched; duplicate cleanup
//! where the provider allows duplicates; a lost answer resolved without a
//! duplicate; a throttled write retried.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vantage::dns::{diff, Owned, Provider, ProviderError, Record};

#[path = "support/bind.rs"]
mod bind;
mod common;
#[path = "support/moto.rs"]
mod moto;
use moto::{Moto, AWS_SECRET};

const ZONE: &str = "example.test";
const WWW: &str = "www.example.test";
const MAIL: &str = "mail.example.test";
const OWNED: [&str; 4] = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"];
/// Foreign: a value in an owned name, and another name.
const FOREIGN_WWW: &str = "198.51.100.9";
const FOREIGN_MAIL: &str = "198.51.100.7";

/// A provider and the server behind it.
trait Subject {
    fn provider(&self) -> Arc<dyn Provider>;
    /// Every A/AAAA record the server holds, as (name, content), duplicates kept.
    fn view(&self) -> Vec<(String, String)>;
    /// Adds the foreign records, as someone else would.
    fn add_foreign(&self);
    /// Adds a second copy of an owned record; false where the server keeps none.
    fn add_duplicate(&self, content: &str) -> bool;
    /// The next write is applied and its answer lost; false where it cannot be arranged.
    fn lose_next_write(&self) -> bool;
    /// The next write is refused as throttled (not applied); false where it cannot be arranged.
    fn throttle_next_write(&self) -> bool;
}

fn owned() -> Owned {
    let mut o = Owned::default();
    o.names
        .insert(WWW.into(), OWNED.iter().map(|s| s.to_string()).collect());
    o
}

fn desired(contents: &[&str]) -> BTreeSet<Record> {
    contents.iter().map(|c| Record::new(WWW, *c)).collect()
}

/// What the reconciler does, until the provider holds `want`; the rounds it took.
async fn converge(p: &dyn Provider, want: &BTreeSet<Record>) -> usize {
    let owned = owned();
    for round in 1..=8 {
        let actual = match p.list(&owned).await {
            Ok(a) => a,
            Err(ProviderError::Transient(e)) => {
                eprintln!("round {round}: list: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("{}: list refused: {e}", p.describe()),
        };
        let changes = diff(want, &actual, &owned);
        if changes.is_empty() {
            return round;
        }
        match p.apply(&changes).await {
            Ok(outcomes) => eprintln!("round {round}: {outcomes:?}"),
            Err(e) => eprintln!("round {round}: apply: {e}"),
        }
    }
    panic!("{} did not converge in 8 rounds", p.describe());
}

fn www_view(s: &dyn Subject) -> Vec<String> {
    let mut v: Vec<String> = s.view().into_iter().filter(|(n, _)| n == WWW).map(|(_, c)| c).collect();
    v.sort();
    v
}

fn expect(s: &dyn Subject, owned_now: &[&str], when: &str) {
    let mut want: Vec<String> = owned_now.iter().map(|c| c.to_string()).collect();
    want.push(FOREIGN_WWW.to_string());
    want.sort();
    assert_eq!(www_view(s), want, "{when}: {WWW} on the server");
    let mail: Vec<String> = s
        .view()
        .into_iter()
        .filter(|(n, _)| n == MAIL)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        mail,
        vec![FOREIGN_MAIL.to_string()],
        "{when}: the foreign {MAIL} untouched"
    );
}

async fn conformance(s: &dyn Subject) {
    let p = s.provider();
    s.add_foreign();
    let all = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"];
    let two = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];

    converge(p.as_ref(), &desired(&all)).await;
    expect(s, &all, "initial create");
    converge(p.as_ref(), &desired(&two)).await;
    expect(s, &two, "delete one of three");
    converge(p.as_ref(), &desired(&all)).await;
    expect(s, &all, "re-add");

    if s.add_duplicate("192.0.2.1") {
        assert_eq!(
            www_view(s).iter().filter(|c| *c == "192.0.2.1").count(),
            2,
            "duplicate seeded"
        );
        converge(p.as_ref(), &desired(&all)).await;
        expect(s, &all, "duplicate cleaned up");
    } else {
        println!("{}: no duplicates possible on this server", p.describe());
    }

    if s.lose_next_write() {
        converge(p.as_ref(), &desired(&two)).await;
        expect(s, &two, "a lost delete");
        assert!(s.lose_next_write());
        let rounds = converge(p.as_ref(), &desired(&all)).await;
        expect(s, &all, "a lost create, settled without a duplicate");
        assert!(rounds >= 2, "the lost answer took a second listing");
    } else {
        println!("{}: answers cannot be lost on this server", p.describe());
    }

    if s.throttle_next_write() {
        converge(p.as_ref(), &desired(&two)).await;
        expect(s, &two, "a throttled write, retried");
    } else {
        println!("{}: no throttling on this server", p.describe());
    }
    converge(p.as_ref(), &desired(&all)).await;
    expect(s, &all, "the end");
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

struct MemorySubject(Arc<vantage::dns::memory::Memory>);

impl Subject for MemorySubject {
    fn provider(&self) -> Arc<dyn Provider> {
        self.0.clone()
    }
    fn view(&self) -> Vec<(String, String)> {
        self.0
            .records()
            .into_iter()
            .map(|e| (e.record.name, e.record.content))
            .collect()
    }
    fn add_foreign(&self) {
        self.0.seed(Record::new(WWW, FOREIGN_WWW));
        self.0.seed(Record::new(MAIL, FOREIGN_MAIL));
    }
    fn add_duplicate(&self, content: &str) -> bool {
        self.0.seed(Record::new(WWW, content));
        true
    }
    fn lose_next_write(&self) -> bool {
        false
    }
    fn throttle_next_write(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn memory_provider_conforms() {
    conformance(&MemorySubject(Arc::default())).await;
}

// ---------------------------------------------------------------------------
// Zone file, read back by named-checkzone
// ---------------------------------------------------------------------------

struct ZoneSubject {
    path: PathBuf,
    provider: Arc<vantage::dns::zonefile::ZoneFile>,
    _dir: tempfile::TempDir,
}

/// The zone as BIND parses it: (name, content) of its A/AAAA records.
fn named_view(path: &Path, origin: &str) -> Vec<(String, String)> {
    let out = Command::new("named-checkzone")
        .args(["-q", "-D", "-o", "-", origin])
        .arg(path)
        .output()
        .expect("named-checkzone (scripts/test installs bind9-utils)");
    assert!(
        out.status.success(),
        "named-checkzone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && (f[3] == "A" || f[3] == "AAAA"))
                .then(|| (f[0].trim_end_matches('.').to_string(), f[4].to_string()))
        })
        .collect()
}

impl Subject for ZoneSubject {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }
    fn view(&self) -> Vec<(String, String)> {
        if !self.path.exists() {
            return Vec::new();
        }
        named_view(&self.path, ZONE)
    }
    fn add_foreign(&self) {
        // Set in the settings: static records are copied into every write.
    }
    fn add_duplicate(&self, _: &str) -> bool {
        false
    }
    fn lose_next_write(&self) -> bool {
        false
    }
    fn throttle_next_write(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn zone_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.test.zone");
    let provider = Arc::new(vantage::dns::zonefile::ZoneFile::new(
        vantage::dns::zonefile::ZoneSettings {
            path: path.clone(),
            origin: ZONE.into(),
            ttl: 60,
            nameservers: vec!["ns1.example.net".into()],
            hostmaster: "hostmaster.example.test".into(),
            static_records: vec![
                format!("www 300 IN A {FOREIGN_WWW}"),
                format!("mail 300 IN A {FOREIGN_MAIL}"),
            ],
        },
    ));
    conformance(&ZoneSubject {
        path,
        provider,
        _dir: dir,
    })
    .await;
}

// ---------------------------------------------------------------------------
// Cloudflare, against the strict double
// ---------------------------------------------------------------------------

const CF_TOKEN: &str = "tok-conformance-0123456789";
const CF_ZONE_ID: &str = "0123456789abcdef0123456789abcdef";

struct CloudflareSubject {
    double: cfdouble::Double,
    provider: Arc<vantage::dns::cloudflare::Cloudflare>,
}

impl Subject for CloudflareSubject {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }
    fn view(&self) -> Vec<(String, String)> {
        self.double
            .records(ZONE)
            .into_iter()
            .filter(|r| r.record_type == "A" || r.record_type == "AAAA")
            .map(|r| (r.name, r.content))
            .collect()
    }
    fn add_foreign(&self) {
        for (name, content) in [(WWW, FOREIGN_WWW), (MAIL, FOREIGN_MAIL)] {
            self.double
                .add_record(cfdouble::SeedRecord::new(ZONE, "A", name, content))
                .unwrap();
        }
    }
    fn add_duplicate(&self, content: &str) -> bool {
        // Cloudflare (and the double) refuses an identical record.
        let refused = self
            .double
            .add_record(cfdouble::SeedRecord::new(ZONE, "A", WWW, content))
            .is_err();
        assert!(refused, "the double took a duplicate record");
        false
    }
    fn lose_next_write(&self) -> bool {
        self.double.inject_when(
            cfdouble::Fault::AppliedButLost,
            cfdouble::FaultFilter {
                writes_only: true,
                ..Default::default()
            },
        );
        true
    }
    fn throttle_next_write(&self) -> bool {
        self.double.inject_when(
            cfdouble::Fault::TooManyRequests { retry_after_secs: 1 },
            cfdouble::FaultFilter {
                writes_only: true,
                ..Default::default()
            },
        );
        true
    }
}

#[tokio::test]
async fn cloudflare_conforms_against_the_strict_double() {
    let openapi = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/cloudflare/dns-openapi.json"
    ));
    let double = cfdouble::start(
        cfdouble::DoubleConfig::new(openapi)
            .token(CF_TOKEN)
            .zone(ZONE, CF_ZONE_ID),
    )
    .await;
    use vantage::dns::cloudflare::{Cloudflare, CloudflareConfig, Credentials, Secret};
    let mut c = CloudflareConfig::new(ZONE, Credentials::Token(Secret::new(CF_TOKEN)));
    c.api_base = double.base_url();
    c.request_timeout = Duration::from_secs(3);
    let provider = Arc::new(Cloudflare::new(c).unwrap());
    let s = CloudflareSubject { double, provider };
    conformance(&s).await;
    assert!(s.double.violations().is_empty(), "{:#?}", s.double.violations());
}

// ---------------------------------------------------------------------------
// Route 53, against moto behind the SigV4 gate
// ---------------------------------------------------------------------------

fn route53(m: &Moto, creds: PathBuf, zone: &str) -> Arc<vantage::dns::route53::Route53> {
    use vantage::dns::route53::{Route53, Route53Config};
    let mut c = Route53Config::new(zone);
    c.endpoint = m.gate.clone();
    c.sources.file = Some(creds);
    c.sources.profile = Some("vantage".into());
    c.sources.imds = false;
    c.request_timeout = Duration::from_secs(3);
    c.insync_timeout = Some(Duration::from_secs(10));
    Arc::new(Route53::new(c).unwrap())
}

struct Route53Subject {
    moto: Moto,
    provider: Arc<vantage::dns::route53::Route53>,
}

impl Subject for Route53Subject {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }
    fn view(&self) -> Vec<(String, String)> {
        self.moto.view()
    }
    fn add_foreign(&self) {
        self.moto.upsert(WWW, &[FOREIGN_WWW]);
        self.moto.upsert(MAIL, &[FOREIGN_MAIL]);
    }
    fn add_duplicate(&self, _: &str) -> bool {
        false
    }
    fn lose_next_write(&self) -> bool {
        self.moto.gate(Some("{\"lose\": 1}"));
        true
    }
    fn throttle_next_write(&self) -> bool {
        self.moto.gate(Some("{\"throttle\": 1}"));
        true
    }
}

#[tokio::test]
async fn route53_conforms_against_moto_with_signatures_checked() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start("127.0.83.50", ZONE);
    let provider = route53(&moto, Moto::credentials_file(dir.path(), AWS_SECRET), ZONE);
    let s = Route53Subject { moto, provider };
    conformance(&s).await;
    let counts = s.moto.gate(None);
    println!("gate: {counts}");
    assert_eq!(counts["refused"], 0, "every signature checked out: {counts}");
    assert_eq!(
        (counts["lost"].as_u64(), counts["throttled"].as_u64()),
        (Some(2), Some(1)),
        "{counts}"
    );
    assert!(
        s.provider.rate_limited() >= 1,
        "the throttled answer was counted as a rate-limit wait"
    );
}

#[tokio::test]
async fn route53_refusals_name_the_provider_the_zone_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start("127.0.84.50", ZONE);
    let owned = owned();
    // A wrong secret: the gate (botocore's signer) refuses the signature.
    let wrong = route53(&moto, Moto::credentials_file(dir.path(), "not-the-secret"), ZONE);
    let e = wrong.list(&owned).await.unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, ProviderError::Permanent(_)), "{e:?}");
    assert!(
        text.contains("route53 zone example.test")
            && text.contains("dns.route53 credentials")
            && text.contains("SignatureDoesNotMatch"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "the secret is never shown");
    // A zone that does not exist.
    let good = Moto::credentials_file(dir.path(), AWS_SECRET);
    let missing = route53(&moto, good.clone(), "nowhere.test");
    let e = missing
        .list(&{
            let mut o = Owned::default();
            o.names
                .insert("www.nowhere.test".into(), ["192.0.2.1".to_string()].into());
            o
        })
        .await
        .unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, ProviderError::Permanent(_)), "{e:?}");
    assert!(
        text.contains("route53 zone nowhere.test") && text.contains("dns.route53.zone"),
        "{text}"
    );
    // Lost and found: the right credentials work at once.
    let right = route53(&moto, good, ZONE);
    assert!(right.list(&owned).await.unwrap().is_empty());
}

/// The agent with a wrong AWS secret: one alarm naming the provider, the zone
/// and the setting; it keeps running and retrying; fixed credentials are
/// picked up from the file and the records written.
#[test]
fn an_agent_with_a_wrong_aws_secret_keeps_running_retries_and_recovers_when_the_file_is_fixed() {
    use common::{wait_for, Cluster, Port};
    const NET: u8 = 85;
    let m = Moto::start("127.0.85.50", ZONE);
    let dir = tempfile::tempdir().unwrap();
    let creds = Moto::credentials_file(dir.path(), "not-the-secret");
    let (gate, file) = (m.gate.clone(), creds.display().to_string());
    let mut c = Cluster::with_extra(NET, 1, "", move |_| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [dns]\nprovider = \"route53\"\nreconcile_interval = \"2s\"\n\
             [dns.route53]\nzone = \"{ZONE}\"\nendpoint = \"{gate}\"\ncredentials_file = \"{file}\"\n\
             profile = \"vantage\"\ninstance_metadata = false\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"{WWW}\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.{NET}.200\"\n"
        )
    });
    let _up = Port::open(format!("127.0.{NET}.200:7600").parse().unwrap());
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1], Duration::from_secs(30));
    let alarm = wait_for("the refusal alarm", Duration::from_secs(30), || {
        let s = c.try_status(1)?;
        s["alarms"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("route53 zone example.test"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no alarm\n{}", c.logs()));
    println!("{alarm}");
    assert!(
        alarm.contains("dns.route53 credentials") && alarm.contains("SignatureDoesNotMatch"),
        "{alarm}"
    );
    assert!(!alarm.contains("not-the-secret"));
    let refused = |m: &Moto| m.gate(None)["refused"].as_u64().unwrap();
    let first = refused(&m);
    wait_for("a retry", Duration::from_secs(30), || {
        (refused(&m) > first).then_some(())
    })
    .expect("it retries");
    assert!(c.is_running(1), "the agent keeps running");
    let h = c.cli_json(&["history", "--addr", c.addr(1), "--limit", "1000"]);
    let failures = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dns-write" && e["to"] == "failed")
        .count();
    assert_eq!(failures, 1, "one history entry for one distinct failure: {h:#}");
    // The operator fixes the file; the agent re-reads it and writes.
    let fixed = Moto::credentials_file(dir.path(), AWS_SECRET);
    assert_eq!(fixed, creds);
    let want = vec![(WWW.to_string(), format!("127.0.{NET}.200"))];
    wait_for(
        "the record written with the fixed credentials",
        Duration::from_secs(30),
        || (m.view() == want).then_some(()),
    )
    .unwrap_or_else(|| panic!("{:?}\n{}", m.view(), c.logs()));
}

// ---------------------------------------------------------------------------
// RFC 2136, against BIND
// ---------------------------------------------------------------------------

fn rfc2136(server: &str, zone: &str, secret: &str) -> Arc<vantage::dns::rfc2136::Rfc2136> {
    use vantage::dns::rfc2136::{Rfc2136, Rfc2136Config};
    Arc::new(
        Rfc2136::new(Rfc2136Config {
            server: server.parse().unwrap(),
            zone: zone.into(),
            key_name: bind::KEY_NAME.into(),
            algorithm: "hmac-sha256".into(),
            secret: data_encoding::BASE64.decode(secret.as_bytes()).unwrap(),
            ttl: 60,
            timeout: Duration::from_secs(2),
        })
        .unwrap(),
    )
}

struct BindSubject {
    bind: bind::Bind,
    proxy: bind::Proxy,
    provider: Arc<vantage::dns::rfc2136::Rfc2136>,
}

impl Subject for BindSubject {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }
    fn view(&self) -> Vec<(String, String)> {
        self.bind.addresses()
    }
    fn add_foreign(&self) {
        // In the zone file BIND loaded.
    }
    fn add_duplicate(&self, _: &str) -> bool {
        false
    }
    fn lose_next_write(&self) -> bool {
        self.proxy.lose_next_update();
        true
    }
    fn throttle_next_write(&self) -> bool {
        // The nearest DNS has: the update never reaches the server.
        self.proxy.drop_next_update();
        true
    }
}

#[tokio::test]
async fn rfc2136_conforms_against_bind() {
    let foreign_www = format!("www IN A {FOREIGN_WWW}");
    let foreign_mail = format!("mail IN A {FOREIGN_MAIL}");
    let b = bind::Bind::start("127.0.0.1", 5386, ZONE, &[&foreign_www, &foreign_mail]);
    let proxy = bind::Proxy::start("127.0.86.53:5386", &b.addr);
    let provider = rfc2136(&proxy.addr, ZONE, bind::SECRET);
    let s = BindSubject {
        bind: b,
        proxy,
        provider,
    };
    conformance(&s).await;
    let log = s.bind.log();
    assert!(!log.contains("BADSIG") && !log.contains("BADKEY"), "{log}");
}

#[tokio::test]
async fn rfc2136_refusals_name_the_provider_the_zone_and_the_setting() {
    let b = bind::Bind::start("127.0.0.1", 5387, ZONE, &[]);
    let owned = owned();
    let wrong = rfc2136(&b.addr, ZONE, bind::WRONG_SECRET);
    let e = wrong.list(&owned).await.unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, ProviderError::Permanent(_)), "{e:?}");
    assert!(
        text.contains("rfc2136 zone example.test")
            && text.contains("NOTAUTH")
            && text.contains("dns.rfc2136.tsig_key_name"),
        "{text}"
    );
    let e = wrong
        .apply(&[vantage::dns::Change::Create(Record::new(WWW, "192.0.2.1"))])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Permanent(_)) && e.to_string().contains("NOTAUTH"),
        "{e}"
    );
    assert!(b.addresses().is_empty(), "nothing written with the wrong key");
    // A zone the server does not serve.
    let elsewhere = rfc2136(&b.addr, "nowhere.test", bind::SECRET);
    let mut o = Owned::default();
    o.names
        .insert("www.nowhere.test".into(), ["192.0.2.1".to_string()].into());
    let e = elsewhere.list(&o).await.unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, ProviderError::Permanent(_)), "{e:?}");
    assert!(
        text.contains("rfc2136 zone nowhere.test") && text.contains("dns.rfc2136.zone"),
        "{text}"
    );
    // The right key works.
    let right = rfc2136(&b.addr, ZONE, bind::SECRET);
    assert!(right.list(&owned).await.unwrap().is_empty());
}

#[tokio::test]
async fn route53_picks_the_private_zone_when_asked_and_refuses_to_guess_between_two() {
    let dir = tempfile::tempdir().unwrap();
    let m = Moto::start("127.0.87.50", ZONE);
    // A private zone of the same name, in a VPC.
    let private = moto::python(
        &format!(
            "{}z = r53.create_hosted_zone(Name='{ZONE}', CallerReference='private', \
             VPC={{'VPCRegion': 'us-east-1', 'VPCId': 'vpc-12345678'}}, HostedZoneConfig={{'PrivateZone': True}})\n\
             print(z['HostedZone']['Id'].split('/')[-1])",
            moto::BOTO
        ),
        &[&m.moto],
    );
    let creds = Moto::credentials_file(dir.path(), AWS_SECRET);
    let owned = owned();
    let either = route53(&m, creds.clone(), ZONE);
    let e = either.list(&owned).await.unwrap_err().to_string();
    assert!(
        e.contains("2 hosted zones are named example.test") && e.contains("dns.route53.private_zone"),
        "{e}"
    );
    let mk = |private_zone: bool| {
        use vantage::dns::route53::{Route53, Route53Config};
        let mut c = Route53Config::new(ZONE);
        c.endpoint = m.gate.clone();
        c.sources.file = Some(creds.clone());
        c.sources.profile = Some("vantage".into());
        c.sources.imds = false;
        c.private_zone = Some(private_zone);
        c.insync_timeout = None;
        Arc::new(Route53::new(c).unwrap())
    };
    let p = mk(true);
    converge(p.as_ref(), &desired(&["192.0.2.1"])).await;
    let in_private = moto::python(
        &format!(
            "{}print(sum(len(s.get('ResourceRecords', [])) for s in r53.list_resource_record_sets(HostedZoneId=sys.argv[2])['ResourceRecordSets'] if s['Type'] == 'A'))",
            moto::BOTO
        ),
        &[&m.moto, &private],
    );
    assert_eq!(in_private, "1", "written to the private zone");
    assert!(
        m.view().iter().all(|(_, c)| c != "192.0.2.1"),
        "the public one untouched"
    );
    let public = mk(false);
    assert!(public.list(&owned).await.unwrap().is_empty());
}

/// The agent with a wrong TSIG key: one alarm naming the provider, the zone
/// and the setting; it keeps running and retrying; the fixed secret file is
/// picked up and the records written.
#[test]
fn an_agent_with_a_wrong_tsig_key_keeps_running_retries_and_recovers_when_the_file_is_fixed() {
    use common::{wait_for, Cluster, Port};
    const NET: u8 = 88;
    let b = bind::Bind::start("127.0.0.1", 5388, ZONE, &[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = bind::Bind::secret_file(dir.path(), bind::WRONG_SECRET);
    let (server, file) = (b.addr.clone(), secret.display().to_string());
    let mut c = Cluster::with_extra(NET, 1, "", move |_| {
        format!(
            "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [dns]\nprovider = \"rfc2136\"\nreconcile_interval = \"2s\"\n\
             [dns.rfc2136]\nserver = \"{server}\"\nzone = \"{ZONE}\"\ntsig_key_name = \"{}\"\ntsig_secret_file = \"{file}\"\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"{WWW}\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.{NET}.200\"\n",
            bind::KEY_NAME
        )
    });
    let _up = Port::open(format!("127.0.{NET}.200:7600").parse().unwrap());
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1], Duration::from_secs(30));
    let alarm = wait_for("the refusal alarm", Duration::from_secs(30), || {
        let s = c.try_status(1)?;
        s["alarms"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("rfc2136 zone example.test"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no alarm\n{}", c.logs()));
    println!("{alarm}");
    assert!(
        alarm.contains("NOTAUTH") && alarm.contains("dns.rfc2136.tsig_key_name"),
        "{alarm}"
    );
    let refusals = |b: &bind::Bind| b.log().matches("request has invalid signature").count();
    let first = refusals(&b);
    assert!(first >= 1, "BIND saw the bad signature:\n{}", b.log());
    wait_for("a retry", Duration::from_secs(30), || {
        (refusals(&b) > first).then_some(())
    })
    .unwrap_or_else(|| panic!("no retry:\n{}", b.log()));
    assert!(c.is_running(1), "the agent keeps running");
    bind::Bind::secret_file(dir.path(), bind::SECRET);
    let want = vec![(WWW.to_string(), format!("127.0.{NET}.200"))];
    wait_for("the record written with the fixed key", Duration::from_secs(30), || {
        (b.addresses() == want).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", b.addresses(), c.logs()));
}
