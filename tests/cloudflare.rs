//! The Cloudflare provider against a strict double of the API that validates
//! every request against Cloudflare's published schema: a fault storm
//! converges, batches are sized to the plan limit, and three real agents
//! write through it, the leader alone, touching only their own records.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use cfdouble::{Double, DoubleConfig, Fault, FaultFilter, SeedRecord};
use common::{wait_for, Cluster, Port};
use vantage::dns::cloudflare::{Cloudflare, CloudflareConfig, Credentials, Secret};
use vantage::dns::{diff, Owned, Provider, Record, RecordType};

const LONG: Duration = Duration::from_secs(60);
const ZONE: &str = "example.test";
const ZONE_ID: &str = "9a7806061c88ada191ed06f989cc3dac";
const TOKEN: &str = "vantage-test-token-3f9c2e71d0";

fn openapi() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/cloudflare/dns-openapi.json"
    ))
}

/// A double with one zone and records Vantage does not own.
async fn double() -> Double {
    let cfg = DoubleConfig::new(openapi())
        .token(TOKEN)
        .zone(ZONE, ZONE_ID)
        .seed(SeedRecord::new(ZONE, "A", "mail.example.test", "192.0.2.25"))
        .seed(SeedRecord::new(ZONE, "A", "www.example.test", "192.0.2.99"))
        .seed(SeedRecord::new(ZONE, "TXT", "example.test", "\"v=spf1 -all\""));
    cfdouble::start(cfg).await
}

fn client(d: &Double) -> Cloudflare {
    let mut cfg = CloudflareConfig::new(ZONE, Credentials::Token(Secret::new(TOKEN)));
    cfg.api_base = d.base_url();
    cfg.request_timeout = Duration::from_secs(2);
    cfg.max_attempts = 8;
    Cloudflare::new(cfg).expect("client")
}

fn owned(hosts: &[&str], addrs: &[String]) -> Owned {
    let mut o = Owned::default();
    for h in hosts {
        o.names.insert(h.to_string(), addrs.iter().cloned().collect());
    }
    o
}

fn records(hosts: &[&str], addrs: &[String]) -> BTreeSet<Record> {
    hosts
        .iter()
        .flat_map(|h| addrs.iter().map(move |a| Record::new(*h, a.clone())))
        .collect()
}

/// Reconciles until the provider holds `desired`, as the leader would.
async fn converge(p: &Cloudflare, desired: &BTreeSet<Record>, o: &Owned) -> usize {
    for round in 1..=20 {
        match p.list(o).await {
            Ok(actual) => {
                let changes = diff(desired, &actual, o);
                if changes.is_empty() {
                    return round;
                }
                let _ = p.apply(&changes).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("did not converge in 20 rounds");
}

fn assert_clean(d: &Double) {
    assert!(d.violations().is_empty(), "schema violations: {:#?}", d.violations());
    assert!(
        d.seed_records_intact().is_ok(),
        "foreign records touched: {:?}",
        d.seed_records_intact()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_storm_converges_without_duplicates_or_schema_violations() {
    let d = double().await;
    let p = client(&d);
    let addrs: Vec<String> = (1..=6)
        .map(|i| format!("10.0.0.{i}"))
        .chain(["2001:db8::1".to_string()])
        .collect();
    let hosts = ["www.example.test", "example.test"];
    let o = owned(&hosts, &addrs);
    let want = records(&hosts, &addrs[..4]);
    d.inject(Fault::TooManyRequests { retry_after_secs: 1 });
    d.inject(Fault::ServerError(502));
    d.inject(Fault::ServerError(503));
    d.inject_when(Fault::AppliedButLost, FaultFilter::writes());
    d.inject(Fault::TruncatedJson);
    d.inject(Fault::Garbage);
    d.inject(Fault::Slow(Duration::from_millis(300)));
    converge(&p, &want, &o).await;
    // Then a change of mind under more faults: two endpoints leave, one returns.
    let want2 = records(&hosts, &[addrs[0].clone(), addrs[1].clone(), addrs[6].clone()]);
    d.inject_when(Fault::AppliedButLost, FaultFilter::writes());
    d.inject(Fault::ServerError(500));
    d.inject_when(Fault::TruncatedJson, FaultFilter::writes());
    converge(&p, &want2, &o).await;

    let held = d.records(ZONE);
    let mine: Vec<_> = held
        .iter()
        .filter(|r| r.content != "192.0.2.99" && r.name != "mail.example.test" && r.record_type != "TXT")
        .collect();
    assert_eq!(mine.len(), want2.len(), "duplicates or leftovers: {mine:#?}");
    let keys: BTreeSet<_> = mine.iter().map(|r| (r.name.clone(), r.content.clone())).collect();
    assert_eq!(keys.len(), mine.len(), "duplicate records");
    assert_clean(&d);
    assert!(d.max_requests_in_window(Duration::from_secs(300)) <= 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_failover_uses_batches_sized_to_the_plan_limit() {
    let d = double().await;
    let p = client(&d);
    let addrs: Vec<String> = (0..500).map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1)).collect();
    let hosts = ["www.example.test", "example.test"];
    let o = owned(&hosts, &addrs);
    converge(&p, &records(&hosts, &addrs), &o).await;
    let before = d.requests().len();
    // All 500 endpoints go down at once (the panic freeze is off here).
    let actual = p.list(&o).await.unwrap();
    let changes = diff(&BTreeSet::new(), &actual, &o);
    assert_eq!(changes.len(), 1000);
    let lists_before = d.requests().len();
    let outcomes = p.apply(&changes).await.unwrap();
    assert!(outcomes.iter().all(|(_, o)| *o == vantage::dns::Outcome::Applied));
    let writes: Vec<_> = d.requests()[lists_before..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    // ceil(500 endpoints x 2 hostnames / 200 per batch) = 5 write requests.
    assert_eq!(
        writes.len(),
        5,
        "{:?}",
        writes.iter().map(|w| w.path.clone()).collect::<Vec<_>>()
    );
    assert!(writes.iter().all(|w| w.path.ends_with("/dns_records/batch")));
    assert!(d.requests().len() - before < 20);
    assert_clean(&d);
}

/// IPv6 addresses on the loopback interface for the test's lifetime.
struct V6Addrs(Vec<String>);

impl V6Addrs {
    fn add(addrs: &[&str]) -> V6Addrs {
        for a in addrs {
            let _ = std::process::Command::new("ip")
                .args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"])
                .output();
            let ok = std::process::Command::new("ip")
                .args(["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"])
                .status();
            assert!(
                matches!(ok, Ok(s) if s.success()),
                "this test needs root and iproute2: {ok:?}"
            );
        }
        V6Addrs(addrs.iter().map(|a| a.to_string()).collect())
    }
}

impl Drop for V6Addrs {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"])
                .output();
        }
    }
}

/// Agents writing through the double; each node's config points at it.
fn agent_config_v6(base: &str, token_file: &str, net: u8, v6: bool) -> String {
    let extra = if v6 {
        format!(
            "[[pools.endpoints]]\naddress = \"fd00:{net}::200\"\n[[pools.endpoints]]\naddress = \"fd00:{net}::201\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "[probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
         [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
         [dns]\nprovider = \"cloudflare\"\nreconcile_interval = \"1s\"\n\
         [dns.cloudflare]\napi_base = \"{base}\"\nzone = \"{ZONE}\"\ntoken_file = \"{token_file}\"\nproxied = true\nttl = 120\n\n\
         [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\", \"example.test\"]\ncheck = {{ kind = \"tcp\", port = 7600 }}\n\
         [[pools.endpoints]]\naddress = \"127.0.{net}.200\"\n[[pools.endpoints]]\naddress = \"127.0.{net}.201\"\n{extra}"
    )
}

fn managed(d: &Double) -> BTreeMap<(String, String), (bool, u32)> {
    d.records(ZONE)
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some("managed by vantage"))
        .map(|r| ((r.name.clone(), r.content.clone()), (r.proxied, r.ttl)))
        .collect()
}

/// A double, three agents writing through it (IPv6 endpoints too when
/// `v6`), and the open endpoint ports; the first port is `.200`'s.
struct Setup {
    rt: tokio::runtime::Runtime,
    d: Double,
    c: Cluster,
    _dir: tempfile::TempDir,
}

/// Writes a token file the way an operator would: mode 0600, replaced whole.
fn set_token(path: &std::path::Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn setup(net: u8, v6: bool) -> Setup {
    setup_with(net, v6, "1s")
}

fn setup_with(net: u8, v6: bool, reconcile_interval: &'static str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(double());
    let dir = tempfile::tempdir().unwrap();
    // Each node has its own token file, as each host would.
    for id in 1..=3 {
        set_token(&dir.path().join(format!("cf-token-{id}")), TOKEN);
    }
    let (base, tf) = (d.base_url(), dir.path().display().to_string());
    let mut c = Cluster::with_extra(net, 3, "", move |id| {
        agent_config_v6(&base, &format!("{tf}/cf-token-{id}"), net, v6).replace(
            "reconcile_interval = \"1s\"",
            &format!("reconcile_interval = \"{reconcile_interval}\""),
        )
    });
    if v6 {
        // Trace level: the token must not appear even in the most verbose logs.
        c.set_log_level("trace,h2=info,hyper=info,sled=info");
    }
    c.start_all();
    c.bootstrap();
    Setup { rt, d, c, _dir: dir }
}

#[test]
fn three_agents_write_through_the_leader_only_and_leave_foreign_records_alone() {
    let _v6 = V6Addrs::add(&["fd00:50::200", "fd00:50::201"]);
    let mut a = Port::open("127.0.50.200:7600".parse().unwrap());
    let _b = Port::open("127.0.50.201:7600".parse().unwrap());
    let mut a6 = Port::open("[fd00:50::200]:7600".parse().unwrap());
    let _b6 = Port::open("[fd00:50::201]:7600".parse().unwrap());
    // Every field is bound: the runtime serves the double, the directory holds the token.
    let Setup { rt: _rt, d, c, _dir } = setup(50, true);
    let leader = c.wait_leader(&[1, 2, 3], LONG);

    // 4 endpoints (2 IPv4, 2 IPv6) x 2 hostnames.
    let all = wait_for("eight managed records at the double", LONG, || {
        (managed(&d).len() == 8).then_some(())
    });
    assert!(all.is_some(), "{:#?}\n{}", d.records(ZONE), c.logs());
    assert!(
        managed(&d).values().all(|v| *v == (true, 120)),
        "proxied/ttl not as configured: {:?}",
        managed(&d)
    );
    let types: BTreeSet<String> = d
        .records(ZONE)
        .into_iter()
        .filter(|r| r.comment.is_some())
        .map(|r| r.record_type)
        .collect();
    assert_eq!(types, BTreeSet::from(["A".to_string(), "AAAA".to_string()]));

    // One IPv4 and one IPv6 endpoint die: their A and AAAA records go, on both hostnames.
    a.close();
    a6.close();
    let survivors = BTreeSet::from(["127.0.50.201".to_string(), "fd00:50::201".to_string()]);
    let gone = wait_for("the dead endpoints' records deleted", LONG, || {
        let m = managed(&d);
        (m.len() == 4 && m.keys().all(|(_, addr)| survivors.contains(addr))).then_some(())
    });
    assert!(gone.is_some(), "{:?}\n{}", managed(&d), c.logs());

    // They come back: their records are re-created, once each, as configured.
    let _a = Port::open("127.0.50.200:7600".parse().unwrap());
    let _a6 = Port::open("[fd00:50::200]:7600".parse().unwrap());
    let back = wait_for("the endpoints' records re-created", LONG, || {
        (managed(&d).len() == 8).then_some(())
    });
    assert!(back.is_some(), "{:?}\n{}", managed(&d), c.logs());
    assert!(managed(&d).values().all(|v| *v == (true, 120)));

    // Every write came from one node, the leader, in its term.
    let term = c.status(leader)["term"].as_u64().unwrap().to_string();
    let writes: Vec<_> = d.requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(!writes.is_empty());
    for w in &writes {
        assert_eq!(w.vantage_node.as_deref(), Some(leader.to_string().as_str()), "{w:?}");
        assert_eq!(w.vantage_term.as_deref(), Some(term.as_str()), "{w:?}");
    }
    let readers: BTreeSet<_> = d.requests().into_iter().filter_map(|r| r.vantage_node).collect();
    assert_eq!(
        readers,
        BTreeSet::from([leader.to_string()]),
        "only the leader talks to the provider"
    );
    assert_clean(&d);

    // The token is never in logs, the data directories or API answers.
    let mut places: Vec<String> = (1..=3).map(|id| c.log_text(id)).collect();
    places.push(String::from_utf8_lossy(&c.cli(&["history", "--addr", c.addr(1), "--json"]).stdout).into_owned());
    places.push(String::from_utf8_lossy(&c.cli(&["endpoints", "--addr", c.addr(2), "--json"]).stdout).into_owned());
    places.push(String::from_utf8_lossy(&c.cli(&["plan", "--addr", c.addr(3), "--json"]).stdout).into_owned());
    for (id, log) in places.iter().take(3).enumerate() {
        assert!(log.contains("DEBUG"), "agent {} was not logging verbosely", id + 1);
    }
    for (i, text) in places.iter().enumerate() {
        assert!(!text.contains(TOKEN), "token found in place {i}");
    }
    for id in 1..=3 {
        for entry in walk(&c.data_dir(id)) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "token found in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Cuts the links between one agent's address and the others' with iptables;
/// the rules are removed on drop.
struct Partition(Vec<Vec<String>>);

impl Partition {
    fn isolate(net: u8, node: u64, others: &[u64]) -> Partition {
        let mut rules = Vec::new();
        for o in others {
            for (src, dst) in [(node, *o), (*o, node)] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-s",
                    &format!("127.0.{net}.{src}"),
                    "-d",
                    &format!("127.0.{net}.{dst}"),
                    "-j",
                    "DROP",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let mut add = vec!["-I".to_string()];
                add.extend(rule.iter().cloned());
                let ok = std::process::Command::new("iptables").args(&add).status();
                assert!(
                    matches!(ok, Ok(s) if s.success()),
                    "this test needs root and iptables: {ok:?}"
                );
                rules.push(rule);
            }
        }
        Partition(rules)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in &self.0 {
            let mut del = vec!["-D".to_string()];
            del.extend(rule.iter().cloned());
            let _ = std::process::Command::new("iptables").args(&del).status();
        }
    }
}

fn writes_by(d: &Double, node: u64, since: usize) -> usize {
    d.requests()[since..]
        .iter()
        .filter(|r| r.method != "GET" && r.vantage_node.as_deref() == Some(node.to_string().as_str()))
        .count()
}

#[test]
fn isolated_leader_makes_no_writes_and_the_new_leaders_writes_win() {
    let mut a = Port::open("127.0.53.200:7600".parse().unwrap());
    let _b = Port::open("127.0.53.201:7600".parse().unwrap());
    let Setup { rt, d, c, _dir } = setup(53, false);
    let old = c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");
    let old_term = c.status(old)["term"].as_u64().unwrap();
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();

    // The leader is cut off from the other agents, but still reaches the API.
    let cut = d.requests().len();
    let partition = Partition::isolate(53, old, &rest);
    // Drift the old leader would like to repair: a managed record deleted by hand.
    let victim = d
        .records(ZONE)
        .into_iter()
        .find(|r| r.comment.as_deref() == Some("managed by vantage") && r.content == "127.0.53.201")
        .unwrap();
    let manual = client(&d);
    let gone = vantage::dns::Existing {
        record: Record {
            name: victim.name.clone(),
            rtype: RecordType::A,
            content: victim.content.clone(),
        },
        id: victim.id.clone(),
    };
    rt.block_on(manual.apply(&[vantage::dns::Change::Delete(gone)]))
        .unwrap();
    // And the endpoint dies, which the majority decides.
    a.close();
    let new = c.wait_leader(&rest, LONG);
    assert_ne!(new, old);
    let done = wait_for(
        "the new leader's writes: drift repaired and the dead endpoint removed",
        LONG,
        || {
            let m = managed(&d);
            (m.len() == 2 && m.keys().all(|(_, addr)| addr == "127.0.53.201")).then_some(())
        },
    );
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    // Give the isolated node several reconcile rounds to misbehave.
    let t0 = c.endpoints(new).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("3 s of log time", LONG, || {
        (c.endpoints(new)?["log_time_ms"].as_u64()? >= t0 + 3000).then_some(())
    })
    .expect("log time");
    assert_eq!(
        writes_by(&d, old, cut),
        0,
        "the isolated old leader wrote to the provider"
    );
    let new_term = c.status(new)["term"].as_u64().unwrap();
    assert!(new_term > old_term);
    let new_writes: Vec<_> = d.requests()[cut..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert!(!new_writes.is_empty());
    for w in &new_writes {
        if w.vantage_node.is_none() {
            continue; // the manual delete
        }
        assert_eq!(w.vantage_node.as_deref(), Some(new.to_string().as_str()), "{w:?}");
        assert_eq!(w.vantage_term.as_deref(), Some(new_term.to_string().as_str()), "{w:?}");
    }
    assert!(
        c.log_text(old).contains("DNS batch abandoned"),
        "the old leader never tried, so the test proves little:\n{}",
        c.log_text(old)
    );
    drop(partition);
    assert_clean(&d);
}

#[test]
fn leader_killed_between_decision_and_write_is_finished_by_the_next() {
    let mut a = Port::open("127.0.54.200:7600".parse().unwrap());
    let _b = Port::open("127.0.54.201:7600".parse().unwrap());
    let Setup {
        rt: _rt,
        d,
        mut c,
        _dir,
    } = setup(54, false);
    let old = c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");

    // The leader's next write is applied but its answer is lost; it dies right then.
    d.inject_when(Fault::AppliedButLost, FaultFilter::writes());
    let cut = d.requests().len();
    a.close();
    wait_for("the old leader's write reaching the API", LONG, || {
        (writes_by(&d, old, cut) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    c.kill(old);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = c.wait_leader(&rest, LONG);
    // The new leader lists what is there and finishes the change; nothing is duplicated or lost.
    let done = wait_for("the change completed", LONG, || {
        let m = managed(&d);
        (m.len() == 2 && m.keys().all(|(_, addr)| addr == "127.0.54.201")).then_some(())
    });
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    let reads_by_new = d.requests()[cut..]
        .iter()
        .filter(|r| r.method == "GET" && r.vantage_node.as_deref() == Some(new.to_string().as_str()))
        .count();
    assert!(reads_by_new > 0, "the new leader never looked");
    let keys: Vec<_> = d.records(ZONE).into_iter().map(|r| (r.name, r.content)).collect();
    let unique: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "duplicate records: {keys:?}");
    let history = c.cli_json(&["history", "--addr", c.addr(new), "--limit", "1000"]);
    let audits: Vec<_> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dns-write")
        .map(|e| e.to_string())
        .collect();
    // The delete is accounted for: by the old leader's own audit if it lived
    // long enough, or by the new leader settling the old one's intent.
    let accounted = audits
        .iter()
        .filter(|e| e.contains("delete") && e.contains("127.0.54.200"))
        .cloned()
        .collect::<Vec<_>>();
    println!("audits of the delete: {accounted:#?}");
    assert!(!accounted.is_empty(), "the delete is in the history: {audits:#?}");
    let settled = accounted
        .iter()
        .any(|e| e.contains("already done") && e.contains(&format!("node {old}")));
    let own = accounted.iter().any(|e| e.contains(&format!("\"node {old}\"")));
    assert!(settled || own, "{accounted:#?}");
    assert_clean(&d);
}

#[test]
fn a_hundred_plans_in_a_second_cost_at_most_one_provider_request() {
    let _a = Port::open("127.0.58.200:7600".parse().unwrap());
    let _b = Port::open("127.0.58.201:7600".parse().unwrap());
    // No drift repair while the test runs: every listing is one a plan asked for.
    let Setup { rt, d, c, _dir } = setup_with(58, false, "10m");
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let synced = wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(()));
    assert!(synced.is_some(), "{}", c.logs());
    let before = d.requests().len();
    let conn = c.connector_as("operator");
    let addr = c.addr(leader).to_string();
    let started = std::time::Instant::now();
    let planned = rt.block_on(async move {
        let mut dns = vantage::proto::v1::dns_client::DnsClient::new(conn.channel(&addr).unwrap());
        let mut n = 0;
        for _ in 0..100 {
            let p = dns
                .plan(vantage::proto::v1::PlanRequest {})
                .await
                .expect("plan")
                .into_inner();
            assert!(p.changes.is_empty(), "{p:?}");
            n += 1;
        }
        n
    });
    assert_eq!(planned, 100);
    let spent: Vec<_> = d.requests()[before..].to_vec();
    println!(
        "100 plans in {:?} cost {} provider requests",
        started.elapsed(),
        spent.len()
    );
    // At most one listing: one request per owned hostname and record type
    // (two hostnames, A records only), however many plans are asked for.
    assert!(
        spent.len() <= 2,
        "{} provider requests for 100 plans: {spent:?}",
        spent.len()
    );
    let names: BTreeSet<_> = spent.iter().filter_map(|r| r.query_param("name")).collect();
    assert_eq!(names.len(), spent.len(), "a hostname was listed twice: {spent:?}");
    assert_clean(&d);
}

#[test]
fn a_provider_that_answers_404_is_backed_off_and_writes_resume_once_it_recovers() {
    let mut a = Port::open("127.0.59.200:7600".parse().unwrap());
    let _b = Port::open("127.0.59.201:7600".parse().unwrap());
    // Backoff capped at 8 s here (the reconcile interval), 30 s by default.
    let Setup { rt: _rt, d, c, _dir } = setup_with(59, false, "8s");
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    let synced = wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(()));
    assert!(synced.is_some(), "{}", c.logs());
    // The zone is gone for the provider: every request answers 404.
    d.set_always(Some(Fault::Raw {
        status: 404,
        body: r#"{"success":false,"errors":[{"code":7003,"message":"Could not route to /zones, perhaps your object identifier is invalid?"}],"messages":[],"result":null}"#.into(),
    }));
    let before = d.requests().len();
    let t0 = std::time::Instant::now();
    a.close();
    // 40 s of a refusing provider while a delete is pending.
    let alarm = wait_for("the alarm in cluster status", LONG, || {
        let s = c.status(leader);
        s["alarms"]
            .as_array()?
            .iter()
            .any(|a| a.as_str().unwrap_or("").contains("cannot list records"))
            .then_some(())
    });
    assert!(alarm.is_some(), "{:#}", c.status(leader));
    let lt0 = c.endpoints(leader).unwrap()["log_time_ms"].as_u64().unwrap();
    let window = wait_for("40 s of log time", Duration::from_secs(120), || {
        (c.endpoints(leader)?["log_time_ms"].as_u64()? >= lt0 + 40_000).then_some(())
    });
    assert!(window.is_some());
    // The leader's rounds, and the followers' checks of their own credentials
    // (each would take over if its own listing worked).
    let spent = requests_by(&d, leader, before);
    let others: Vec<usize> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| requests_by(&d, id, before))
        .collect();
    println!(
        "a provider answering 404 for {:?} got {spent} requests from the leader, {others:?} from the followers",
        t0.elapsed()
    );
    assert!(
        spent < 12,
        "{spent} requests from the leader to a provider that answered 404 for 40 s"
    );
    assert!(others.iter().all(|n| *n < 12), "{others:?}");
    // It recovers: the pending delete goes through within one backoff.
    d.set_always(None);
    let done = wait_for("the dead endpoint's records deleted", LONG, || {
        (managed(&d).len() == 2).then_some(())
    });
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    let cleared = wait_for("the alarm cleared", LONG, || {
        let s = c.status(leader);
        (!s["alarms"]
            .as_array()?
            .iter()
            .any(|a| a.as_str().unwrap_or("").contains("cannot list")))
        .then_some(())
    });
    assert!(cleared.is_some(), "{:#}", c.status(leader));
}

/// Requests the double saw from node `node` since request number `since`.
fn requests_by(d: &Double, node: u64, since: usize) -> usize {
    d.requests()[since..]
        .iter()
        .filter(|r| r.vantage_node.as_deref() == Some(node.to_string().as_str()))
        .count()
}

fn history_text(c: &Cluster, at: u64) -> Vec<String> {
    let h = c.cli_json(&["history", "--addr", c.addr(at), "--limit", "1000"]);
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "dns-write")
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_leader_whose_token_is_rejected_hands_dns_writes_to_a_voter_whose_token_works() {
    let mut a = Port::open("127.0.74.200:7600".parse().unwrap());
    let _b = Port::open("127.0.74.201:7600".parse().unwrap());
    let Setup { rt: _rt, d, c, _dir } = setup(74, false);
    let old = c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");
    // The leader's token is revoked; the others' still work.
    let cut = d.requests().len();
    set_token(&_dir.path().join(format!("cf-token-{old}")), "revoked-token-0000");
    wait_for("the leader re-reads its token file", LONG, || {
        c.log_text(old).contains("DNS credentials changed").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.log_text(old)));
    a.close();
    let done = wait_for(
        "the dead endpoint's records deleted by a node whose token works",
        LONG,
        || (managed(&d).len() == 2).then_some(()),
    );
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    let rest: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = c.wait_leader(&[1, 2, 3], LONG);
    assert!(rest.contains(&new), "leadership moved off node {old}: leader is {new}");
    assert!(writes_by(&d, new, cut) > 0);
    assert_eq!(writes_by(&d, old, cut), 0, "the refused leader wrote nothing");
    // What the rejected token cost: the requests the double refused.
    let spent = d.requests()[cut..]
        .iter()
        .filter(|r| r.status == 403 && r.vantage_node.as_deref() == Some(old.to_string().as_str()))
        .count();
    println!("node {old} (rejected token) sent {spent} refused requests; node {new} took over");
    let theirs: Vec<String> = d.requests()[cut..]
        .iter()
        .filter(|r| r.vantage_node.as_deref() == Some(old.to_string().as_str()))
        .map(|r| format!("{} {} term {:?}", r.method, r.path, r.vantage_term))
        .collect();
    assert!(
        spent <= 3,
        "{spent} requests from the refused leader: {theirs:#?}\n{}",
        c.logs()
    );
    let events = history_text(&c, new);
    assert!(
        events
            .iter()
            .any(|e| e.contains("provider refused") && e.contains(&format!("node {old}"))),
        "the refusal is in the history: {events:#?}"
    );
    assert!(
        c.log_text(new).contains("calling an election to take over DNS writes"),
        "{}",
        c.log_text(new)
    );
    assert_clean(&d);
}

#[test]
fn a_rejected_token_costs_under_30_requests_in_5_minutes_and_writes_resume_soon_after_the_fix() {
    let mut a = Port::open("127.0.75.200:7600".parse().unwrap());
    let _b = Port::open("127.0.75.201:7600".parse().unwrap());
    // The default reconcile interval, so the backoff is the one operators get.
    let Setup { rt: _rt, d, c, _dir } = setup_with(75, false, "30s");
    c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");
    // Every node's token is revoked: no node can take over.
    for id in 1..=3 {
        set_token(&_dir.path().join(format!("cf-token-{id}")), "revoked-token-0000");
    }
    wait_for("every node re-reads its token file", LONG, || {
        (1..=3)
            .all(|id| c.log_text(id).contains("DNS credentials changed"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    a.close();
    // The nodes re-read their files a few seconds apart: one whose old token
    // still worked may have taken over meanwhile. Once the alarm names the
    // node that leads, every token is the revoked one.
    let (leader, alarm) = wait_for("the refusal alarm naming the leader", LONG, || {
        let leader = c.wait_leader(&[1, 2, 3], LONG);
        let s = c.try_status(leader)?;
        s["alarms"]
            .as_array()?
            .iter()
            .find(|a| a.as_str().unwrap_or("").contains(&format!("refuses node {leader}'s")))
            .map(|a| (leader, a.to_string()))
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    let cut = d.requests().len();
    let t0 = std::time::Instant::now();
    println!("alarm: {alarm}");
    // Five minutes of a pending delete and a provider that says 403.
    let window = Duration::from_secs(300);
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(
            c.wait_leader(&[1, 2, 3], LONG),
            leader,
            "no node can write: leadership stays"
        );
    }
    let spent = requests_by(&d, leader, cut);
    let others: Vec<usize> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| requests_by(&d, id, cut))
        .collect();
    println!(
        "in {:?}: the leader sent {spent} requests, the followers {others:?} (their take-over checks)",
        t0.elapsed()
    );
    assert!(
        spent < 30,
        "{spent} requests from a leader whose token is rejected, in 5 minutes"
    );
    assert!(spent > 0, "the leader never tried");
    assert_eq!(managed(&d).len(), 4, "nothing was written with a rejected token");
    // The token is fixed: the writes resume within 30 s.
    for id in 1..=3 {
        set_token(&_dir.path().join(format!("cf-token-{id}")), TOKEN);
    }
    let fixed = std::time::Instant::now();
    let done = wait_for("the pending delete written", LONG, || {
        (managed(&d).len() == 2).then_some(())
    });
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    println!("writes resumed {:?} after the token was fixed", fixed.elapsed());
    assert!(fixed.elapsed() < Duration::from_secs(30));
    let cleared = wait_for("the alarm cleared", LONG, || {
        let s = c.try_status(leader)?;
        (!s["alarms"]
            .as_array()?
            .iter()
            .any(|a| a.as_str().unwrap_or("").contains("refuses")))
        .then_some(())
    });
    assert!(cleared.is_some(), "{:#}", c.status(leader));
    assert_clean(&d);
}

#[test]
fn drain_undrain_pause_and_resume_write_exactly_what_they_say() {
    let mut a = Port::open("127.0.77.200:7600".parse().unwrap());
    let _b = Port::open("127.0.77.201:7600".parse().unwrap());
    let Setup { rt: _rt, d, c, _dir } = setup(77, false);
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let (ep_a, ep_b) = ("web/127.0.77.200", "web/127.0.77.201");

    // Drain, through a follower: the records go within a round.
    let cut = d.requests().len();
    let r = c.cli_json(&[
        "endpoint",
        "drain",
        ep_a,
        "--addr",
        c.addr(f),
        "--reason",
        "kernel upgrade",
    ]);
    assert_eq!(r["applied"], true, "{r:#}");
    let gone = wait_for("the drained endpoint's records deleted", LONG, || {
        let m = managed(&d);
        (m.len() == 2 && m.keys().all(|(_, addr)| addr == "127.0.77.201")).then_some(())
    });
    assert!(gone.is_some(), "{:?}\n{}", managed(&d), c.logs());
    assert!(writes_by(&d, leader, cut) > 0, "the leader wrote the deletes");
    let e = c.endpoint(leader, ep_a).unwrap();
    assert!(!e["local"].is_null(), "a drained endpoint is still probed: {e:#}");
    assert_eq!(e["in_dns"], false, "{e:#}");
    // Draining the last record of the hostnames is refused without --force.
    let out = c.cli(&["endpoint", "drain", ep_b, "--addr", c.addr(f), "--reason", "oops"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("no record in DNS"), "{said}");
    assert_eq!(managed(&d).len(), 2);

    // Undrain: back in DNS (hold_down is 0 s here).
    let r = c.cli_json(&["endpoint", "undrain", ep_a, "--addr", c.addr(leader)]);
    assert_eq!(r["applied"], true, "{r:#}");
    wait_for("the records back", LONG, || (managed(&d).len() == 4).then_some(()))
        .unwrap_or_else(|| panic!("{:?}\n{}", managed(&d), c.logs()));

    // DNS paused during a failure: decisions go on, nothing is written.
    let r = c.cli_json(&["dns", "pause", "--addr", c.addr(f), "--reason", "incident 42"]);
    assert_eq!(r["applied"], true, "{r:#}");
    let cut = d.requests().len();
    a.close();
    wait_for("the endpoint decided down", LONG, || {
        (c.endpoint(leader, ep_a)?["decision"] == "down").then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    let plan = wait_for("plan shows the pending deletes", LONG, || {
        let p = c.cli_json(&["plan", "--addr", c.addr(leader)]);
        let changes: Vec<String> = p["changes"].as_array()?.iter().map(|c| c.to_string()).collect();
        (changes.len() == 2
            && changes
                .iter()
                .all(|c| c.contains("delete") && c.contains("127.0.77.200")))
        .then_some(changes)
    })
    .unwrap_or_else(|| panic!("{}", c.logs()));
    // Several reconcile rounds (1 s each) of log time pass without a write.
    let t0 = c.endpoints(leader).unwrap()["log_time_ms"].as_u64().unwrap();
    wait_for("3 s of log time", LONG, || {
        (c.endpoints(leader)?["log_time_ms"].as_u64()? >= t0 + 3000).then_some(())
    })
    .expect("log time");
    let writes: Vec<_> = d.requests()[cut..]
        .iter()
        .filter(|r| r.method != "GET")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "writes while paused: {writes:?}");
    assert_eq!(managed(&d).len(), 4);
    let alarms = c.status(leader)["alarms"].to_string();
    assert!(alarms.contains("paused") && alarms.contains("incident 42"), "{alarms}");

    // Resume: exactly the plan is written.
    let r = c.cli_json(&["dns", "resume", "--addr", c.addr(f)]);
    assert_eq!(r["applied"], true, "{r:#}");
    let done = wait_for("the pending deletes written", LONG, || {
        let m = managed(&d);
        (m.len() == 2 && m.keys().all(|(_, addr)| addr == "127.0.77.201")).then_some(())
    });
    assert!(done.is_some(), "{:?}\n{}", managed(&d), c.logs());
    println!("plan while paused: {plan:?}");
    let h = c.cli_json(&["history", "--addr", c.addr(leader), "--limit", "1000"]);
    let overrides: Vec<String> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "override")
        .map(|e| e.to_string())
        .collect();
    assert_eq!(overrides.len(), 4, "drain, undrain, pause, resume: {overrides:#?}");
    assert!(overrides.iter().all(|e| e.contains("operator")), "{overrides:#?}");
    assert_clean(&d);
}

#[test]
fn an_endpoint_removed_from_the_catalog_has_its_records_deleted_and_nothing_else() {
    let _a = Port::open("127.0.80.200:7600".parse().unwrap());
    let _b = Port::open("127.0.80.201:7600".parse().unwrap());
    let Setup { rt: _rt, d, c, _dir } = setup(80, false);
    let leader = c.wait_leader(&[1, 2, 3], LONG);
    wait_for("four managed records", LONG, || (managed(&d).len() == 4).then_some(())).expect("records");
    let foreign_before: Vec<_> = d.records(ZONE).into_iter().filter(|r| r.comment.is_none()).collect();
    let base = std::fs::read_to_string(&c.nodes[&1].config).unwrap();
    let smaller = base.replace("[[pools.endpoints]]\naddress = \"127.0.80.201\"\n", "");
    assert_ne!(base, smaller);
    let file = c.dir.path().join("smaller.toml");
    std::fs::write(&file, smaller).unwrap();
    let r = c.cli_json(&[
        "pools",
        "apply",
        file.to_str().unwrap(),
        "--addr",
        c.addr(leader),
        "--yes",
    ]);
    assert_eq!(r["applied"], true, "{r:#}");
    let gone = wait_for("the removed endpoint's records deleted", LONG, || {
        let m = managed(&d);
        (m.len() == 2 && m.keys().all(|(_, addr)| addr == "127.0.80.200")).then_some(())
    });
    assert!(gone.is_some(), "{:?}\n{}", managed(&d), c.logs());
    let foreign_after: Vec<_> = d.records(ZONE).into_iter().filter(|r| r.comment.is_none()).collect();
    assert_eq!(foreign_before.len(), foreign_after.len(), "foreign records untouched");
    assert_clean(&d);
}
