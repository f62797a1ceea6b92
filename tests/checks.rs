//! Checks that match how endpoints really fail, on three agents: an HTTP
//! endpoint that turns slower than `max_rtt`, an HTTPS endpoint whose
//! certificate (issued by the test, valid one day) expires inside
//! `cert_expiry_fail`, a gRPC server (plaintext, and over TLS verified
//! against the test's CA) whose health turns NOT_SERVING, and a DNS
//! server that starts answering SERVFAIL. Each is decided down by the
//! cluster, and the slow one back up once it is fast again.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Cluster};
use serde_json::Value;

const NET: u8 = 89;
const LONG: Duration = Duration::from_secs(40);

fn ip(last: u8) -> String {
    format!("127.0.{NET}.{last}")
}

/// An HTTP server that answers after `delay_ms`.
fn slow_http(addr: &str, delay_ms: Arc<AtomicU64>) {
    let l = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let d = delay_ms.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                std::thread::sleep(Duration::from_millis(d.load(Ordering::SeqCst)));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            });
        }
    });
}

/// An HTTPS server with a self-signed certificate valid for `days` more days.
fn https_with_cert(addr: &str, days: i64) {
    use tokio_rustls::rustls;
    let mut params = rcgen::CertificateParams::new(vec!["vantage.test".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind(addr).unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((tcp, _)) = l.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
    });
}

struct Health(Arc<AtomicBool>);

#[tonic::async_trait]
impl vantage::proto::health::health_server::Health for Health {
    async fn check(
        &self,
        _: tonic::Request<vantage::proto::health::HealthCheckRequest>,
    ) -> Result<tonic::Response<vantage::proto::health::HealthCheckResponse>, tonic::Status> {
        use vantage::proto::health::health_check_response::ServingStatus;
        let status = if self.0.load(Ordering::SeqCst) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(tonic::Response::new(vantage::proto::health::HealthCheckResponse {
            status: status as i32,
        }))
    }
}

/// A gRPC server whose health is `serving`.
fn grpc_health(addr: &str, serving: Arc<AtomicBool>) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .add_service(vantage::proto::health::health_server::HealthServer::new(Health(
                    serving,
                )))
                .serve(addr)
                .await
                .unwrap();
        });
    });
}

/// The same over TLS with a certificate for `vantage.test` (ALPN h2);
/// returns the certificate's PEM, to trust as a CA.
fn grpcs_health(addr: &str, serving: Arc<AtomicBool>) -> String {
    let params = rcgen::CertificateParams::new(vec!["vantage.test".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let identity = tonic::transport::Identity::from_pem(cert_pem.clone(), key_pem);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            tonic::transport::Server::builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap()
                .add_service(vantage::proto::health::health_server::HealthServer::new(Health(
                    serving,
                )))
                .serve(addr)
                .await
                .unwrap();
        });
    });
    cert_pem
}

/// A DNS server answering A queries with 192.0.2.1, or SERVFAIL once `fail` is set.
fn dns_server(addr: &str, fail: Arc<AtomicBool>) {
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let sock = UdpSocket::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            for query in &q.queries {
                r.add_query(query.clone());
            }
            if fail.load(Ordering::SeqCst) {
                r.metadata.response_code = ResponseCode::ServFail;
            } else if let Some(query) = q.queries.first() {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, 1)),
                ));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
}

fn decision(c: &Cluster, id: &str) -> Option<(String, String)> {
    let e = c.endpoint(1, id)?;
    Some((
        e["decision"].as_str()?.to_string(),
        e["reason"].as_str().unwrap_or("").to_string(),
    ))
}

fn local(c: &Cluster, node: u64, id: &str) -> Option<Value> {
    c.endpoint(node, id).map(|e| e["local"].clone())
}

#[test]
fn slow_expiring_not_serving_and_servfail_endpoints_are_decided_down() {
    let delay = Arc::new(AtomicU64::new(0));
    slow_http(&format!("{}:8080", ip(201)), delay.clone());
    https_with_cert(&format!("{}:8443", ip(211)), 30);
    https_with_cert(&format!("{}:8443", ip(212)), 1);
    let serving = Arc::new(AtomicBool::new(true));
    grpc_health(&format!("{}:50051", ip(221)), serving.clone());
    let ca = tempfile::tempdir().unwrap();
    let ca_file = ca.path().join("grpcs-ca.pem");
    std::fs::write(&ca_file, grpcs_health(&format!("{}:50051", ip(222)), serving.clone())).unwrap();
    let ca_file = ca_file.display().to_string();
    let servfail = Arc::new(AtomicBool::new(false));
    dns_server(&format!("{}:5353", ip(231)), servfail.clone());
    let mut c = Cluster::with_extra(NET, 3, "", move |_| {
        format!(
            "[probe]\ninterval = \"600ms\"\ntimeout = \"500ms\"\nfall = 2\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n\
             [[pools]]\nname = \"slow\"\nmax_rtt = \"150ms\"\ncheck = {{ kind = \"http\", port = 8080 }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n\n\
             [[pools]]\nname = \"cert\"\n\
             check = {{ kind = \"https\", port = 8443, tls_verify = false, cert_expiry_fail = \"2days\", cert_expiry_warn = \"60days\" }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n[[pools.endpoints]]\naddress = \"{}\"\n\n\
             [[pools]]\nname = \"grpc\"\ncheck = {{ kind = \"grpc\", port = 50051 }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n\n\
             [[pools]]\nname = \"grpcs\"\ncheck = {{ kind = \"grpc\", port = 50051, tls = true, host = \"vantage.test\", ca_file = \"{ca_file}\" }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n\n\
             [[pools]]\nname = \"misnamed\"\ncheck = {{ kind = \"grpc\", port = 50051, tls = true, host = \"other.test\", ca_file = \"{ca_file}\" }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n\n\
             [[pools]]\nname = \"dns\"\ncheck = {{ kind = \"dns\", port = 5353, name = \"www.example.test\", expect_address = \"192.0.2.1\" }}\n\
             [[pools.endpoints]]\naddress = \"{}\"\n",
            ip(201),
            ip(211),
            ip(212),
            ip(221),
            ip(222),
            ip(222),
            ip(231)
        )
    });
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], LONG);
    let (slow, fresh, expiring) = (
        format!("slow/{}", ip(201)),
        format!("cert/{}", ip(211)),
        format!("cert/{}", ip(212)),
    );
    let (grpc, dns) = (format!("grpc/{}", ip(221)), format!("dns/{}", ip(231)));
    let grpcs = format!("grpcs/{}", ip(222));
    let misnamed = format!("misnamed/{}", ip(222));
    let until = |id: &str, want: &str| {
        wait_for(&format!("{id} decided {want}"), LONG, || {
            decision(&c, id).filter(|(d, _)| d == want)
        })
        .unwrap_or_else(|| {
            panic!(
                "{id}: {:?} / local {:?}\n{}",
                decision(&c, id),
                local(&c, 1, id),
                c.logs()
            )
        })
    };
    for id in [&slow, &fresh, &grpc, &grpcs, &dns] {
        until(id, "up");
    }
    // A gRPC server whose certificate does not carry the name asked for: down, and why.
    until(&misnamed, "down");
    let why = local(&c, 2, &misnamed).unwrap();
    assert!(why["last_error"].as_str().unwrap().contains("certificate"), "{why}");
    // A certificate inside cert_expiry_fail: down from the start, and every agent says why.
    until(&expiring, "down");
    let why = local(&c, 2, &expiring).unwrap();
    assert!(
        why["last_error"].as_str().unwrap().contains("within cert_expiry_fail"),
        "{why}"
    );
    // One valid for 30 days passes, with a warning (cert_expiry_warn is 60 days).
    let warned = local(&c, 3, &fresh).unwrap();
    assert!(
        warned["warning"].as_str().unwrap().contains("within cert_expiry_warn"),
        "{warned}"
    );
    // The agents' heartbeats carry it into the log: one history event, which
    // the notifiers take as a trigger (`on = ["warning"]`, on by default).
    let event = wait_for("the warning in the replicated history", LONG, || {
        let h = c.cli_json(&["history", "--addr", c.addr(1), "--limit", "1000"]);
        h["events"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "warning" && e["endpoint"] == fresh.as_str() && e["to"] == "warning")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no warning event\n{}", c.logs()));
    assert!(event["rule"].as_str().unwrap().contains("cert_expiry_warn"), "{event}");

    delay.store(300, Ordering::SeqCst);
    until(&slow, "down");
    let why = local(&c, 1, &slow).unwrap();
    assert!(
        why["last_error"].as_str().unwrap().contains("slower than max_rtt"),
        "{why}"
    );
    delay.store(0, Ordering::SeqCst);
    until(&slow, "up");

    serving.store(false, Ordering::SeqCst);
    until(&grpc, "down");
    let why = local(&c, 1, &grpc).unwrap();
    assert!(why["last_error"].as_str().unwrap().contains("NOT_SERVING"), "{why}");
    until(&grpcs, "down");
    let why = local(&c, 1, &grpcs).unwrap();
    assert!(why["last_error"].as_str().unwrap().contains("NOT_SERVING"), "{why}");

    servfail.store(true, Ordering::SeqCst);
    until(&dns, "down");
    let why = local(&c, 1, &dns).unwrap();
    assert!(why["last_error"].as_str().unwrap().contains("SERVFAIL"), "{why}");
    // The others are unmoved.
    assert_eq!(decision(&c, &fresh).unwrap().0, "up");
}
