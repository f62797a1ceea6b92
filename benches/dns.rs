//! DNS latency: three release agents write through the Cloudflare provider to
//! the strict API double on loopback. Over 30 failovers, measures the time
//! from the quorum decision being committed to the provider acknowledging
//! the delete, the whole time from the endpoint's death, and the requests
//! each failover costs.
//!
//! Run: `cargo bench --bench dns`. Prints a table; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cluster, Port};

const ZONE: &str = "example.test";
const TOKEN: &str = "bench-token-5b0d";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wall0 = now_ms();
    let d = rt.block_on(cfdouble::start(
        cfdouble::DoubleConfig::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/cloudflare/dns-openapi.json"
        ))
        .token(TOKEN)
        .zone(ZONE, "9a7806061c88ada191ed06f989cc3dac"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, TOKEN).unwrap();
    std::fs::set_permissions(&tf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (base, tf) = (d.base_url(), tf.display().to_string());
    let mut c = Cluster::with_extra(96, 3, "", move |_| {
        format!(
            "[probe]\ninterval = \"250ms\"\ntimeout = \"200ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
             [dns]\nprovider = \"cloudflare\"\nreconcile_interval = \"30s\"\n\
             [dns.cloudflare]\napi_base = \"{base}\"\nzone = \"{ZONE}\"\ntoken_file = \"{tf}\"\n\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\"]\ncheck = {{ kind = \"tcp\", port = 7700 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.96.200\"\n[[pools.endpoints]]\naddress = \"127.0.96.201\"\n"
        )
    });
    let _b = Port::open("127.0.96.201:7700".parse().unwrap());
    let mut a = Some(Port::open("127.0.96.200:7700".parse().unwrap()));
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    let managed = |d: &cfdouble::Double| {
        d.records(ZONE)
            .iter()
            .filter(|r| r.content.starts_with("127.0.96."))
            .count()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait("both records", &|| managed(&d) == 2);
    let (mut commit_to_ack, mut death_to_ack, mut requests, mut writes) = (vec![], vec![], vec![], vec![]);
    // Deaths land at random points of the probe interval, not in step with it.
    let mut seed = (now_ms() as u64) | 1;
    for run in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(500 + seed % 250));
        let before = d.requests().len();
        let died = now_ms();
        a.take().unwrap().close();
        // The double logs a request after answering it: wait for both.
        wait("the delete", &|| {
            managed(&d) == 1 && d.requests()[before..].iter().any(|r| r.method != "GET")
        });
        let log = d.requests()[before..].to_vec();
        let ack = log
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| wall0 + r.at.as_secs_f64() * 1000.0)
            .next_back()
            .unwrap();
        // The decision's log time is the leader's stamp; it commits within a
        // millisecond on loopback (see cargo bench --bench cluster).
        let hist = c.cli_json(&[
            "history",
            "--addr",
            c.addr(1),
            "--endpoint",
            "web/127.0.96.200",
            "--limit",
            "1000",
        ]);
        let decided = hist["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "decision" && e["to"] == "down")
            .map(|e| e["log_time_ms"].as_f64().unwrap())
            .next_back()
            .unwrap();
        commit_to_ack.push(ack - decided);
        death_to_ack.push(ack - died);
        requests.push(log.len() as f64);
        writes.push(log.iter().filter(|r| r.method != "GET").count() as f64);
        a = Some(Port::open("127.0.96.200:7700".parse().unwrap()));
        wait("the re-add", &|| managed(&d) == 2);
        let _ = run;
    }
    println!("Vantage DNS latency: 3 release agents, Cloudflare provider, strict API double on loopback, 30 failovers");
    println!("interval 250ms, fall 3, batch writes; times in ms");
    println!("{:<48} {:>8} {:>8} {:>8}", "measure", "p50", "p95", "p99");
    for (name, v) in [
        ("decision committed -> provider ack (c - b)", &mut commit_to_ack),
        ("endpoint death -> provider ack (whole)", &mut death_to_ack),
        ("requests per failover (lists + writes)", &mut requests),
        ("write requests per failover", &mut writes),
    ] {
        let (p50, p95, p99) = (pct(v, 0.5), pct(v, 0.95), pct(v, 0.99));
        println!("{name:<48} {p50:>8.1} {p95:>8.1} {p99:>8.1}");
    }
    assert!(d.violations().is_empty(), "{:?}", d.violations());
}
