//! Probe footprint: CPU and memory of one release-built agent probing 100,
//! 1,000 and 10,000 TCP endpoints at a 1 s interval (local listeners), and
//! how evenly the probes spread over the interval. The 1,000 row runs twice:
//! once more with the `[http]` listener on and `/metrics` scraped every 5 s
//! (curl over mutual TLS, as Prometheus would).
//!
//! Run: `cargo bench --bench probes` (`-- 1000` for the 1,000 rows only).
//! Prints a table; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{clock_ticks_per_second, cpu_ticks, rss_kib, Cluster};
use vantage::proto::v1::endpoints_client::EndpointsClient;
use vantage::proto::v1::ListEndpointsRequest;

fn up_count(rt: &tokio::runtime::Runtime, c: &Cluster, addr: &str) -> usize {
    let conn = c.connector_as("operator");
    rt.block_on(async {
        let Ok(ch) = conn.channel(addr) else {
            return 0;
        };
        let mut c = EndpointsClient::new(ch).max_decoding_message_size(256 << 20);
        let Ok(r) = c
            .list(ListEndpointsRequest {
                linearizable: false,
                prefix: String::new(),
            })
            .await
        else {
            return 0;
        };
        r.into_inner()
            .endpoints
            .iter()
            .filter(|e| e.observations.first().map(|o| o.status == "up").unwrap_or(false))
            .count()
    })
}

fn main() {
    // The listener must not be the bottleneck: a deep backlog and an async
    // accept loop, so 10,000 connects a second are taken without SYN drops.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let accepts: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("0.0.0.0:0".parse().unwrap()).expect("bind");
        socket.listen(8192).expect("listen")
    });
    let port = listener.local_addr().unwrap().port();
    let a = accepts.clone();
    rt.spawn(async move {
        loop {
            // A probe that resets before the accept shows up as an error here.
            if let Ok((s, _)) = listener.accept().await {
                a.lock().unwrap().push(Instant::now());
                drop(s);
            }
        }
    });
    let hz = clock_ticks_per_second();
    println!("Vantage probe footprint: one release agent, TCP checks at a 1 s interval against local listeners");
    println!(
        "{:>9} {:>12} {:>8} {:>8} {:>10} {:>10} {:>24}",
        "endpoints", "CPU % core", "user %", "sys %", "RSS MiB", "probes/s", "per-100ms slot min-max"
    );
    let only: Option<u32> = std::env::args().skip(1).find_map(|a| a.parse().ok());
    let cases = [(100u32, false), (1_000, false), (1_000, true), (10_000, false)];
    for (i, (n, scraped)) in cases.into_iter().enumerate() {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let net = 90 + i as u8;
        let http = format!("127.0.{net}.1:9464");
        let mut pools = if scraped {
            format!("[http]\nlisten = \"{http}\"\n\n")
        } else {
            String::new()
        };
        pools += "[probe]\ninterval = \"1s\"\ntimeout = \"800ms\"\nfall = 3\nrise = 2\nheartbeat = \"5s\"\n\n[[pools]]\nname = \"bench\"\n";
        pools += &format!("check = {{ kind = \"tcp\", port = {port} }}\n");
        for e in 0..n {
            pools += &format!(
                "[[pools.endpoints]]\naddress = \"127.{}.{}.{}\"\n",
                100 + e / 62500,
                (e / 250) % 250,
                e % 250 + 1
            );
        }
        let mut c = Cluster::with_extra(net, 1, "", move |_| pools.clone());
        c.start(1);
        c.bootstrap();
        c.wait_leader(&[1], Duration::from_secs(30));
        let addr = c.addr(1).to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        while up_count(&rt, &c, &addr) < n as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(3));
        let pid = c.pid(1).unwrap();
        // The scraper: every 5 s, from the start of the window.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scrapes = Arc::new(Mutex::new(Vec::<usize>::new()));
        let scraper = scraped.then(|| {
            let (ca, cert, key) = c.cert_files("reader").unwrap();
            let (stop, scrapes, url) = (stop.clone(), scrapes.clone(), format!("https://{http}/metrics"));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let out = std::process::Command::new("curl")
                        .args(["-sS", "--max-time", "5", "--cacert"])
                        .arg(&ca)
                        .arg("--cert")
                        .arg(&cert)
                        .arg("--key")
                        .arg(&key)
                        .arg(&url)
                        .output()
                        .expect("curl");
                    scrapes.lock().unwrap().push(out.stdout.len());
                    for _ in 0..50 {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        });
        accepts.lock().unwrap().clear();
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        std::thread::sleep(Duration::from_secs(if scraped { 20 } else { 10 }));
        let (elapsed, c1) = (t0.elapsed().as_secs_f64(), cpu_ticks(pid));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = scraper {
            let _ = t.join();
        }
        let pct = |ticks: u64| ticks as f64 / hz / elapsed * 100.0;
        let (user, sys) = (pct(c1.0 - c0.0), pct(c1.1 - c0.1));
        let rss = rss_kib(pid) as f64 / 1024.0;
        let seen = accepts.lock().unwrap().clone();
        let mut slots = [0usize; 10];
        for t in seen.iter().filter(|t| **t >= t0) {
            slots[((t.duration_since(t0).as_millis() % 1000) / 100) as usize] += 1;
        }
        let sizes = scrapes.lock().unwrap().clone();
        let label = if scraped { format!("{n}+http") } else { n.to_string() };
        println!(
            "{:>9} {:>12.1} {:>8.1} {:>8.1} {:>10.1} {:>10.0} {:>24}{}",
            label,
            user + sys,
            user,
            sys,
            rss,
            seen.len() as f64 / elapsed,
            format!("{}-{}", slots.iter().min().unwrap(), slots.iter().max().unwrap()),
            if sizes.is_empty() {
                String::new()
            } else {
                format!(
                    "   ({} scrapes of {} KiB)",
                    sizes.len(),
                    sizes.iter().max().unwrap() / 1024
                )
            }
        );
    }
}
