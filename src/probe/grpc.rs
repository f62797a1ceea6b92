//! gRPC health checks: `grpc.health.v1.Health/Check` on a fresh HTTP/2
//! connection per probe, plaintext or TLS (ALPN h2, the certificate verified
//! against the system's roots or a `ca_file`, for `host` or the address);
//! SERVING passes, anything else fails with the status named.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::Endpoint;

use crate::config::GrpcTls;
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_client::HealthClient;
use crate::proto::health::HealthCheckRequest;

pub struct GrpcProbe {
    addr: SocketAddr,
    endpoint: Endpoint,
    service: String,
    /// The TLS client and the name verified; None: plaintext.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// The certificates of a PEM file, as trust anchors.
pub fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(roots)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found: verified gRPC TLS checks will fail unless they name a ca_file"
        );
    }
    roots
}

fn client_config(t: &GrpcTls) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if t.verify {
        let roots = match &t.ca_file {
            Some(f) => read_roots(f)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl GrpcProbe {
    pub fn new(addr: SocketAddr, service: &str, tls: Option<&GrpcTls>) -> Result<GrpcProbe, String> {
        // The connector below speaks TLS itself; tonic refuses an https URI
        // without its own TLS, so the URI says http either way.
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("grpc {addr}: {e}"))?;
        let tls = match tls {
            Some(t) => {
                let name = match &t.host {
                    Some(h) => ServerName::try_from(h.clone()).map_err(|e| format!("grpc host {h:?}: {e}"))?,
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                Some((Arc::new(client_config(t)?), name))
            }
            None => None,
        };
        Ok(GrpcProbe {
            addr,
            endpoint,
            service: service.to_string(),
            tls,
        })
    }

    pub async fn run(&self) -> Result<(), String> {
        let channel = match &self.tls {
            None => self.endpoint.connect().await,
            Some((config, name)) => {
                let (addr, config, name) = (self.addr, config.clone(), name.clone());
                self.endpoint
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let (config, name) = (config.clone(), name.clone());
                        async move {
                            let tcp = tokio::net::TcpStream::connect(addr).await?;
                            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                        }
                    }))
                    .await
            }
        }
        .map_err(|e| {
            let mut why = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                why = format!("{why}: {s}");
                src = s.source();
            }
            format!("grpc connect to {}: {why}", self.addr)
        })?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: self.service.clone(),
            })
            .await
            .map_err(|s| format!("grpc health check: {}: {}", s.code(), s.message()))?
            .into_inner();
        match ServingStatus::try_from(answer.status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(format!("grpc health of {:?}: {}", self.service, other.as_str_name())),
            Err(_) => Err(format!("grpc health: unknown status {}", answer.status)),
        }
    }
}

/// `tls_verify = false`: any certificate is taken, the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
